"""The queue worker: Huey on SQLite (default) or Redis, scoring job shards with the core.

``pneumoscan worker`` runs a Huey consumer with process workers; each loads the model once,
after the fork. Job state lives in the job folders (``service.jobs``), so the at-most-once
queue can lose a message without losing a result: ``reconcile`` puts it back.
"""

from __future__ import annotations

import logging
import os
from datetime import datetime, timezone
from pathlib import Path

from huey import Huey, RedisHuey, SqliteHuey, crontab

from pneumoscan.model import Predictor, configure_tensorflow, load_metadata
from pneumoscan.settings import Settings, get_settings
from service import jobs, shards

log = logging.getLogger("pneumoscan.worker")
settings = get_settings()
INDEX_FILE = "index"


def make_huey(config: Settings) -> Huey:
    if config.queue_url:
        return RedisHuey(config.queue_name, url=config.queue_url, results=False)
    config.data_dir.mkdir(parents=True, exist_ok=True)
    return SqliteHuey(config.queue_name, filename=str(config.data_dir / "queue.db"), results=False)


huey = make_huey(settings)
_predictor: Predictor | None = None
_processes = 1


def get_predictor() -> Predictor:
    """The model, loaded once per worker process (after the consumer forks it)."""
    global _predictor
    if _predictor is None:
        # Share the cores between worker processes instead of oversubscribing them.
        threads = settings.tf_intra_op_threads or max(1, (os.cpu_count() or 1) // _processes)
        configure_tensorflow(threads, settings.tf_inter_op_threads)
        _predictor = Predictor.from_dir(
            settings.model_dir, threshold=settings.threshold, ood_policy=settings.ood_policy
        )
    return _predictor


@huey.on_startup()
def _load_model() -> None:
    get_predictor()


def enqueue(job_dir: Path, index: int) -> None:
    score_shard_task(str(job_dir), index)


@huey.task()
def score_shard_task(job_dir: str, index: int) -> None:
    path = Path(job_dir)
    try:
        shards.score_shard(
            path, index, get_predictor(), batch_size=settings.predict_batch_size,
            max_pixels=settings.max_image_pixels, decode_threads=settings.decode_threads,
            lease_seconds=settings.lease_seconds, max_attempts=settings.max_shard_attempts,
        )
    except jobs.JobNotFound:
        log.error("Dropping shard %d: the job folder %s is gone.", index, job_dir)
    except OSError as exc:
        log.error("Shard %d of %s failed: cannot write the job folder (%s).", index, job_dir, exc)


@huey.periodic_task(crontab(minute="*"))
def reconcile_periodically() -> None:
    reconcile_known_jobs()


def known_job_dirs() -> list[Path]:
    """Job folders under the default root, plus those submitted with another --output."""
    root = settings.jobs_root
    found = {path for path in root.glob("*") if (path / jobs.JOB_FILE).is_file()} if root.is_dir() else set()
    index = root / INDEX_FILE
    if index.is_file():
        found |= {Path(line) for line in index.read_text().splitlines() if line}
    return sorted(found)


def list_jobs() -> list[jobs.JobStatus]:
    """Every known job's status, newest first; jobs whose folder cannot be read come last."""
    statuses = [jobs.job_status(job_dir) for job_dir in known_job_dirs()]
    oldest = datetime.min.replace(tzinfo=timezone.utc)
    return sorted(statuses, key=lambda status: status.created or oldest, reverse=True)


def reconcile_known_jobs(force: bool = False) -> int:
    queued = 0
    idle = huey.pending_count() == 0
    for job_dir in known_job_dirs():
        try:
            if not (job_dir / jobs.RESULTS_FILE).exists():
                queued += jobs.reconcile(job_dir, enqueue, settings.lease_seconds, force=force, queue_idle=idle)
        except (jobs.JobNotFound, OSError) as exc:
            log.warning("Skipping job %s while reconciling: %s", job_dir, exc)
    return queued


def submit(folder: str | Path, output: str | Path | None, allowed_roots: list[Path] | None) -> jobs.JobStatus:
    """Create (or find) the job for ``folder`` and queue its unfinished shards."""
    resolved = jobs.check_input_folder(folder, allowed_roots)
    output_root = Path(output).resolve() if output else settings.jobs_root
    output_root.mkdir(parents=True, exist_ok=True)
    model_version = load_metadata(settings.model_dir).version
    job_dir = jobs.create_job(resolved, output_root, model_version, settings.shard_size)
    if output_root != settings.jobs_root.resolve():
        settings.jobs_root.mkdir(parents=True, exist_ok=True)
        if job_dir not in known_job_dirs():
            with (settings.jobs_root / INDEX_FILE).open("a") as index:
                index.write(f"{job_dir}\n")
    jobs.reconcile(job_dir, enqueue, settings.lease_seconds, queue_idle=huey.pending_count() == 0)
    return jobs.job_status(job_dir)


def find_job(job: str) -> Path:
    """A job folder from its id (under the default root or the index) or its path."""
    candidate = Path(job)
    if candidate.is_dir():
        return candidate.resolve()
    if (settings.jobs_root / job).is_dir():
        return settings.jobs_root / job
    for job_dir in known_job_dirs():
        if job_dir.name == job:
            return job_dir
    raise jobs.JobNotFound(f"No job {job!r} under {settings.jobs_root}.")


def drain() -> int:
    """Run queued tasks in this process until the queue is empty (burst mode, for tests and cron)."""
    executed = 0
    while (task := huey.dequeue()) is not None:
        huey.execute(task)
        executed += 1
    return executed


def run_worker(concurrency: int, burst: bool = False) -> None:
    global _processes
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(process)d %(message)s")
    queued = reconcile_known_jobs()
    log.info("Re-queued %d unfinished shard(s) at start-up.", queued)
    if burst:
        log.info("Burst mode: executed %d task(s); the queue is empty.", drain())
        return
    _processes = concurrency
    consumer = huey.create_consumer(
        workers=concurrency, worker_type="process", periodic=True,
        graceful_signal="TERM", shutdown_timeout=60, max_delay=1.0,
    )
    consumer.run()
