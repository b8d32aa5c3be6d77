"""Scoring one shard of a batch job: a result row per file, a heartbeat on the shard's lease per
batch, and the crash bookkeeping that pins a file which keeps killing workers.

The shard's result file is written atomically before its lease is dropped, and the job is
finalized by whichever worker completes its last shard (``pneumoscan.jobs.results.finalize``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from pneumoscan import DEFAULT_MAX_PIXELS
from pneumoscan.destinations import outboxes
from pneumoscan.errors import WorkerCrashed
from pneumoscan.fhir_push import FhirOutbox
from pneumoscan.hl7 import Hl7Outbox, queue_result
from pneumoscan.jobs.folder import (
    Lease,
    ShardMeta,
    atomic_write,
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
from pneumoscan.model import Predictor
from pneumoscan.predict import score_paths
from pneumoscan.result import Result
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
    hl7_destination: str | None = None  # host:port; with it, HL7 messages go through hl7_outbox
    hl7_outbox: Hl7Outbox | None = None
    fhir_url: str | None = None  # a FHIR server's base URL; with it, reports go through fhir_outbox
    fhir_outbox: FhirOutbox | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> ShardOptions:
        boxes = outboxes(settings)
        return cls(
            batch_size=settings.predict_batch_size,
            max_pixels=settings.max_image_pixels,
            decode_threads=settings.decode_threads,
            lease_seconds=settings.lease_seconds,
            max_attempts=settings.max_shard_attempts,
            hl7_destination=settings.hl7_destination,
            hl7_outbox=boxes["hl7"],
            fhir_url=settings.fhir_url,
            fhir_outbox=boxes["fhir"],
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
    existing = read_lease(job_dir, index)
    if existing is not None and existing.state == "running" and existing.expires > time.time():
        log.info("Shard %d of job %s is being scored by %s; leaving it.", index, spec.job_id, existing.worker)
        return True
    previous = (existing or Lease(state="queued", expires=0)).after_death()
    crashes = previous.crashes
    lease = Lease(state="running", expires=0, attempts=previous.attempts + 1, worker=worker_id(), crashes=crashes)
    suspicious = lease.attempts > 1  # after a crash, go one file at a time to find the culprit

    def heartbeat(current: list[str]) -> None:
        lease.current = current
        lease.expires = time.time() + options.lease_seconds
        write_lease(job_dir, index, lease)

    names = shard_files(job_dir, spec, index)
    # One crash puts a whole batch in flight under suspicion; the one-at-a-time retries that
    # follow pin it on a single file, which is then recorded instead of scored again.
    poison = {name for name, count in crashes.items() if count >= max(1, options.max_attempts - 1)}
    started = time.time()
    heartbeat([])
    folder = Path(spec.input_folder)
    writer = None
    if spec.dicom_outbox is not None:
        from pneumoscan.jobs.dicom_outputs import DicomResultWriter

        writer = DicomResultWriter(predictor, Path(spec.dicom_outbox), options.max_pixels)
    scored: dict[str, dict] = {}
    outgoing: list[Result] = []
    for outcome in score_paths(
        predictor,
        [folder / name for name in names if name not in poison],
        batch_size=1 if suspicious else options.batch_size,
        max_pixels=options.max_pixels,
        decode_threads=options.decode_threads,
        overlap=not suspicious,
        before_batch=lambda chunk: heartbeat([path.relative_to(folder).as_posix() for path in chunk]),
        progress=progress,
    ):
        name = Path(outcome.name).relative_to(folder).as_posix()
        scored[name] = replace(outcome, name=name).to_row(predictor.model_version)
        if writer is not None:
            writer.write(Path(outcome.name), outcome)
        if outcome.prediction is not None:
            outgoing.append(outcome)
    rows = []
    for name in names:
        if name in poison:
            error = WorkerCrashed(f"Scoring this file stopped a worker {crashes[name]} times; it was skipped.")
            rows.append(Result(error=error, name=name).to_row(predictor.model_version))
            if progress is not None:
                progress(1)
        else:
            rows.append(scored[name])
    meta = ShardMeta(
        worker=worker_id(),
        started=started,
        finished=time.time(),
        files=len(rows),
        failed=sum(row["status"] == "error" for row in rows),
    )
    # Queued before the shard counts as done, so a crash before that scores it again and loses no
    # message (each is queued once by its id); issued when the shard finished, as the export says.
    issued = datetime.fromtimestamp(meta.finished, UTC)
    for outcome in outgoing:
        if options.hl7_destination and options.hl7_outbox is not None:
            queue_result(options.hl7_outbox, outcome)
        if options.fhir_url and options.fhir_outbox is not None:
            options.fhir_outbox.put_result(outcome, issued)
    atomic_write(shard_path(job_dir, index, "json"), meta.model_dump_json().encode())
    atomic_write(shard_path(job_dir, index, "csv"), csv_bytes(rows, header=True))
    lease_path(job_dir, index).unlink(missing_ok=True)
    finalize(job_dir)
    deliver_outboxes(options)
    return True


def deliver_outboxes(options: ShardOptions) -> None:
    """Send what the HL7 and FHIR outboxes hold and is due (each keeps what fails)."""
    if options.hl7_destination and options.hl7_outbox is not None:
        options.hl7_outbox.deliver(options.hl7_destination)
    if options.fhir_url and options.fhir_outbox is not None:
        options.fhir_outbox.deliver(options.fhir_url)
