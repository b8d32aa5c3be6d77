"""The job folder's lease / reconcile / finalize state machine, in process, without a queue or a model.

Shards are "scored" here by writing their result files the way ``score_shard`` does, so each rule
of ``reconcile`` is checked in milliseconds instead of by a worker subprocess and sleeps.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from pneumoscan.errors import EmptyImage, JobNotFinished, JobNotFound, NotAChestXray, UnreadableFile, WorkerCrashed
from pneumoscan.files import atomic_write
from pneumoscan.jobs.folder import (
    RESULTS_FILE,
    SUMMARY_FILE,
    Lease,
    ShardMeta,
    create_job,
    csv_bytes,
    find_job,
    known_job_dirs,
    lease_path,
    load_job,
    read_lease,
    register_job,
    shard_files,
    shard_path,
    write_lease,
)
from pneumoscan.jobs.leases import reconcile
from pneumoscan.jobs.results import finished_results, job_status, list_jobs, read_results
from pneumoscan.result import Result
from pneumoscan.schemas import JobStatus, Prediction

LEASE_SECONDS = 60.0


@pytest.fixture()
def job_dir(tmp_path) -> Path:
    """A job of 5 files in shards of 2 (3 shards); the files need not be images here."""
    folder = tmp_path / "input"
    folder.mkdir()
    for name in ("a.png", "b.png", "c.jpeg", "d.dcm", "e.jpg"):
        (folder / name).write_bytes(b"x")
    (folder / "notes.txt").write_text("not an input")
    return create_job(folder, tmp_path / "jobs", "model-1", shard_size=2)


class Queue:
    def __init__(self) -> None:
        self.calls: list[int] = []

    def __call__(self, job_dir: Path, index: int) -> None:
        self.calls.append(index)


def finish_shard(job_dir: Path, index: int) -> None:
    """What ``score_shard`` leaves behind: the meta, the rows, no lease."""
    spec = load_job(job_dir)
    rows = [
        {
            "path": name,
            "sha256": "0" * 64,
            "label": "NORMAL",
            "probability": "0.1",
            "threshold": "0.5",
            "out_of_distribution": "false",
            "ood_score": "0.5",
            "model_version": spec.model_version,
            "status": "ok",
            "error_code": "",
            "error_detail": "",
        }
        for name in shard_files(job_dir, spec, index)
    ]
    now = time.time()
    meta = ShardMeta(worker="test", started=now - 1, finished=now, files=len(rows), failed=0)
    atomic_write(shard_path(job_dir, index, "json"), meta.model_dump_json().encode())
    atomic_write(shard_path(job_dir, index, "csv"), csv_bytes(rows, header=False))
    lease_path(job_dir, index).unlink(missing_ok=True)


def test_a_new_job_queues_every_shard_once(job_dir):
    spec = load_job(job_dir)
    assert (spec.total, spec.shards) == (5, 3)
    assert shard_files(job_dir, spec, 2) == ["e.jpg"]
    queue = Queue()
    assert reconcile(job_dir, queue, LEASE_SECONDS) == 3 and queue.calls == [0, 1, 2]
    assert all(read_lease(job_dir, index).state == "queued" for index in range(3))
    # Queued and not expired: nothing to do, whether the queue is busy or idle.
    assert reconcile(job_dir, queue, LEASE_SECONDS, queue_idle=True) == 0
    assert reconcile(job_dir, queue, LEASE_SECONDS, queue_idle=False) == 0
    assert job_status(job_dir).state == "queued"


def test_a_queue_that_cannot_be_reached_leaves_no_shard_marked_queued(job_dir):
    class Down(Queue):
        def __call__(self, job_dir: Path, index: int) -> None:
            if index == 1:
                raise ConnectionError("the queue is down")
            super().__call__(job_dir, index)

    with pytest.raises(ConnectionError):
        reconcile(job_dir, Down(), LEASE_SECONDS)
    assert read_lease(job_dir, 0).state == "queued" and read_lease(job_dir, 1) is None
    queue = Queue()
    assert reconcile(job_dir, queue, LEASE_SECONDS, queue_idle=False) == 2 and queue.calls == [1, 2], (
        "the next try queues what did not reach the queue, at once"
    )


def test_a_lost_message_is_requeued_only_when_the_queue_is_idle_or_forced(job_dir):
    queue = Queue()
    reconcile(job_dir, queue, LEASE_SECONDS)
    write_lease(job_dir, 1, Lease(state="queued", expires=time.time() - 1))
    assert reconcile(job_dir, queue, LEASE_SECONDS, queue_idle=False) == 0, "it may still be in the queue"
    assert reconcile(job_dir, queue, LEASE_SECONDS, queue_idle=True) == 1
    assert queue.calls[-1] == 1
    assert reconcile(job_dir, queue, LEASE_SECONDS, force=True) == 3, "resume re-queues every unfinished shard"


def test_a_dead_worker_costs_its_shard_and_counts_a_crash_per_file_in_flight(job_dir):
    queue = Queue()
    reconcile(job_dir, queue, LEASE_SECONDS)
    running = Lease(state="running", expires=time.time() + LEASE_SECONDS, attempts=1, worker="w", current=["a.png"])
    write_lease(job_dir, 0, running)
    assert reconcile(job_dir, queue, LEASE_SECONDS, queue_idle=True) == 0, "a live heartbeat is left alone"
    assert job_status(job_dir).state == "running"
    write_lease(job_dir, 0, running.model_copy(update={"expires": time.time() - 1}))
    assert reconcile(job_dir, queue, LEASE_SECONDS, queue_idle=False) == 1
    lease = read_lease(job_dir, 0)
    assert lease.state == "queued" and lease.crashes == {"a.png": 1} and lease.current == []


def test_finalize_waits_for_the_last_shard_then_writes_once(job_dir):
    queue = Queue()
    reconcile(job_dir, queue, LEASE_SECONDS)
    finish_shard(job_dir, 0)
    finish_shard(job_dir, 2)
    status = job_status(job_dir)
    assert (status.state, status.done, status.total) == ("running", 3, 5)
    assert reconcile(job_dir, queue, LEASE_SECONDS) == 0 and not (job_dir / RESULTS_FILE).exists()
    with pytest.raises(JobNotFinished):
        finished_results(job_dir)
    finish_shard(job_dir, 1)
    assert reconcile(job_dir, queue, LEASE_SECONDS) == 0
    results = finished_results(job_dir)
    lines = results.read_text().splitlines()
    assert lines[0].startswith("path,sha256,label") and [line.split(",")[0] for line in lines[1:]] == [
        "a.png",
        "b.png",
        "c.jpeg",
        "d.dcm",
        "e.jpg",
    ]
    assert (job_dir / SUMMARY_FILE).is_file()
    first = results.read_bytes()
    assert reconcile(job_dir, queue, LEASE_SECONDS) == 0 and results.read_bytes() == first
    assert job_status(job_dir).state == "done" and job_status(job_dir).eta_seconds == 0.0


def test_finalize_joins_shards_written_by_different_releases(job_dir):
    """A job scored across an upgrade that added columns: an old headerless shard without the
    patient columns, an old headerless shard with them, and a shard with its own header."""
    import csv
    import io

    from pneumoscan.result import PATIENT_COLUMNS, RESULT_COLUMNS

    def row(name: str, **extra: str) -> dict[str, str]:
        return {
            "path": name,
            "sha256": "0" * 64,
            "label": "NORMAL",
            "probability": "0.1",
            "threshold": "0.5",
            "out_of_distribution": "false",
            "ood_score": "0.5",
            "model_version": "model-1",
            "status": "ok",
            "error_code": "",
            "error_detail": "",
            **extra,
        }

    def write(index: int, rows: list[dict], columns: list[str], header: bool) -> None:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns, restval="", lineterminator="\n")
        if header:
            writer.writeheader()
        writer.writerows(rows)
        now = time.time()
        meta = ShardMeta(worker="test", started=now - 1, finished=now, files=len(rows), failed=0)
        atomic_write(shard_path(job_dir, index, "json"), meta.model_dump_json().encode())
        atomic_write(shard_path(job_dir, index, "csv"), buffer.getvalue().encode())

    before_patients = RESULT_COLUMNS[: -len(PATIENT_COLUMNS)]
    write(0, [row("a.png", sop_instance_uid="1.2.3"), row("b.png")], before_patients, header=False)
    write(1, [row("c.jpeg"), row("d.dcm", sop_instance_uid="1.2.4", patient_id="P-4")], RESULT_COLUMNS, header=False)
    # A later release may order or drop columns differently: its header says which is which.
    write(2, [row("e.jpg", accession_number="ACC-5", gone="x")], ["gone", *reversed(RESULT_COLUMNS)], header=True)
    reconcile(job_dir, Queue(), LEASE_SECONDS)
    with finished_results(job_dir).open(newline="") as handle:
        reader = csv.DictReader(handle)
        rows = list(reader)
    assert reader.fieldnames == RESULT_COLUMNS
    assert [r["path"] for r in rows] == ["a.png", "b.png", "c.jpeg", "d.dcm", "e.jpg"]
    assert all(r["label"] == "NORMAL" and r["status"] == "ok" for r in rows)
    assert rows[0]["sop_instance_uid"] == "1.2.3" and rows[0]["patient_id"] == ""
    assert rows[3]["patient_id"] == "P-4" and rows[4]["accession_number"] == "ACC-5"
    assert job_status(job_dir).state == "done"


def test_jobs_are_found_by_id_path_or_index(job_dir, tmp_path):
    root = tmp_path / "default-root"
    with pytest.raises(JobNotFound):
        find_job(root, job_dir.name)
    register_job(root, job_dir)
    register_job(root, job_dir)
    assert known_job_dirs(root) == [job_dir]
    assert find_job(root, job_dir.name) == job_dir
    assert find_job(root, str(job_dir)) == job_dir.resolve()
    assert [status.job_id for status in list_jobs(root)] == [job_dir.name]


def test_an_unchanged_folder_maps_to_the_same_job(job_dir, tmp_path):
    again = create_job(tmp_path / "input", tmp_path / "jobs", "model-1", shard_size=2)
    assert again == job_dir
    other_model = create_job(tmp_path / "input", tmp_path / "jobs", "model-2", shard_size=2)
    assert other_model != job_dir


def test_a_vanished_job_is_failed_not_an_exception(job_dir):
    for path in sorted(job_dir.rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    job_dir.rmdir()
    status = job_status(job_dir)
    assert status.state == "failed" and "missing" in status.detail


def test_status_counts_refused_files_apart_from_unreadable_ones(job_dir):
    spec = load_job(job_dir)
    prediction = Prediction(label="NORMAL", probability=0.1, threshold=0.5, model_version=spec.model_version)
    outcomes = {
        "a.png": NotAChestXray("A photo."),
        "b.png": UnreadableFile("It vanished."),
        "c.jpeg": WorkerCrashed("It killed 2 workers."),
        "d.dcm": EmptyImage("Zero bytes."),
        "e.jpg": prediction,
    }
    for index in range(spec.shards):
        results = [Result.of(outcomes[file], file=file) for file in shard_files(job_dir, spec, index)]
        now = time.time()
        meta = ShardMeta.of(worker="test", started=now - 1, finished=now, results=results)
        if index == 1:  # a shard of a release that counted both as "failed": counted from its rows
            meta = meta.model_copy(update={"refused": None, "unreadable": None})
        rows = [result.to_row(spec.model_version) for result in results]
        atomic_write(shard_path(job_dir, index, "json"), meta.model_dump_json().encode())
        atomic_write(shard_path(job_dir, index, "csv"), csv_bytes(rows, header=True))
    status = job_status(job_dir)
    assert (status.state, status.done, status.refused, status.unreadable) == ("running", 5, 2, 2)
    reconcile(job_dir, Queue(), LEASE_SECONDS)
    answer = json.loads(job_status(job_dir).model_dump_json())
    assert (answer["state"], answer["refused"], answer["unreadable"]) == ("done", 2, 2)
    assert answer["failed"] == 4, "the old name counts both, for clients of the last release"
    assert JobStatus.model_validate(answer).failed == 4
    summary = json.loads((job_dir / SUMMARY_FILE).read_text())
    assert (summary["refused"], summary["unreadable"], summary["failed"], summary["ok"]) == (2, 2, 4, 1)
    back = {result.file: result for result in read_results(job_dir)}
    assert {file: type(result.error) for file, result in back.items() if not result.ok} == {
        file: type(outcome) for file, outcome in outcomes.items() if file != "e.jpg"
    }
    assert back["e.jpg"].prediction == prediction
