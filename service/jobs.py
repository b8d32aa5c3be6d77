"""Batch jobs as files: the job folder is the durable record, the queue only carries work.

A job folder holds ``job.json``, a sorted ``manifest`` of input files, and one result file per
shard under ``shards/``, written to a temporary name, fsynced and renamed: a shard is done exactly
when its file exists. ``leases/`` records which shards are queued or running and until when;
``reconcile`` re-queues every unfinished shard whose lease has expired, so a worker killed
mid-shard costs that shard's time, never results. When every shard is done, ``results.csv`` and
``summary.json`` are written. Huey (at-most-once) is only told which shard to score;
``service.shards`` scores it.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import os
import socket
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

from pneumoscan.errors import PneumoscanError
from pneumoscan.imaging import IMAGE_SUFFIXES

JOB_FILE, MANIFEST_FILE, RESULTS_FILE, SUMMARY_FILE = "job.json", "manifest", "results.csv", "summary.json"
PLOT_FILE = "summary.png"
SHARDS_DIR, LEASES_DIR = "shards", "leases"
RESULT_COLUMNS = [
    "path", "sha256", "label", "probability", "threshold", "out_of_distribution", "ood_score", "model_version",
    "status", "error_code", "error_detail",
    "study_instance_uid", "series_instance_uid", "sop_instance_uid", "sop_class_uid", "modality",
]
DICOM_COLUMNS = ["study_instance_uid", "series_instance_uid", "sop_instance_uid", "sop_class_uid", "modality"]

log = logging.getLogger("pneumoscan.jobs")

Enqueue = Callable[[Path, int], None]
JobState = Literal["queued", "running", "done", "failed"]


class JobError(PneumoscanError):
    code = "job_error"


class FolderNotAllowed(JobError):
    code = "folder_not_allowed"


class FolderNotFound(JobError):
    code = "folder_not_found"


class JobNotFound(JobError):
    code = "job_not_found"


class JobNotFinished(JobError):
    code = "job_not_finished"


class ResultNotFound(JobError):
    code = "result_not_found"


class WorkerCrashed(JobError):
    code = "worker_crashed"


class JobSpec(BaseModel):
    job_id: str
    input_folder: str
    model_version: str
    shard_size: int
    total: int
    shards: int
    created: datetime


class Lease(BaseModel):
    state: Literal["queued", "running"]
    expires: float
    attempts: int = 0
    worker: str | None = None
    current: list[str] = []
    crashes: dict[str, int] = {}

    def after_death(self) -> "Lease":
        """The lease of a running attempt that died: its in-flight files each count a crash."""
        crashes = dict(self.crashes)
        if self.state == "running":
            for name in self.current:
                crashes[name] = crashes.get(name, 0) + 1
        return self.model_copy(update={"current": [], "crashes": crashes})


class ShardMeta(BaseModel):
    worker: str
    started: float
    finished: float
    files: int
    failed: int


class JobStatus(BaseModel):
    job_id: str
    state: JobState
    total: int = 0
    done: int = 0
    failed: int = 0
    images_per_second: float | None = None
    eta_seconds: float | None = None
    output: str | None = None
    input_folder: str | None = None
    created: datetime | None = None
    detail: str | None = None


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def atomic_write(path: Path, data: bytes) -> None:
    """Write to a temporary name, fsync, rename: readers see all of the file or none of it."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with temporary.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


# --- submitting ------------------------------------------------------------------------------


def check_input_folder(folder: str | Path, allowed_roots: list[Path] | None) -> Path:
    """The resolved folder (symlinks and '..' followed), if it exists and lies under a root."""
    try:
        resolved = Path(folder).expanduser().resolve(strict=True)
    except (OSError, RuntimeError, ValueError) as exc:  # ValueError: a NUL byte in the path
        raise FolderNotFound(f"{folder} does not exist or cannot be read.") from exc
    if not resolved.is_dir():
        raise FolderNotFound(f"{folder} is not a folder.")
    if allowed_roots is not None and not any(resolved.is_relative_to(root) for root in allowed_roots):
        raise FolderNotAllowed(f"{folder} is outside the allowed input roots (PNEUMOSCAN_INPUT_ROOTS).")
    return resolved


def list_inputs(folder: Path) -> list[str]:
    """Image files under ``folder``, recursively, as sorted POSIX paths relative to it."""
    return sorted(
        path.relative_to(folder).as_posix()
        for path in folder.rglob("*")
        if path.suffix.lower() in IMAGE_SUFFIXES and not path.is_dir()
    )


def job_id_for(folder: Path, files: list[str], model_version: str, shard_size: int) -> str:
    """Same folder, same files (names, sizes, times), same model: same job."""
    digest = hashlib.sha256(f"{folder}\n{model_version}\n{shard_size}\n".encode())
    for name in files:
        try:
            stat = (folder / name).stat()
            digest.update(f"{name}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
        except OSError:
            digest.update(f"{name}\t-\n".encode())
    return digest.hexdigest()[:16]


def create_job(folder: Path, output_root: Path, model_version: str, shard_size: int) -> Path:
    """The job folder for this input, created if new; an unchanged folder maps to the same job."""
    files = list_inputs(folder)
    job_id = job_id_for(folder, files, model_version, shard_size)
    job_dir = output_root / job_id
    if (job_dir / JOB_FILE).is_file():
        return job_dir
    (job_dir / SHARDS_DIR).mkdir(parents=True, exist_ok=True)
    (job_dir / LEASES_DIR).mkdir(exist_ok=True)
    atomic_write(job_dir / MANIFEST_FILE, "".join(f"{name}\n" for name in files).encode())
    spec = JobSpec(
        job_id=job_id, input_folder=str(folder), model_version=model_version, shard_size=shard_size,
        total=len(files), shards=max(1, -(-len(files) // shard_size)), created=datetime.now(timezone.utc),
    )
    atomic_write(job_dir / JOB_FILE, spec.model_dump_json(indent=2).encode())
    return job_dir


def load_job(job_dir: Path) -> JobSpec:
    try:
        return JobSpec.model_validate_json((job_dir / JOB_FILE).read_bytes())
    except FileNotFoundError as exc:
        raise JobNotFound(f"No job at {job_dir}.") from exc


def shard_files(job_dir: Path, spec: JobSpec, index: int) -> list[str]:
    names = (job_dir / MANIFEST_FILE).read_text().splitlines()
    return names[index * spec.shard_size : (index + 1) * spec.shard_size]


def shard_path(job_dir: Path, index: int, suffix: str) -> Path:
    return job_dir / SHARDS_DIR / f"{index:05d}.{suffix}"


def lease_path(job_dir: Path, index: int) -> Path:
    return job_dir / LEASES_DIR / f"{index:05d}.json"


def read_lease(job_dir: Path, index: int) -> Lease | None:
    try:
        return Lease.model_validate_json(lease_path(job_dir, index).read_bytes())
    except (FileNotFoundError, ValueError):
        return None


def write_lease(job_dir: Path, index: int, lease: Lease) -> None:
    atomic_write(lease_path(job_dir, index), lease.model_dump_json().encode())


def reconcile(
    job_dir: Path, enqueue: Enqueue, lease_seconds: float, *, force: bool = False, queue_idle: bool = True
) -> int:
    """Queue every unfinished shard that no live worker holds; returns how many were queued.

    A running shard is re-queued once its heartbeat lease expires. A queued shard is re-queued
    when its lease expired and the queue is idle (its message was lost with a worker), or at
    once with ``force``.
    """
    spec = load_job(job_dir)
    now = time.time()
    queued = 0
    for index in range(spec.shards):
        if shard_path(job_dir, index, "csv").exists():
            continue
        lease = read_lease(job_dir, index)
        if lease is not None:
            expired = lease.expires <= now
            if lease.state == "running" and not expired:
                continue
            if lease.state == "queued" and not force and not (expired and queue_idle):
                continue
        fresh = Lease(state="queued", expires=now + lease_seconds)
        if lease is not None:
            fresh = lease.after_death().model_copy(update={"state": "queued", "expires": now + lease_seconds})
        write_lease(job_dir, index, fresh)
        enqueue(job_dir, index)
        queued += 1
    finalize(job_dir)
    return queued


def csv_bytes(rows: list[dict], header: bool) -> bytes:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=RESULT_COLUMNS, lineterminator="\n")
    if header:
        writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue().encode()


# --- finishing and status -------------------------------------------------------------------------


def _shard_metas(job_dir: Path, spec: JobSpec) -> list[ShardMeta]:
    metas = []
    for index in range(spec.shards):
        if shard_path(job_dir, index, "csv").exists():
            metas.append(ShardMeta.model_validate_json(shard_path(job_dir, index, "json").read_bytes()))
    return metas


def finalize(job_dir: Path) -> bool:
    """Write summary.json, summary.png and results.csv once every shard is done; idempotent."""
    spec = load_job(job_dir)
    if (job_dir / RESULTS_FILE).exists():
        return True
    shard_csvs = [shard_path(job_dir, index, "csv") for index in range(spec.shards)]
    if not all(path.exists() for path in shard_csvs):
        return False
    body = b"".join(path.read_bytes() for path in shard_csvs)
    rows = list(csv.DictReader(io.StringIO(body.decode()), fieldnames=RESULT_COLUMNS))
    metas = _shard_metas(job_dir, spec)
    started = min((m.started for m in metas), default=time.time())
    finished = max((m.finished for m in metas), default=started)
    seconds = max(finished - started, 1e-9)
    labels: dict[str, int] = {}
    error_codes: dict[str, int] = {}
    for row in rows:
        if row["status"] == "ok":
            labels[row["label"]] = labels.get(row["label"], 0) + 1
        else:
            error_codes[row["error_code"]] = error_codes.get(row["error_code"], 0) + 1
    summary = {
        "job_id": spec.job_id, "input_folder": spec.input_folder, "model_version": spec.model_version,
        "total": len(rows), "ok": sum(labels.values()), "failed": sum(error_codes.values()),
        "labels": labels, "error_codes": error_codes,
        "started": datetime.fromtimestamp(started, timezone.utc).isoformat(),
        "finished": datetime.fromtimestamp(finished, timezone.utc).isoformat(),
        "seconds": round(seconds, 3), "images_per_second": round(len(rows) / seconds, 2),
    }
    atomic_write(job_dir / SUMMARY_FILE, (json.dumps(summary, indent=2) + "\n").encode())
    try:
        from service.job_plot import summary_png

        atomic_write(job_dir / PLOT_FILE, summary_png(rows, summary))
    except Exception:  # the plot is a convenience: it must never keep a job from finishing
        log.exception("Could not draw %s for job %s; its results are complete.", PLOT_FILE, spec.job_id)
    atomic_write(job_dir / RESULTS_FILE, csv_bytes([], header=True) + body)
    return True


def job_status(job_dir: Path) -> JobStatus:
    """Progress from the job's files; a vanished or unreadable folder is a failed job."""
    job_id = job_dir.name
    try:
        spec = load_job(job_dir)
        metas = _shard_metas(job_dir, spec)
        done = sum(m.files for m in metas)
        failed = sum(m.failed for m in metas)
        if (job_dir / RESULTS_FILE).exists():
            state: JobState = "done"
        elif metas or any(
            (lease := read_lease(job_dir, i)) is not None and lease.state == "running" for i in range(spec.shards)
        ):
            state = "running"
        else:
            state = "queued"
    except JobNotFound:
        return JobStatus(job_id=job_id, state="failed", output=str(job_dir),
                         detail=f"The job folder {job_dir} is missing or was removed.")
    except (OSError, ValueError) as exc:
        return JobStatus(job_id=job_id, state="failed", output=str(job_dir),
                         detail=f"The job folder {job_dir} cannot be read: {exc}")
    rate = eta = None
    if metas:
        elapsed = max(max(m.finished for m in metas) - min(m.started for m in metas), 1e-9)
        rate = round(done / elapsed, 2)
        eta = round((spec.total - done) / rate, 1) if rate and state != "done" else 0.0
    return JobStatus(job_id=spec.job_id, state=state, total=spec.total, done=done, failed=failed,
                     images_per_second=rate, eta_seconds=eta, output=str(job_dir),
                     input_folder=spec.input_folder, created=spec.created)
