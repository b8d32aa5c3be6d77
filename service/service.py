"""The BentoML service: ``bentoml serve`` (or ``make run``) starts it on port 3000.

Two services, as in BentoML's batching examples: ``PneumoniaModel`` owns the model and merges
concurrent calls into batches (adaptive batching); ``Pneumoscan`` is the public HTTP service that
reads uploads, decodes them with the core pipeline in threads, and calls the model service.
"""

from __future__ import annotations

import logging
import os
import sys

import aiohttp
import bentoml
import numpy as np
from bentoml.exceptions import ServiceUnavailable

from pneumoscan import IMAGE_SIZE
from pneumoscan.imaging import plane_to_input
from pneumoscan.decision import decision_for
from pneumoscan.model import load_metadata
from pneumoscan.settings import get_settings
from service.errors import Overloaded
from service.app import create_app
from service.http import ModelInfo
from service.middleware import ApiKeyMiddleware, BodyLimitMiddleware, InFlightLimitMiddleware, ReadinessMiddleware

settings = get_settings()
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


@bentoml.service(
    name="pneumonia_model",
    workers=settings.model_workers,
    resources={"gpu": 1} if settings.use_gpu else {"cpu": "1"},
    traffic={"timeout": settings.request_timeout_s + 5},
)
class PneumoniaModel:
    """The model behind the HTTP service: a batch of preprocessed images in, P(pneumonia) out."""

    model = MODEL

    def __init__(self) -> None:
        from pneumoscan.model import Predictor, configure_tensorflow

        logging.getLogger("bentoml._internal.server.http_app").addFilter(_ShedRequestFilter())
        configure_tensorflow(settings.tf_intra_op_threads, settings.tf_inter_op_threads)
        self.predictor = Predictor.from_dir(self.model.path, threshold=settings.threshold)
        # Compile for every batch size the model will see before reporting ready: one trace under
        # TensorFlow, one per power of two (the padded sizes) under Keras' JAX backend.
        size = 1
        while size < settings.batch_max_size * 2:
            self.infer(np.zeros((min(size, settings.batch_max_size), *IMAGE_SIZE), dtype=np.uint8))
            size *= 2
        self.ready = True

    def __is_ready__(self) -> bool:
        return getattr(self, "ready", False)

    @bentoml.api(
        batchable=settings.adaptive_batching,
        max_batch_size=settings.batch_max_size,
        max_latency_ms=settings.batch_max_latency_ms,
    )
    def infer(self, planes: np.ndarray) -> np.ndarray:
        """(n, 2) for a batch of uint8 (n, 128, 128) planes from ``imaging.load_plane``: calibrated
        P(pneumonia) and the input gate's distance (NaN for a model without a gate)."""
        return self.predictor.score(plane_to_input(planes))

    @bentoml.api
    def explain(self, plane: np.ndarray) -> np.ndarray:
        """Grad-CAM heatmap of P(pneumonia) for one uint8 (128, 128) plane: float32 (h, w) in [0, 1]."""
        from pneumoscan.explain import GradCam

        # Built on first use, so start-up does not pay for it; a duplicate from a race is harmless.
        if getattr(self, "grad_cam", None) is None:
            self.grad_cam = GradCam(self.predictor.model)
        return self.grad_cam(plane_to_input(plane))[1]


def _current() -> "Pneumoscan":
    return bentoml.get_current_service()


# BentoML's client for a dependency can reuse a pooled connection that the model service has
# just closed (bentoml/BentoML#4971, fixed upstream only by a pending pull request): aiohttp then
# raises a ClientConnectionError, or RuntimeError("Connection closed.") while reading the body.
# Inference is idempotent, so such failures are retried on a fresh connection.
CONNECTION_RETRIES = 2
# How long /readyz waits for BentoML's own probe of the model service before answering 503.
READINESS_PROBE_SECONDS = 5.0


async def _infer(batch: np.ndarray) -> np.ndarray:
    return await _call_model("infer", batch)


async def _explain(plane: np.ndarray) -> np.ndarray:
    return await _call_model("explain", plane)


async def _call_model(method: str, payload: np.ndarray) -> np.ndarray:
    retries_left = CONNECTION_RETRIES
    while True:
        try:
            return await getattr(_current().model_service.to_async, method)(payload)
        except ServiceUnavailable as exc:
            raise Overloaded("The model queue is full; retry shortly.") from exc
        except (aiohttp.ClientConnectionError, RuntimeError) as exc:
            if retries_left == 0:
                raise Overloaded("The model service is unreachable; retry shortly.") from exc
            retries_left -= 1


app = create_app(get_infer=lambda: _infer, get_explain=lambda: _explain, get_info=lambda: _current().info)


@bentoml.asgi_app(app, path="/")
@bentoml.service(
    name="pneumoscan",
    workers=settings.http_workers,
    traffic={"timeout": settings.request_timeout_s + 5},
)
class Pneumoscan:
    """Pneumonia screening on chest X-rays. Not a diagnostic device."""

    model = MODEL
    model_service = bentoml.depends(PneumoniaModel)

    def __init__(self) -> None:
        _configure_request_log()
        metadata = load_metadata(self.model.path)
        self.info = ModelInfo(
            decision=decision_for(metadata, settings.threshold, settings.ood_policy),
            max_pixels=settings.max_image_pixels,
            max_batch_items=settings.max_batch_items,
            model_batch_size=settings.batch_max_size,
            timeout_s=settings.request_timeout_s,
            explanations=os.environ.get("KERAS_BACKEND", "tensorflow") == "tensorflow",
        )


# The first added is the outermost: the key is checked first, then the in-flight limit, then size.
if settings.api_key is not None:
    Pneumoscan.add_asgi_middleware(ApiKeyMiddleware, api_key=settings.api_key.get_secret_value())
Pneumoscan.add_asgi_middleware(InFlightLimitMiddleware, limit=settings.max_in_flight)
Pneumoscan.add_asgi_middleware(BodyLimitMiddleware, max_bytes=settings.max_upload_bytes)
Pneumoscan.add_asgi_middleware(ReadinessMiddleware, seconds=READINESS_PROBE_SECONDS)
