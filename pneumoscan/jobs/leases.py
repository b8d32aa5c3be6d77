"""Leases: which shards are queued or running, and the reconcile step that re-queues lost ones.

``reconcile`` takes the queue's ``enqueue`` function, so it runs the same under Huey, in tests
and anywhere else a shard can be handed to a worker.
"""

from __future__ import annotations

import time
from pathlib import Path

from pneumoscan.jobs.folder import Enqueue, Lease, lease_path, load_job, read_lease, shard_path, write_lease
from pneumoscan.jobs.results import finalize


def reconcile(
    job_dir: Path, enqueue: Enqueue, lease_seconds: float, *, force: bool = False, queue_idle: bool = True
) -> int:
    """Queue every unfinished shard that no live worker holds; returns how many were queued.

    A running shard is re-queued once its heartbeat lease expires. A queued shard is re-queued
    when its lease expired and the queue is idle (its message was lost with a worker), or at
    once with ``force``. When ``enqueue`` raises (the queue cannot be reached), that shard keeps
    the lease it had and the error goes on to the caller.
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
        try:
            enqueue(job_dir, index)
        except Exception:
            # Not in the queue: the shard keeps the lease it had, so the next reconcile queues it at once.
            if lease is None:
                lease_path(job_dir, index).unlink(missing_ok=True)
            else:
                write_lease(job_dir, index, lease)
            raise
        queued += 1
    finalize(job_dir)
    return queued
