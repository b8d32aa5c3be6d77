"""The BentoML service: ``bentoml serve`` (or ``make run``) starts it on port 3000.

``Pneumoscan`` is the public HTTP service. Each of its workers (one per core by default) reads
uploads, decodes them with the core pipeline in a few threads, and hands the planes to its own
micro-batcher (``service.http.batcher``), which scores what queued while the previous call ran as one
batch. On the CPU the batch is scored by the model in the same worker (``LocalModel``); with
``PNEUMOSCAN_USE_GPU`` it goes to ``PneumoniaModel``, one model process whose adaptive batching
merges the batches of every HTTP worker (``RemoteModel``).
"""

from __future__ import annotations

import logging
import os
import ssl
import sys
from pathlib import Path

import bentoml
import numpy as np
from bentoml.exceptions import ServiceUnavailable

from pneumoscan.access.audit import AuditLog
from pneumoscan.access.clients import KeysFile
from pneumoscan.access.forward import forwarder_from_settings
from pneumoscan.access.rate import RateLimiter
from pneumoscan.delivery.destinations import Delivery, Outboxes
from pneumoscan.dicom.query import DicomwebQuery
from pneumoscan.errors import ConfigurationError
from pneumoscan.imaging.preprocess import plane_to_input
from pneumoscan.model.decision import decision_for
from pneumoscan.model.predictor import load_metadata
from pneumoscan.schemas import JobStatus, ServedModel
from pneumoscan.settings import get_settings
from service import result_metrics
from service.http import metrics
from service.http.access import METRICS, Access, AccessMiddleware, operations
from service.http.app import create_app, routes
from service.http.backends import LocalModel, RemoteModel
from service.http.batcher import MicroBatcher
from service.http.context import ModelInfo
from service.http.middleware import (
    BodyLimitMiddleware,
    InFlightLimitMiddleware,
    ReadinessMiddleware,
    RoutingErrorMiddleware,
    is_open,
)

settings = get_settings()
OUTBOXES = Outboxes.from_settings(settings)
MODEL = bentoml.models.BentoModel(settings.model_tag)


def _configure_request_log() -> None:
    logger = logging.getLogger("pneumoscan.requests")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


class _ShedRequestFilter(logging.Filter):
    """Drops BentoML's traceback for each request its batching queue sheds: the access log line
    (status 503) and the ``pneumoscan.requests`` line (error ``overloaded``) already record it."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], ServiceUnavailable))


def https() -> dict:
    """BentoML's ``ssl`` options when PNEUMOSCAN_TLS_CERT and _KEY are set: HTTPS only, TLS 1.2 or later
    (OpenSSL's default floor here), with client certificates required when PNEUMOSCAN_TLS_CA is set."""
    if (settings.tls_cert is None) != (settings.tls_key is None):
        raise ConfigurationError("PNEUMOSCAN_TLS_CERT and PNEUMOSCAN_TLS_KEY must be set together.")
    if settings.tls_cert is None:
        return {}
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(settings.tls_cert, settings.tls_key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigurationError(f"Cannot load the HTTPS certificate or key: {exc}") from exc
    options = {"enabled": True, "certfile": str(settings.tls_cert), "keyfile": str(settings.tls_key)}
    if settings.tls_ca is not None:
        options |= {"ca_certs": str(settings.tls_ca), "cert_reqs": int(ssl.CERT_REQUIRED)}
    return {"ssl": options}


# BentoML's OpenTelemetry middleware runs on every request even when nothing samples the traces
# (tracing.sample_rate defaults to 0) and costs about a third of the event loop's time per request.
TRACING = {} if settings.trace_requests else {"tracing": {"excluded_urls": [".*"]}}


@bentoml.service(
    name="pneumonia_model",
    workers=settings.model_workers,
    resources={"gpu": 1} if settings.use_gpu else {"cpu": "1"},
    traffic={"timeout": settings.request_timeout_s + 5},
    logging={"access": {"enabled": False}},
    **TRACING,
    # BentoML's client replaces its connection pool every `max_requests` calls and aborts the
    # calls still in flight on the old one; batches arrive at most a few hundred a second.
    runner_connection={"max_requests": 1 << 30, "max_age": 24 * 3600.0},
)
class PneumoniaModel:
    """The model process behind the HTTP workers when ``model_placement`` is ``model_service``:
    batches of planes in, scores out, batches of all HTTP workers merged (adaptive batching)."""

    model = MODEL

    def __init__(self) -> None:
        from pneumoscan.model.architectures import configure_tensorflow
        from pneumoscan.model.predictor import Predictor

        logging.getLogger("bentoml._internal.server.http_app").addFilter(_ShedRequestFilter())
        configure_tensorflow(settings.service_intra_op_threads(), settings.tf_inter_op_threads)
        self.predictor = Predictor.from_dir(self.model.path, threshold=settings.threshold)
        self.predictor.warm_up(settings.batch_max_size)
        self.ready = True

    def __is_ready__(self) -> bool:
        return getattr(self, "ready", False)

    @bentoml.api(
        batchable=settings.adaptive_batching,
        # The HTTP workers send gathered batches; merging them may reach this many images.
        max_batch_size=settings.batch_max_size * settings.http_worker_count,
        max_latency_ms=settings.batch_max_latency_ms,
    )
    def infer(self, planes: np.ndarray) -> np.ndarray:
        """(n, 2) for a batch of uint8 (n, 128, 128) planes from ``imaging.load_plane``: calibrated
        P(pneumonia) and the input gate's distance (NaN for a model without a gate)."""
        return self.predictor.score(plane_to_input(planes))

    @bentoml.api
    def explain(self, plane: np.ndarray) -> np.ndarray:
        """Grad-CAM heatmap of P(pneumonia) for one uint8 (128, 128) plane: float32 (h, w) in [0, 1]."""
        return self.predictor.heatmap(plane_to_input(plane))


def _current() -> Pneumoscan:
    return bentoml.get_current_service()


# How long /readyz waits for BentoML's own probe of the model service before answering 503.
READINESS_PROBE_SECONDS = 5.0


def submit_job(folder: str, output: str | None, allowed_roots: list[Path]) -> JobStatus:
    """``POST /jobs``: the folder's job on the queue the workers consume (opened at the first job)."""
    from service.worker.queue import submit

    return submit(folder, output, allowed_roots)


def submit_query(query: DicomwebQuery, output: str | None) -> JobStatus:
    """``POST /jobs`` with a DICOMweb source: the PACS's instances as a job on the same queue."""
    from service.worker.queue import submit_query as submit

    return submit(query, output)


app = create_app(
    get_infer=lambda: _current().batcher,
    get_explain=lambda: _current().backend.explain,
    get_info=lambda: _current().info,
    submit_job=submit_job,
    submit_query=submit_query,
)


@bentoml.asgi_app(app, path="/")
@bentoml.service(
    name="pneumoscan",
    workers=settings.http_worker_count,
    traffic={"timeout": settings.request_timeout_s + 5},
    # pneumoscan writes its own request line (pneumoscan.requests).
    logging={"access": {"enabled": False}},
    **TRACING,
    **https(),
)
class Pneumoscan:
    """Pneumonia screening on chest X-rays. Not a diagnostic device."""

    model = MODEL
    if not settings.model_in_process:
        model_service = bentoml.depends(PneumoniaModel)
    backend: LocalModel | RemoteModel
    batcher: MicroBatcher
    info: ModelInfo

    def __init__(self) -> None:
        _configure_request_log()
        metrics.register()
        metadata = load_metadata(self.model.path)
        if settings.model_in_process:
            from pneumoscan.model.architectures import configure_tensorflow

            configure_tensorflow(settings.service_intra_op_threads(), settings.tf_inter_op_threads)
            self.backend = LocalModel(self.model.path, settings.threshold, settings.batch_max_size)
        else:
            self.backend = RemoteModel(self.model_service, count_retry=metrics.count_model_retry)
        self.batcher = MicroBatcher(
            self.backend.infer,
            max_batch_size=settings.batch_max_size if settings.adaptive_batching else 1,
            latency_budget_s=settings.batch_max_latency_ms / 1000,
            observe_batch=metrics.observe_batch_size,
        )
        decision = decision_for(metadata, settings.threshold, settings.ood_policy)
        result_metrics.register(self.model.path, decision.model_version)
        self.info = ModelInfo(
            decision=decision,
            max_pixels=settings.max_image_pixels,
            max_batch_items=settings.max_batch_items,
            timeout_s=settings.request_timeout_s,
            decode_threads=settings.service_decode_threads(),
            explanations=os.environ.get("KERAS_BACKEND", "tensorflow") == "tensorflow",
            delivery=Delivery.from_settings(settings, OUTBOXES),
            served=ServedModel.of(metadata, decision.threshold, decision.ood_policy),
        )
        # Every HTTP worker runs both; a round takes its outbox's lock, so one worker at a time sends.
        self.delivery_rounds = self.info.delivery.keep_delivering(settings.delivery_interval_s)
        self.audit_forwarder = forwarder_from_settings(settings)
        if self.audit_forwarder is not None:
            self.audit_forwarder.start()


def _access() -> Access:
    return Access(
        keys=KeysFile(settings.keys_path),
        shared_key=settings.api_key.get_secret_value() if settings.api_key is not None else None,
        audit=AuditLog(settings.audit_root, settings.audit_max_bytes) if settings.audit else None,
        default_rate=settings.rate_limit_per_s,
        limiter=RateLimiter(settings.rate_limit_burst),
    )


def _open(path: str) -> bool:
    return is_open(path) and not (settings.protect_metrics and path == "/metrics")


def _add_middleware(service: bentoml.Service) -> None:
    """The first added is the outermost: the client, its scope, its rate and the audit trail are
    checked first, then the in-flight limit, then size."""
    declared = operations(routes()) + ([METRICS] if settings.protect_metrics else [])
    service.add_asgi_middleware(AccessMiddleware, access=_access(), operations=declared, is_open=_open)
    service.add_asgi_middleware(InFlightLimitMiddleware, limit=settings.max_in_flight)
    service.add_asgi_middleware(
        BodyLimitMiddleware,
        max_bytes=settings.max_upload_bytes,
        limits={"/dicomweb/": settings.dicomweb_max_body_bytes},
    )
    service.add_asgi_middleware(ReadinessMiddleware, seconds=READINESS_PROBE_SECONDS)
    service.add_asgi_middleware(RoutingErrorMiddleware)
    service.add_asgi_middleware(metrics.OutboxMetricsMiddleware, boxes=OUTBOXES.by_name())


# bentoml.service made the class a bentoml.Service (mypy does not apply class decorators).
_add_middleware(Pneumoscan)
