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
        "pneumoscan_model_batch_size",
        "Images per model call made by an HTTP worker's batcher.",
        buckets=BATCH_BUCKETS,
    )


@lru_cache(maxsize=1)
def _retries():
    from prometheus_client import Counter

    return Counter("pneumoscan_model_call_retries", "Model-service calls retried after a failed connection.")


@lru_cache(maxsize=1)
def _outbox_messages():
    from prometheus_client import Gauge

    # Read from the outbox folders, which every process (service, workers, DICOM node) shares:
    # the most recent reading is the truth, whichever HTTP worker took it.
    return Gauge(
        "pneumoscan_outbox_messages",
        "Messages per outbox (destination hl7, fhir or dicom) by state: pending (waiting for delivery), "
        "failed (set aside for an operator: pneumoscan outbox list) and delivered (in all).",
        ["destination", "state"],
        multiprocess_mode="mostrecent",
    )


def observe_outboxes(boxes: dict) -> None:
    """Set the outbox gauge from the folders of ``boxes`` (``pneumoscan.delivery.destinations.outboxes``)."""
    for name, box in boxes.items():
        for state, count in box.counts().items():
            _outbox_messages().labels(destination=name, state=state).set(count)


class OutboxMetricsMiddleware:
    """Reads the outboxes' depth when ``/metrics`` is scraped, so the figures are current."""

    def __init__(self, app, boxes: dict) -> None:
        self.app = app
        self.boxes = boxes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["path"] == "/metrics":
            import anyio

            await anyio.to_thread.run_sync(observe_outboxes, self.boxes)
        await self.app(scope, receive, send)


def observe_batch_size(images: int) -> None:
    _batch_size().observe(images)


def count_model_retry() -> None:
    _retries().inc()


def register() -> None:
    """Create the metrics now, so ``/metrics`` lists them (at zero) before the first call."""
    _batch_size()
    _retries()
    _outbox_messages()
