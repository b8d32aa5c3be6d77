"""A job's results: the summary and ``results.csv`` once every shard is done, its status while
it runs, and its export as CSV or FHIR (a Bundle or NDJSON).

The FHIR forms are built from ``results.csv`` on request, one row at a time, so the CSV stays the
one record of a job. Each scored row becomes the same ``DiagnosticReport`` that ``/predict``
answers (an ``ImagingStudy`` for DICOM input); each refused file an ``OperationOutcome``. Entries
follow the CSV's row order. A report's identifier is derived from the job id and the file's path,
so exporting a job twice gives the same identifiers and a FHIR server can de-duplicate them.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path

from fhir.resources.R4B.resource import Resource

from pneumoscan.errors import JobNotFinished, JobNotFound
from pneumoscan.fhir import FHIR_JSON, FHIR_NDJSON, ndjson_lines, result_resource, stream_bundle
from pneumoscan.jobs.folder import (
    PLOT_FILE,
    RESULTS_FILE,
    SUMMARY_FILE,
    ShardMeta,
    atomic_write,
    csv_bytes,
    known_job_dirs,
    load_job,
    read_lease,
    shard_path,
)
from pneumoscan.result import RESULT_COLUMNS, Result
from pneumoscan.schemas import JobSpec, JobState, JobStatus

log = logging.getLogger("pneumoscan.jobs")


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
        from pneumoscan.jobs.plot import summary_png

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


def list_jobs(jobs_root: Path) -> list[JobStatus]:
    """Every known job's status, newest first; jobs whose folder cannot be read come last."""
    statuses = [job_status(job_dir) for job_dir in known_job_dirs(jobs_root)]
    oldest = datetime.min.replace(tzinfo=timezone.utc)
    return sorted(statuses, key=lambda status: status.created or oldest, reverse=True)


# --- exporting ------------------------------------------------------------------------------------


MEDIA_TYPES = {"csv": "text/csv", "fhir": FHIR_JSON, "ndjson": FHIR_NDJSON}


def finished_results(job_dir: Path) -> Path:
    """The job's ``results.csv``; :class:`JobNotFinished` until every file has been scored."""
    status = job_status(job_dir)
    if status.state != "done":
        raise JobNotFinished(
            status.detail
            or f"Job {status.job_id} is {status.state}: {status.done} of {status.total} files scored so far. "
            "Its results are ready when every file is."
        )
    return job_dir / RESULTS_FILE


def report_id(job_id: str, path: str) -> str:
    """The stable identifier of the report for ``path`` in job ``job_id``."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"urn:pneumoscan:job:{job_id}:{path}"))


def row_resource(row: dict[str, str], *, job_id: str, issued: datetime) -> Resource:
    """One ``results.csv`` row as a DiagnosticReport, or an OperationOutcome for a refused file."""
    return result_resource(Result.from_row(row), request_id=report_id(job_id, row["path"]), issued=issued)


def _finished_at(job_dir: Path) -> datetime:
    return datetime.fromisoformat(json.loads((job_dir / SUMMARY_FILE).read_text())["finished"])


def _resources(
    path: Path, *, job_id: str, issued: datetime, progress: Callable[[int], None] | None
) -> Iterator[Resource]:
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            yield row_resource(row, job_id=job_id, issued=issued)
            if progress is not None:
                progress(1)


def export(job_dir: Path, form: str, progress: Callable[[int], None] | None = None) -> Iterator[str]:
    """The job's results as text pieces: ``csv``, ``fhir`` (a collection Bundle) or ``ndjson``;
    ``progress`` is called with 1 per FHIR resource written."""
    if form not in MEDIA_TYPES:
        raise ValueError(f"Unknown results format {form!r}; choose one of {', '.join(MEDIA_TYPES)}.")
    path = finished_results(job_dir)
    if form == "csv":
        with path.open(newline="") as handle:
            yield from handle
        return
    issued = _finished_at(job_dir)
    resources = _resources(path, job_id=job_dir.name, issued=issued, progress=progress)
    if form == "fhir":
        yield from stream_bundle(resources, bundle_id=report_id(job_dir.name, ""), issued=issued)
    else:
        yield from ndjson_lines(resources)
