"""The job folder: the durable record of a batch job; the queue only carries work.

A job folder holds ``job.json``, a sorted ``manifest`` of input files, and one result file per
shard under ``shards/``, written to a temporary name, fsynced and renamed: a shard is done exactly
when its file exists. A shard's CSV carries its own header, so a job whose shards were scored by
different releases (a column added in between) is still joined column by column. ``leases/``
records which shards are queued or running and until when (``pneumoscan.jobs.leases``). When
every shard is done, ``results.csv``, ``summary.json`` and ``summary.png`` are written
(``pneumoscan.jobs.results``; exported by ``pneumoscan.jobs.export``). Jobs submitted outside the
default root are listed in its ``index`` file, so they can be found by id.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

from pneumoscan.errors import FolderNotAllowed, FolderNotFound, JobNotFound
from pneumoscan.files import atomic_write
from pneumoscan.imaging.preprocess import IMAGE_SUFFIXES
from pneumoscan.result import PATIENT_COLUMNS, RESULT_COLUMNS, Result
from pneumoscan.schemas import JobSpec

JOB_FILE, MANIFEST_FILE, RESULTS_FILE, SUMMARY_FILE = "job.json", "manifest", "results.csv", "summary.json"
PLOT_FILE = "summary.png"
SHARDS_DIR, LEASES_DIR = "shards", "leases"
INDEX_FILE = "index"

Enqueue = Callable[[Path, int], None]


class Lease(BaseModel):
    state: Literal["queued", "running"]
    expires: float
    attempts: int = 0
    worker: str | None = None
    current: list[str] = []
    crashes: dict[str, int] = {}

    def after_death(self) -> Lease:
        """The lease of a running attempt that died: its in-flight files each count a crash."""
        crashes = dict(self.crashes)
        if self.state == "running":
            for name in self.current:
                crashes[name] = crashes.get(name, 0) + 1
        return self.model_copy(update={"current": [], "crashes": crashes})


class ShardMeta(BaseModel):
    """``shards/NNNNN.json``: who scored a shard, when, and how its files came out."""

    worker: str
    started: float
    finished: float
    files: int
    failed: int  # refused + unreadable, still written for readers of a release that knew only this count
    refused: int | None = None  # None in a shard of such a release: count its rows instead
    unreadable: int | None = None

    @classmethod
    def of(cls, *, worker: str, started: float, finished: float, results: list[Result]) -> ShardMeta:
        refused, unreadable = sum(r.refused for r in results), sum(r.unreadable for r in results)
        return cls(
            worker=worker,
            started=started,
            finished=finished,
            files=len(results),
            failed=refused + unreadable,
            refused=refused,
            unreadable=unreadable,
        )


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


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


def job_id_for(
    folder: Path, files: list[str], model_version: str, shard_size: int, dicom_outbox: Path | None = None
) -> str:
    """Same folder, same files (names, sizes, times), same model, same outputs: same job."""
    outputs = f"dicom:{dicom_outbox}\n" if dicom_outbox is not None else ""
    digest = hashlib.sha256(f"{folder}\n{model_version}\n{shard_size}\n{outputs}".encode())
    for name in files:
        try:
            stat = (folder / name).stat()
            digest.update(f"{name}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
        except OSError:
            digest.update(f"{name}\t-\n".encode())
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class JobSource:
    """Files that come from elsewhere than the input folder: the query that lists them, as JSON."""

    query: dict
    files: list[str]


def create_job(
    folder: Path,
    output_root: Path,
    model_version: str,
    shard_size: int,
    dicom_outbox: Path | None = None,
    source: JobSource | None = None,
) -> Path:
    """The job folder for this input, created if new; an unchanged folder maps to the same job.
    With ``dicom_outbox``, results are also written there as DICOM (``pneumoscan.jobs.dicom_outputs``).
    With ``source``, the files are the ones it lists (fetched into ``folder`` as they are scored),
    and the same query finding the same files is the same job."""
    if source is None:
        files = list_inputs(folder)
        job_id = job_id_for(folder, files, model_version, shard_size, dicom_outbox)
    else:
        files = source.files
        query = json.dumps(source.query, sort_keys=True)
        identity = f"{folder}\n{model_version}\n{shard_size}\n{dicom_outbox}\n{query}\n" + "\n".join(files)
        job_id = hashlib.sha256(identity.encode()).hexdigest()[:16]
    job_dir = output_root / job_id
    if (job_dir / JOB_FILE).is_file():
        return job_dir
    (job_dir / SHARDS_DIR).mkdir(parents=True, exist_ok=True)
    (job_dir / LEASES_DIR).mkdir(exist_ok=True)
    atomic_write(job_dir / MANIFEST_FILE, "".join(f"{name}\n" for name in files).encode())
    spec = JobSpec(
        job_id=job_id,
        input_folder=str(folder),
        model_version=model_version,
        shard_size=shard_size,
        total=len(files),
        shards=max(1, -(-len(files) // shard_size)),
        created=datetime.now(UTC),
        dicom_outbox=str(dicom_outbox) if dicom_outbox is not None else None,
        source=source.query if source is not None else None,
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


def csv_bytes(rows: list[dict[str, str]], header: bool) -> bytes:
    """``results.csv`` rows (``Result.to_row``) as CSV, with the header line or without."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=RESULT_COLUMNS, lineterminator="\n")
    if header:
        writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue().encode()


# Shards written before shards carried a header: their columns, known by the number of fields.
_HEADERLESS_COLUMNS = {
    len(RESULT_COLUMNS): RESULT_COLUMNS,
    len(RESULT_COLUMNS) - len(PATIENT_COLUMNS): RESULT_COLUMNS[: -len(PATIENT_COLUMNS)],  # before patient context
}


def read_shard_results(path: Path) -> list[Result]:
    """A shard's results, its columns read by the shard's own header, or, for a shard of an older
    release without one, by its number of fields. Columns it lacks are empty, columns no longer
    written are dropped."""
    with path.open(newline="") as handle:
        records = list(csv.reader(handle))
    columns = None
    # A header: no data row has "sha256" for a hash and "status" for a status.
    if records and {"path", "sha256", "status"} <= set(records[0]):
        columns, records = records[0], records[1:]
    results = []
    for record in records:
        names = columns or _HEADERLESS_COLUMNS.get(len(record), RESULT_COLUMNS)
        row = dict(zip(names, record, strict=False))
        results.append(Result.from_row({column: row.get(column, "") for column in RESULT_COLUMNS}))
    return results


# --- finding jobs ---------------------------------------------------------------------------------


def known_job_dirs(jobs_root: Path) -> list[Path]:
    """Job folders under ``jobs_root``, plus those submitted with another output root."""
    found = {path for path in jobs_root.glob("*") if (path / JOB_FILE).is_file()} if jobs_root.is_dir() else set()
    index = jobs_root / INDEX_FILE
    if index.is_file():
        found |= {Path(line) for line in index.read_text().splitlines() if line}
    return sorted(found)


def register_job(jobs_root: Path, job_dir: Path) -> None:
    """List a job created outside ``jobs_root`` in its index, once."""
    if job_dir.parent.resolve() == jobs_root.resolve() or job_dir in known_job_dirs(jobs_root):
        return
    jobs_root.mkdir(parents=True, exist_ok=True)
    with (jobs_root / INDEX_FILE).open("a") as index:
        index.write(f"{job_dir}\n")


def find_job(jobs_root: Path, job: str) -> Path:
    """A job folder from its id (under ``jobs_root`` or in its index) or its path."""
    candidate = Path(job)
    if candidate.is_dir():
        return candidate.resolve()
    if (jobs_root / job).is_dir():
        return jobs_root / job
    for job_dir in known_job_dirs(jobs_root):
        if job_dir.name == job:
            return job_dir
    raise JobNotFound(f"No job {job!r} under {jobs_root}.")
