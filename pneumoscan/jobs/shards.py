"""Scoring one shard of a batch job: a result row per file, a heartbeat on the shard's lease per
batch, and the crash bookkeeping that pins a file which keeps killing workers.

The shard's result file is written atomically before its lease is dropped, and the job is
finalized by whichever worker completes its last shard (``pneumoscan.jobs.results.finalize``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

from pneumoscan import DEFAULT_MAX_PIXELS
from pneumoscan.delivery.destinations import Delivery
from pneumoscan.dicom.query import fetch_job_files
from pneumoscan.errors import WorkerCrashed
from pneumoscan.files import atomic_write
from pneumoscan.jobs.folder import (
    Lease,
    ShardMeta,
    csv_bytes,
    lease_path,
    load_job,
    read_lease,
    shard_files,
    shard_path,
    worker_id,
    write_lease,
)
from pneumoscan.jobs.results import finalize
from pneumoscan.model.predictor import Predictor
from pneumoscan.model.scoring import score_paths_keeping_scans
from pneumoscan.result import Result
from pneumoscan.schemas import JobSpec
from pneumoscan.settings import Settings

log = logging.getLogger("pneumoscan.jobs")


@dataclass(frozen=True)
class ShardOptions:
    """How a worker scores shards; ``from_settings`` reads them from ``PNEUMOSCAN_*``."""

    batch_size: int = 32
    max_pixels: int = DEFAULT_MAX_PIXELS
    decode_threads: int = 2
    lease_seconds: float = 300.0
    max_attempts: int = 3
    delivery: Delivery = field(default_factory=Delivery)  # where results go (HL7, FHIR), each through its outbox
    # Called with each file's result and the scoring model's version (the worker's /metrics).
    observe: Callable[[Result, str], None] | None = None
    # Fetches the files of a job over a PACS's studies (its source, its input folder, the files).
    fetch: Callable[[dict, Path, list[str]], int] = fetch_job_files

    @classmethod
    def from_settings(cls, settings: Settings) -> ShardOptions:
        return cls(
            batch_size=settings.predict_batch_size,
            max_pixels=settings.max_image_pixels,
            decode_threads=settings.decode_threads,
            lease_seconds=settings.lease_seconds,
            max_attempts=settings.max_shard_attempts,
            delivery=Delivery.from_settings(settings),
            fetch=partial(fetch_job_files, settings=settings),
        )


def score_shard(
    job_dir: Path,
    index: int,
    predictor: Predictor,
    options: ShardOptions,
    progress: Callable[[int], None] | None = None,
) -> bool:
    """Score one shard and write its result file; False when this worker must not score it."""
    spec = load_job(job_dir)
    if spec.model_version != predictor.model_version:
        log.error(
            "Refusing shard %d of job %s: it was submitted for model %s, this worker has %s.",
            index,
            spec.job_id,
            spec.model_version,
            predictor.model_version,
        )
        return False
    if shard_path(job_dir, index, "csv").exists():
        finalize(job_dir)
        return True
    lease = _claim(job_dir, index, spec)
    if lease is None:
        return True
    started = time.time()
    results = _score_files(job_dir, index, spec, lease, predictor, options, progress)
    meta = ShardMeta.of(worker=worker_id(), started=started, finished=time.time(), results=results)
    # Queued before the shard counts as done, so a crash before that scores it again and loses no
    # message (each is queued once by its id); issued when the shard finished, as the export says.
    options.delivery.queue([result for result in results if result.ok], datetime.fromtimestamp(meta.finished, UTC))
    rows = [result.to_row(predictor.model_version) for result in results]
    atomic_write(shard_path(job_dir, index, "json"), meta.model_dump_json().encode())
    atomic_write(shard_path(job_dir, index, "csv"), csv_bytes(rows, header=True))
    lease_path(job_dir, index).unlink(missing_ok=True)
    finalize(job_dir)
    deliver_outboxes(options)
    return True


def _claim(job_dir: Path, index: int, spec: JobSpec) -> Lease | None:
    """This worker's running lease on the shard (written by the first heartbeat), carrying the
    crashes of earlier attempts; None while another worker's lease on it is live."""
    existing = read_lease(job_dir, index)
    if existing is not None and existing.state == "running" and existing.expires > time.time():
        log.info("Shard %d of job %s is being scored by %s; leaving it.", index, spec.job_id, existing.worker)
        return None
    previous = (existing or Lease(state="queued", expires=0)).after_death()
    return Lease(
        state="running", expires=0, attempts=previous.attempts + 1, worker=worker_id(), crashes=previous.crashes
    )


def _score_files(
    job_dir: Path,
    index: int,
    spec: JobSpec,
    lease: Lease,
    predictor: Predictor,
    options: ShardOptions,
    progress: Callable[[int], None] | None,
) -> list[Result]:
    """Each of the shard's files' result, in the manifest's order, named by its path in the input
    folder; the lease's heartbeat names the files in flight before each batch."""

    def heartbeat(current: list[str]) -> None:
        lease.current = current
        lease.expires = time.time() + options.lease_seconds
        write_lease(job_dir, index, lease)

    files = shard_files(job_dir, spec, index)
    # One crash puts a whole batch in flight under suspicion; the one-at-a-time retries that
    # follow pin it on a single file, which is then recorded instead of scored again.
    poison = {file for file, count in lease.crashes.items() if count >= max(1, options.max_attempts - 1)}
    suspicious = lease.attempts > 1  # after a crash, go one file at a time to find the culprit
    heartbeat([])
    folder = Path(spec.input_folder)
    if spec.source is not None:
        fetched = options.fetch(spec.source, folder, [file for file in files if file not in poison])
        log.info("Fetched %d instance(s) of shard %d of job %s by WADO-RS.", fetched, index, spec.job_id)
        heartbeat([])
    writer = None
    if spec.dicom_outbox is not None:
        from pneumoscan.jobs.dicom_outputs import DicomResultWriter

        writer = DicomResultWriter(predictor, Path(spec.dicom_outbox))
    scored: dict[str, Result] = {}
    for outcome, scan in score_paths_keeping_scans(
        predictor,
        [folder / file for file in files if file not in poison],
        batch_size=1 if suspicious else options.batch_size,
        max_pixels=options.max_pixels,
        decode_threads=options.decode_threads,
        overlap=not suspicious,
        before_batch=lambda chunk: heartbeat([path.relative_to(folder).as_posix() for path in chunk]),
        progress=progress,
        keep=writer is not None,
    ):
        file = Path(outcome.file or "").relative_to(folder).as_posix()
        scored[file] = replace(outcome, file=file)
        if options.observe is not None:
            options.observe(outcome, predictor.model_version)
        if writer is not None:
            writer.write(outcome, scan)
    for file in poison & set(files):
        error = WorkerCrashed(f"Scoring this file stopped a worker {lease.crashes[file]} times; it was skipped.")
        scored[file] = Result(error=error, file=file)
        if progress is not None:
            progress(1)
    return [scored[file] for file in files]


def deliver_outboxes(options: ShardOptions) -> None:
    """Send what the HL7 and FHIR outboxes hold and is due (each keeps what fails)."""
    options.delivery.deliver()
