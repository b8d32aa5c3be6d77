"""Batch scoring: where data lives, the queue, and the queue worker."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings

from pneumoscan.settings.machine import PROJECT_ROOT


class BatchSettings(BaseSettings):
    # Batch scoring (queue worker)
    data_dir: Path = Field(
        default=PROJECT_ROOT / "var",
        description="Where the embedded SQLite queue and, by default, job folders live.",
    )
    jobs_dir: Path | None = Field(
        default=None, description="Default output root for batch jobs (default: DATA_DIR/jobs)."
    )
    queue_url: str | None = Field(
        default=None,
        description="redis://host:port/db to share one queue between hosts; unset: SQLite in DATA_DIR.",
    )
    queue_name: str = Field(default="pneumoscan", description="Queue name (Redis key prefix).")
    input_roots: str | None = Field(
        default=None,
        description="Colon-separated folders that jobs may read; unset: the CLI reads any folder, HTTP none.",
    )
    shard_size: int = Field(default=256, gt=0, description="Files per queued task (shard).")
    lease_seconds: float = Field(
        default=300.0, gt=0, description="A shard unfinished this long after its last heartbeat is re-queued."
    )
    max_shard_attempts: int = Field(
        default=3, gt=0, description="Attempts before a file that kills workers is recorded as an error."
    )
    decode_threads: int = Field(default=2, gt=0, description="Threads decoding images in each worker.")
    worker_metrics_port: int | None = Field(
        default=None,
        gt=0,
        lt=65536,
        description="Port where `pneumoscan worker` serves Prometheus `/metrics` (what its processes scored, "
        "per model version); unset: no metrics.",
    )
