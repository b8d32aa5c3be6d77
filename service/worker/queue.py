"""The Huey adapter: the queue (SQLite by default, Redis when shared), its task and worker.

``pneumoscan worker`` runs a Huey consumer with process workers; each loads the model once,
after the fork. Job state lives in the job folders (``pneumoscan.jobs``), so the at-most-once
queue can lose a message without losing a result: ``reconcile`` puts it back. Everything here
is about the queue; finding, reading and exporting jobs needs only ``pneumoscan.jobs``. Importing
it opens nothing: the queue and its tasks are made at first use (``get_huey``).
"""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import replace
from pathlib import Path

from huey import Huey, RedisHuey, SqliteHuey, crontab
from huey.api import TaskWrapper
from redis.exceptions import RedisError

from pneumoscan.dicom.query import DicomwebQuery, job_input
from pneumoscan.dicom.store import OUTBOX
from pneumoscan.errors import JobNotFound, QueueUnavailable
from pneumoscan.jobs.folder import (
    RESULTS_FILE,
    JobSource,
    check_input_folder,
    create_job,
    known_job_dirs,
    register_job,
)
from pneumoscan.jobs.leases import reconcile
from pneumoscan.jobs.results import job_status
from pneumoscan.jobs.shards import ShardOptions, deliver_outboxes, score_shard
from pneumoscan.model.architectures import configure_tensorflow
from pneumoscan.model.predictor import Predictor, load_metadata
from pneumoscan.schemas import JobStatus
from pneumoscan.settings import Settings, available_cores, get_settings

log = logging.getLogger("pneumoscan.worker")
# What the queue raises when its server cannot be reached (Redis) or its file cannot be written (SQLite).
QUEUE_ERRORS = (RedisError, sqlite3.Error)

_huey: Huey | None = None
_tasks: dict[str, TaskWrapper] = {}
_predictor: Predictor | None = None
_model_dir: Path | None = None
_processes = 1


def make_huey(config: Settings) -> Huey:
    if config.queue_url:
        return RedisHuey(config.queue_name, url=config.queue_url, results=False)
    config.data_dir.mkdir(parents=True, exist_ok=True)
    return SqliteHuey(config.queue_name, filename=str(config.data_dir / "queue.db"), results=False)


def get_huey() -> Huey:
    """The queue (``PNEUMOSCAN_QUEUE_URL``, or SQLite under ``PNEUMOSCAN_DATA_DIR``), opened at first
    use with its tasks: importing this module reads no setting and opens nothing."""
    global _huey
    if _huey is None:
        huey = make_huey(get_settings())
        huey.on_startup()(_load_model)
        _tasks["score_shard"] = huey.task(name="score_shard_task")(_score_shard)
        huey.periodic_task(crontab(minute="*"), name="reconcile_periodically")(_reconcile_periodically)
        _huey = huey
    return _huey


def model_dir() -> Path:
    """The folder of the model version the service serves (``PNEUMOSCAN_MODEL_TAG`` in the BentoML
    store), or ``PNEUMOSCAN_MODEL_DIR`` when the store does not hold that tag."""
    global _model_dir
    if _model_dir is None:
        from service.model_store import serving_model_dir  # imports bentoml: only when a model is needed

        settings = get_settings()
        _model_dir, source = serving_model_dir(settings.model_tag, settings.model_dir)
        log.info("Scoring with %s.", source)
    return _model_dir


def get_predictor() -> Predictor:
    """The model, loaded once per worker process (after the consumer forks it)."""
    global _predictor
    if _predictor is None:
        settings = get_settings()
        # Share the cores between worker processes instead of oversubscribing them.
        threads = settings.tf_intra_op_threads or max(1, available_cores() // _processes)
        configure_tensorflow(threads, settings.tf_inter_op_threads)
        _predictor = Predictor.from_dir(model_dir(), threshold=settings.threshold, ood_policy=settings.ood_policy)
        _predictor.warm_up(settings.predict_batch_size)
    return _predictor


def _load_model() -> None:
    predictor = get_predictor()
    if get_settings().worker_metrics_port is not None:
        from service import result_metrics

        result_metrics.register(model_dir(), predictor.model_version)


def shard_options() -> ShardOptions:
    """How this worker scores shards; with a metrics port, each result is counted on it."""
    settings = get_settings()
    options = ShardOptions.from_settings(settings)
    if settings.worker_metrics_port is None:
        return options
    from service.result_metrics import observe_result

    return replace(options, observe=observe_result)


def enqueue(job_dir: Path, index: int) -> None:
    get_huey()
    _tasks["score_shard"](str(job_dir), index)


def _score_shard(job_dir: str, index: int) -> None:
    path = Path(job_dir)
    try:
        score_shard(path, index, get_predictor(), shard_options())
    except JobNotFound:
        log.error("Dropping shard %d: the job folder %s is gone.", index, job_dir)
    except OSError as exc:
        log.error("Shard %d of %s failed: cannot write the job folder (%s).", index, job_dir, exc)


def _reconcile_periodically() -> None:
    reconcile_known_jobs()
    deliver_outboxes(ShardOptions.from_settings(get_settings()))


def reconcile_known_jobs(force: bool = False) -> int:
    settings = get_settings()
    queued = 0
    idle = get_huey().pending_count() == 0
    for job_dir in known_job_dirs(settings.jobs_root):
        try:
            if not (job_dir / RESULTS_FILE).exists():
                queued += reconcile(job_dir, enqueue, settings.lease_seconds, force=force, queue_idle=idle)
        except (JobNotFound, OSError) as exc:
            log.warning("Skipping job %s while reconciling: %s", job_dir, exc)
    return queued


def submit(
    folder: str | Path,
    output: str | Path | None,
    allowed_roots: list[Path] | None,
    dicom_outbox: Path | None = None,
) -> JobStatus:
    """Create (or find) the job for ``folder`` and queue its unfinished shards; with
    ``dicom_outbox``, its results are also written there as DICOM."""
    settings = get_settings()
    resolved = check_input_folder(folder, allowed_roots)
    output_root = Path(output).resolve() if output else settings.jobs_root
    output_root.mkdir(parents=True, exist_ok=True)
    model_version = load_metadata(model_dir()).version
    job_dir = create_job(resolved, output_root, model_version, settings.shard_size, dicom_outbox)
    return _queue(job_dir)


def submit_query(query: DicomwebQuery, output: str | Path | None = None) -> JobStatus:
    """Create (or find) the job over the PACS instances ``query`` matches (QIDO-RS, now) and queue
    it; its shards fetch their instances by WADO-RS, and its results go to the DICOM node's outbox
    as the node's own studies' do."""
    settings = get_settings()
    folder, described, files = job_input(query, settings)
    output_root = Path(output).resolve() if output else settings.jobs_root
    output_root.mkdir(parents=True, exist_ok=True)
    model_version = load_metadata(model_dir()).version
    outbox = settings.dicom_root / OUTBOX
    job_dir = create_job(folder, output_root, model_version, settings.shard_size, outbox, JobSource(described, files))
    return _queue(job_dir)


def _queue(job_dir: Path) -> JobStatus:
    settings = get_settings()
    register_job(settings.jobs_root, job_dir)
    try:
        reconcile(job_dir, enqueue, settings.lease_seconds, queue_idle=get_huey().pending_count() == 0)
    except QUEUE_ERRORS as exc:
        raise QueueUnavailable(
            f"The job queue cannot be reached ({type(exc).__name__}); the job {job_dir.name} is kept: "
            "submit it again in a few seconds, or a worker queues it once the queue is back."
        ) from exc
    return job_status(job_dir)


def drain() -> int:
    """Run queued tasks in this process until the queue is empty (burst mode, for tests and cron)."""
    huey = get_huey()
    executed = 0
    while (task := huey.dequeue()) is not None:
        huey.execute(task)
        executed += 1
    return executed


def run_worker(concurrency: int, burst: bool = False) -> None:
    global _processes
    settings = get_settings()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(process)d %(message)s")
    queued = reconcile_known_jobs()
    log.info("Re-queued %d unfinished shard(s) at start-up.", queued)
    deliver_outboxes(ShardOptions.from_settings(settings))
    if burst:
        log.info("Burst mode: executed %d task(s); the queue is empty.", drain())
        return
    _processes = concurrency
    if settings.worker_metrics_port is None:
        _consume(concurrency)
        return
    from service.metrics_server import multiprocess_dir, multiprocess_registry, serve_metrics

    # Before the consumer forks: its worker processes write their counts to this folder.
    with multiprocess_dir() as directory:
        serve_metrics(settings.worker_metrics_port, multiprocess_registry(directory))
        _consume(concurrency)


def _consume(concurrency: int) -> None:
    consumer = get_huey().create_consumer(
        workers=concurrency,
        worker_type="process",
        periodic=True,
        graceful_signal="TERM",
        shutdown_timeout=60,
        max_delay=1.0,
    )
    consumer.run()
