"""The audit trail: one JSON line per access to patient data or change, appended and fsynced
before the answer is sent, rotated by size into files named by their time and never deleted here.

A record says who (the client), what (the action, the job, files, study and SOP Instance UIDs,
patient ids as stored), when, from where (the address) and the outcome; never an image or a
result's figures. Several processes append to one file: each round of records is one ``write``
under an exclusive lock, which also guards the rotation. Within a process, ``submit`` commits as a
group: the records handed in while a round is being written and fsynced go in the next round,
together, so concurrent requests share an fsync and each still waits for its own record.
"""

from __future__ import annotations

import fcntl
import os
import stat
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from pneumoscan.errors import AuditUnavailable

CURRENT = "audit.jsonl"
ROTATED_GLOB = "audit-*.jsonl"
# Lists longer than this (a page of results) are cut, and the record says so.
MAX_LISTED = 1000

Outcome = Literal["success", "refused", "failed"]


class AuditRecord(BaseModel):
    """One access or change. ``outcome``: ``success`` (2xx, 3xx), ``refused`` (4xx: a missing key, a
    scope the client lacks, a rate limit, a bad request), ``failed`` (5xx)."""

    time: datetime = Field(description="When the answer was sent (UTC).")
    client: str | None = Field(description="The client's name; null when no known key was sent.")
    action: str = Field(description="What was done, e.g. `predict`, `job.results`, `review.write`.")
    scope: str | None = Field(default=None, description="The scope the operation needs.")
    method: str
    path: str = Field(description="The request's path, without its query.")
    status: int = Field(description="The HTTP status answered.")
    outcome: Outcome
    address: str | None = Field(default=None, description="The caller's address (the TCP peer).")
    request_id: str | None = None
    job: str | None = None
    files: list[str] = Field(default=[], description="Files of the job read or changed, relative to its folder.")
    studies: list[str] = Field(default=[], description="Study Instance UIDs.")
    instances: list[str] = Field(default=[], description="SOP Instance UIDs.")
    patients: list[str] = Field(default=[], description="Patient ids, as the images carry them.")
    messages: list[str] = Field(default=[], description="Outbox message ids retried or dropped.")
    whole_job: bool = Field(
        default=False, description="The answer held every result or review of the job (an export, a plot, a CSV)."
    )
    truncated: bool = Field(default=False, description=f"A list above was cut at {MAX_LISTED} entries.")


def outcome_of(status: int) -> Outcome:
    return "success" if status < 400 else "refused" if status < 500 else "failed"


def listed(values: Iterable[str | None]) -> tuple[list[str], bool]:
    """Distinct non-empty values in order, at most ``MAX_LISTED``, and whether any were cut."""
    distinct = list(dict.fromkeys(value for value in values if value))
    return distinct[:MAX_LISTED], len(distinct) > MAX_LISTED


class AuditLog:
    """Appends records to ``folder/audit.jsonl``; ``write`` raises ``AuditUnavailable`` on failure,
    and ``submit``'s future holds it."""

    def __init__(self, folder: Path, max_bytes: int = 64 * 1024 * 1024, fsync: bool = True) -> None:
        self.folder = folder
        self.max_bytes = max_bytes
        self.fsync = fsync
        self.rounds = 0  # rounds written by ``submit``'s thread
        self._pending: list[tuple[AuditRecord, Future]] = []
        self._wakeup = threading.Condition()
        self._writer: threading.Thread | None = None

    @property
    def current(self) -> Path:
        return self.folder / CURRENT

    def check(self) -> None:
        """Raises ``AuditUnavailable`` unless a record could be appended now (asked before a request
        changes anything, so that a failing trail refuses the request instead of half-serving it)."""
        try:
            try:
                handle = os.open(self.current, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            except FileNotFoundError:
                self.folder.mkdir(parents=True, exist_ok=True)
                handle = os.open(self.current, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            os.close(handle)
        except OSError as exc:
            raise AuditUnavailable(f"The audit trail cannot be written ({exc.strerror or exc}).") from exc

    def write(self, record: AuditRecord) -> None:
        self.write_many([record])

    def write_many(self, records: Sequence[AuditRecord]) -> None:
        """Appends ``records`` in one write and one fsync, or none of them (``AuditUnavailable``)."""
        data = b"".join((record.model_dump_json(exclude_defaults=False) + "\n").encode() for record in records)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            with open(self.folder / ".audit.lock", "w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                self._rotate_if_full(len(data))
                handle = os.open(self.current, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                try:
                    if os.write(handle, data) != len(data):
                        raise OSError("short write")
                    if self.fsync:
                        os.fsync(handle)
                finally:
                    os.close(handle)
        except OSError as exc:
            raise AuditUnavailable(f"The audit record could not be written ({exc.strerror or exc}).") from exc

    @property
    def queued(self) -> int:
        """Records submitted that no round has taken yet."""
        with self._wakeup:
            return len(self._pending)

    def submit(self, record: AuditRecord) -> Future:
        """``record`` to be written in this process's next round; the future is done once it is on
        disk, or holds the ``AuditUnavailable`` that kept its round off."""
        future: Future = Future()
        with self._wakeup:
            self._pending.append((record, future))
            if self._writer is None or not self._writer.is_alive():
                self._writer = threading.Thread(target=self._write_rounds, name="audit-writer", daemon=True)
                self._writer.start()
            self._wakeup.notify()
        return future

    def _write_rounds(self) -> None:
        while True:
            with self._wakeup:
                while not self._pending:
                    self._wakeup.wait()
                round_, self._pending = self._pending, []
            # A request that went away before its round still has its record written (its
            # answer may have started); only the waiting ones hear the outcome.
            waiting = [future for _, future in round_ if future.set_running_or_notify_cancel()]
            try:
                self.write_many([record for record, _ in round_])
            except Exception as exc:  # noqa: BLE001 - every request of the round must hear why, whatever it is
                failure = exc
                if not isinstance(exc, AuditUnavailable):
                    failure = AuditUnavailable(f"The audit trail failed ({exc}).")
                for future in waiting:
                    future.set_exception(failure)
            else:
                for future in waiting:
                    future.set_result(None)
            self.rounds += 1

    def _rotate_if_full(self, adding: int) -> None:
        try:
            info = self.current.stat()
        except FileNotFoundError:
            return
        if stat.S_ISREG(info.st_mode) and info.st_size and info.st_size + adding > self.max_bytes:
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
            os.rename(self.current, self.folder / f"audit-{stamp}.jsonl")
            folder = os.open(self.folder, os.O_RDONLY)
            try:
                os.fsync(folder)
            finally:
                os.close(folder)


def audit_files(folder: Path) -> list[Path]:
    """The trail's files, oldest first: the rotated ones by their time, then the current one."""
    files = sorted(folder.glob(ROTATED_GLOB))
    if (folder / CURRENT).is_file():
        files.append(folder / CURRENT)
    return files


def read_records(folder: Path) -> Iterator[AuditRecord]:
    """Every record, oldest first; a line cut short by a crash is skipped."""
    for path in audit_files(folder):
        with path.open("rb") as handle:
            for line in handle:
                if line.endswith(b"\n"):
                    yield AuditRecord.model_validate_json(line)


def select(
    records: Iterable[AuditRecord],
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    client: str | None = None,
    patient: str | None = None,
    job: str | None = None,
    patient_files: Mapping[str, set[str]] | None = None,
) -> Iterator[AuditRecord]:
    """The records that answer "who saw this". A patient's are those that list the patient, and
    those that read the patient's files of a job or the whole of a job holding them:
    ``patient_files`` maps job ids to the patient's files in them (the caller reads the jobs)."""
    held = patient_files or {}
    for record in records:
        if (since and record.time < since) or (until and record.time >= until):
            continue
        if (client and record.client != client) or (job and record.job != job):
            continue
        if patient and patient not in record.patients:
            files = held.get(record.job or "")
            if files is None or not (record.whole_job or files.intersection(record.files)):
                continue
        yield record
