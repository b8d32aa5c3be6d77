"""A job's results: the summary and ``results.csv`` once every shard is done, and its status while
it runs.

A status counts a job's files that the model ``refused`` (not what it was made for, or not
decodable) apart from those that were ``unreadable`` (missing, no permission, or one that kept
killing workers); ``failed``, their sum, is the name both had before (deprecated). A job's own
``state: failed`` means the job itself cannot be read. Its exports (CSV, FHIR, NDJSON) are
``pneumoscan.jobs.export``.
"""

from __future__ import annotations

import csv
import json
import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from pneumoscan.errors import JobNotFinished, JobNotFound
from pneumoscan.files import atomic_write
from pneumoscan.jobs.folder import (
    PLOT_FILE,
    RESULTS_FILE,
    SUMMARY_FILE,
    ShardMeta,
    csv_bytes,
    known_job_dirs,
    load_job,
    read_lease,
    read_shard_results,
    shard_path,
)
from pneumoscan.result import Result
from pneumoscan.schemas import JobSpec, JobState, JobStatus

log = logging.getLogger("pneumoscan.jobs")


def _shard_metas(job_dir: Path, spec: JobSpec) -> dict[int, ShardMeta]:
    """The metadata of every finished shard, by index."""
    metas = {}
    for index in range(spec.shards):
        if shard_path(job_dir, index, "csv").exists():
            metas[index] = ShardMeta.model_validate_json(shard_path(job_dir, index, "json").read_bytes())
    return metas


def _summary(spec: JobSpec, results: list[Result], metas: list[ShardMeta]) -> dict:
    """``summary.json``: counts by label and by error code, refusals apart from unreadable files,
    when the first shard started and the last finished, and the rate in between."""
    started = min((m.started for m in metas), default=time.time())
    finished = max((m.finished for m in metas), default=started)
    seconds = max(finished - started, 1e-9)
    labels: dict[str, int] = {}
    error_codes: dict[str, int] = {}
    for result in results:
        if result.prediction is not None:
            labels[result.prediction.label] = labels.get(result.prediction.label, 0) + 1
        elif result.error is not None:
            error_codes[result.error.code] = error_codes.get(result.error.code, 0) + 1
    return {
        "job_id": spec.job_id,
        "input_folder": spec.input_folder,
        "model_version": spec.model_version,
        "total": len(results),
        "ok": sum(labels.values()),
        "refused": sum(result.refused for result in results),
        "unreadable": sum(result.unreadable for result in results),
        "failed": sum(error_codes.values()),
        "labels": labels,
        "error_codes": error_codes,
        "started": datetime.fromtimestamp(started, UTC).isoformat(),
        "finished": datetime.fromtimestamp(finished, UTC).isoformat(),
        "seconds": round(seconds, 3),
        "images_per_second": round(len(results) / seconds, 2),
    }


def finalize(job_dir: Path) -> bool:
    """Write summary.json, summary.png and results.csv once every shard is done; idempotent."""
    spec = load_job(job_dir)
    if (job_dir / RESULTS_FILE).exists():
        return True
    shard_csvs = [shard_path(job_dir, index, "csv") for index in range(spec.shards)]
    if not all(path.exists() for path in shard_csvs):
        return False
    results = [result for path in shard_csvs for result in read_shard_results(path)]
    summary = _summary(spec, results, list(_shard_metas(job_dir, spec).values()))
    atomic_write(job_dir / SUMMARY_FILE, (json.dumps(summary, indent=2) + "\n").encode())
    try:
        from pneumoscan.jobs.plot import summary_png

        atomic_write(job_dir / PLOT_FILE, summary_png(results, summary))
    except Exception:  # the plot is a convenience: it must never keep a job from finishing
        log.exception("Could not draw %s for job %s; its results are complete.", PLOT_FILE, spec.job_id)
    # Every shard was scored by the job's model (a worker with another one refuses the shard).
    rows = [result.to_row(spec.model_version) for result in results]
    atomic_write(job_dir / RESULTS_FILE, csv_bytes(rows, header=True))
    return True


def _refused_and_unreadable(job_dir: Path, metas: dict[int, ShardMeta]) -> tuple[int, int]:
    """The files refused and the files unreadable in the finished shards; a shard of a release
    that counted only both together is counted from its rows."""
    refused = unreadable = 0
    for index, meta in metas.items():
        if meta.refused is not None and meta.unreadable is not None:
            refused, unreadable = refused + meta.refused, unreadable + meta.unreadable
            continue
        results = read_shard_results(shard_path(job_dir, index, "csv"))
        refused += sum(result.refused for result in results)
        unreadable += sum(result.unreadable for result in results)
    return refused, unreadable


def _failed_job(job_dir: Path, detail: str) -> JobStatus:
    return JobStatus(job_id=job_dir.name, state="failed", output=str(job_dir), detail=detail)


def job_status(job_dir: Path) -> JobStatus:
    """Progress from the job's files; a vanished or unreadable folder is a failed job."""
    try:
        spec = load_job(job_dir)
        metas = _shard_metas(job_dir, spec)
        refused, unreadable = _refused_and_unreadable(job_dir, metas)
        if (job_dir / RESULTS_FILE).exists():
            state: JobState = "done"
        elif metas or any(
            (lease := read_lease(job_dir, i)) is not None and lease.state == "running" for i in range(spec.shards)
        ):
            state = "running"
        else:
            state = "queued"
    except JobNotFound:
        return _failed_job(job_dir, f"The job folder {job_dir} is missing or was removed.")
    except (OSError, ValueError) as exc:
        return _failed_job(job_dir, f"The job folder {job_dir} cannot be read: {exc}")
    done = sum(m.files for m in metas.values())
    rate = eta = None
    if metas:
        elapsed = max(max(m.finished for m in metas.values()) - min(m.started for m in metas.values()), 1e-9)
        rate = round(done / elapsed, 2)
        eta = round((spec.total - done) / rate, 1) if rate and state != "done" else 0.0
    return JobStatus(
        job_id=spec.job_id,
        state=state,
        total=spec.total,
        done=done,
        refused=refused,
        unreadable=unreadable,
        images_per_second=rate,
        eta_seconds=eta,
        output=str(job_dir),
        input_folder=spec.input_folder,
        created=spec.created,
    )


def list_jobs(jobs_root: Path) -> list[JobStatus]:
    """Every known job's status, newest first; jobs whose folder cannot be read come last."""
    statuses = [job_status(job_dir) for job_dir in known_job_dirs(jobs_root)]
    oldest = datetime.min.replace(tzinfo=UTC)
    return sorted(statuses, key=lambda status: status.created or oldest, reverse=True)


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


def read_results(job_dir: Path) -> Iterator[Result]:
    """A finished job's results, in ``results.csv``'s order; :class:`JobNotFinished` before."""
    with finished_results(job_dir).open(newline="") as handle:
        for row in csv.DictReader(handle):
            yield Result.from_row(row)
