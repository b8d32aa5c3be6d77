"""The audit trail's group commit: records handed in while a round is written go in the next round
together, each caller hears when its own record is on disk, and a failing trail fails every
record of its round without stopping the rounds after it."""

from __future__ import annotations

import fcntl
import time
from concurrent.futures import wait
from datetime import UTC, datetime

import pytest

from pneumoscan.access.audit import AuditLog, AuditRecord, read_records
from pneumoscan.errors import AuditUnavailable


def record(n: int) -> AuditRecord:
    return AuditRecord(
        time=datetime.now(UTC),
        client="reader",
        action="predict",
        method="POST",
        path="/predict",
        status=200,
        outcome="success",
        request_id=f"request-{n}",
    )


def test_records_submitted_while_a_round_waits_are_written_together_in_order(tmp_path):
    log = AuditLog(tmp_path / "audit")
    log.check()
    with open(tmp_path / "audit" / ".audit.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process holds the trail: the first round waits
        futures = [log.submit(record(n)) for n in range(40)]
        done, _ = wait(futures, timeout=0.5)
        assert not done, "no record is reported written before it is"
    done, pending = wait(futures, timeout=30)
    assert not pending and all(future.exception() is None for future in done)
    assert [each.request_id for each in read_records(tmp_path / "audit")] == [f"request-{n}" for n in range(40)]
    assert 1 <= log.rounds <= 2  # one fsync for the records that waited, not forty


def test_a_round_that_cannot_be_written_fails_each_of_its_records_and_the_next_round_writes(tmp_path):
    folder = tmp_path / "audit"
    folder.write_text("a file where the trail's folder should be")
    log = AuditLog(folder)
    with pytest.raises(AuditUnavailable):
        log.check()
    failed = [log.submit(record(n)) for n in range(3)]
    wait(failed, timeout=30)
    assert all(isinstance(future.exception(), AuditUnavailable) for future in failed)

    folder.unlink()
    written = log.submit(record(3))
    assert written.result(timeout=30) is None
    assert [each.request_id for each in read_records(folder)] == ["request-3"]


def test_a_record_whose_request_went_away_is_still_written_and_the_rounds_go_on(tmp_path):
    log = AuditLog(tmp_path / "audit")
    log.check()
    with open(tmp_path / "audit" / ".audit.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        first = log.submit(record(0))
        deadline = time.monotonic() + 30
        while log.queued and time.monotonic() < deadline:  # until the first round waits for the trail
            time.sleep(0.01)
        gone, kept = log.submit(record(1)), log.submit(record(2))
        assert gone.cancel()  # its request timed out while the trail was held
    assert first.result(timeout=30) is None and kept.result(timeout=30) is None
    assert log.submit(record(3)).result(timeout=30) is None
    assert [each.request_id for each in read_records(tmp_path / "audit")] == [f"request-{n}" for n in range(4)]
