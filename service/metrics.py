"""pneumoscan's own Prometheus metrics on ``/metrics``, beside BentoML's.

Created on first use, inside a worker: BentoML sets ``PROMETHEUS_MULTIPROC_DIR`` when a worker
starts, and metrics made before that would stay invisible to ``/metrics``.
"""

from __future__ import annotations

from functools import lru_cache

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


@lru_cache(maxsize=1)
def _batch_size():
    from prometheus_client import Histogram

    return Histogram(
        "pneumoscan_model_batch_size", "Images per model call made by an HTTP worker's batcher.",
        buckets=BATCH_BUCKETS,
    )


@lru_cache(maxsize=1)
def _retries():
    from prometheus_client import Counter

    return Counter(
        "pneumoscan_model_call_retries", "Model-service calls retried after a failed connection."
    )


def observe_batch_size(images: int) -> None:
    _batch_size().observe(images)


def count_model_retry() -> None:
    _retries().inc()


def register() -> None:
    """Create the metrics now, so ``/metrics`` lists them (at zero) before the first call."""
    _batch_size()
    _retries()
