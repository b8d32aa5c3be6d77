"""What every HTTP route shares: reading uploads, decoding them with the core, calling the model
service, timing and logging the request, and the OpenAPI pieces of an image upload.

The routers (``predict_api``, ``explain_api``, ``jobs_api``) are assembled in ``service.http.app``;
the running service reaches them through ``app.state`` (``model_info``, ``model_call``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio
import numpy as np
from fastapi import BackgroundTasks, Request
from fhir.resources.R4B.resource import Resource
from starlette.datastructures import UploadFile
from starlette.responses import Response

from pneumoscan.delivery.destinations import Delivery
from pneumoscan.dicom.decode import DicomSource
from pneumoscan.dicom.query import DicomwebQuery
from pneumoscan.errors import PneumoscanError
from pneumoscan.imaging.preprocess import decode, resize_plane
from pneumoscan.model.decision import Decision, judge_scores
from pneumoscan.reports.fhir import FHIR_JSON, acceptable, accepts_fhir
from pneumoscan.result import Result
from pneumoscan.schemas import ErrorResponse, JobStatus, Prediction, ServedModel
from service.http.errors import (
    MissingImage,
    NotAcceptable,
    RequestTimeout,
    TooManyImages,
    UnsupportedMediaType,
    status_for,
)

RAW_IMAGE_TYPES = frozenset({"image/jpeg", "image/jpg", "image/png", "application/dicom", "application/octet-stream"})
MULTIPART = "multipart/form-data"

log = logging.getLogger("pneumoscan.requests")

# uint8 planes (n, 128, 128) -> (n, 2): calibrated P(pneumonia) and the input gate's distance.
InferFn = Callable[[np.ndarray], Awaitable[np.ndarray]]
# (folder, output folder or None, the input roots allowed) -> the job's status: the queue's submit.
SubmitJob = Callable[[str, str | None, list[Path]], JobStatus]
# POST /jobs with a DICOMweb source: the query and the output root (None: PNEUMOSCAN_JOBS_DIR).
SubmitQuery = Callable[[DicomwebQuery, str | None], JobStatus]


@dataclass(frozen=True)
class ModelInfo:
    decision: Decision  # the threshold, the input gate's limit and policy, the model version
    max_pixels: int
    max_batch_items: int
    timeout_s: float
    decode_threads: int = 1  # threads decoding uploads in this process
    explanations: bool = True  # Grad-CAM needs Keras' TensorFlow backend
    delivery: Delivery = field(default_factory=Delivery)  # where results go (HL7, FHIR), each through its outbox
    served: ServedModel | None = None  # GET /version

    @property
    def model_version(self) -> str:
        return self.decision.model_version


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def read_single_image(request: Request) -> bytes:
    """The image of a ``/predict`` request: the multipart field ``image`` or the raw body."""
    kind = media_type(request)
    if kind == MULTIPART:
        async with request.form(max_files=1, max_fields=16) as form:
            upload = form.get("image")
            if not isinstance(upload, UploadFile):
                raise MissingImage("The multipart form has no file field named 'image'.")
            return await upload.read()
    if kind in RAW_IMAGE_TYPES:
        return await request.body()
    if not kind:
        raise MissingImage(
            "No image: send a raw body with Content-Type image/jpeg, image/png or application/dicom, "
            "or a multipart form with a file field named 'image'."
        )
    raise UnsupportedMediaType(
        f"Content-Type {kind!r} is not accepted; use image/jpeg, image/png, application/dicom or multipart/form-data."
    )


async def read_batch_images(request: Request, max_items: int) -> list[tuple[str | None, bytes | None]]:
    """(filename, bytes) for each ``images`` part in order; bytes is None for a non-file part."""
    if media_type(request) != MULTIPART:
        raise UnsupportedMediaType("POST /predict_batch takes multipart/form-data with repeated 'images' fields.")
    # One file over the limit is enough to tell the client it sent too many.
    async with request.form(max_files=max_items + 1, max_fields=max_items + 16) as form:
        parts = form.getlist("images")
        if not parts:
            raise MissingImage("The multipart form has no file fields named 'images'.")
        if len(parts) > max_items:
            raise TooManyImages(f"At most {max_items} images per request; send the rest in another request.")
        items: list[tuple[str | None, bytes | None]] = []
        for part in parts:
            if isinstance(part, UploadFile):
                items.append((part.filename, await part.read()))
            else:
                items.append((None, None))
        return items


async def in_decode_thread(request: Request, function: Callable, *args):
    """``function(*args)`` in one of this process's decoding threads (Pillow and pydicom release
    the GIL meanwhile); ``ModelInfo.decode_threads`` of them, not anyio's default of 40, so
    decoding never starves the model of cores."""
    state = request.app.state
    limiter = getattr(state, "decode_limiter", None)
    if limiter is None:
        limiter = state.decode_limiter = anyio.CapacityLimiter(model_info(request).decode_threads)
    return await anyio.to_thread.run_sync(function, *args, limiter=limiter)


async def digests(request: Request, uploads: Sequence[bytes | None]) -> list[str | None]:
    """The sha256 of each upload (None for a missing one), in a decoding thread: hashing megabytes
    is work the event loop should not do."""
    return await in_decode_thread(
        request, lambda: [hashlib.sha256(data).hexdigest() if data is not None else None for data in uploads]
    )


async def decode_with_source(request: Request, data: bytes) -> tuple[np.ndarray, DicomSource | None]:
    """The core decoder up to the uint8 plane, and the UIDs of a DICOM input."""
    max_pixels = model_info(request).max_pixels

    def plane_and_source() -> tuple[np.ndarray, DicomSource | None]:
        decoded = decode(data, max_pixels=max_pixels)
        return resize_plane(decoded.image), decoded.dicom

    return await in_decode_thread(request, plane_and_source)


def fhir_alternative(resource: str) -> dict:
    """OpenAPI for a 200 that is a FHIR R4 ``resource`` when the client accepts FHIR JSON."""
    return {
        200: {
            "description": f"The result; a FHIR R4 {resource} with Accept: {FHIR_JSON}",
            "content": {FHIR_JSON: {"schema": {"type": "object", "description": f"FHIR R4 {resource}"}}},
        }
    }


def fhir_json(resource: Resource, record: dict) -> Response:
    """A FHIR resource as the response body, with the request id that the log line carries."""
    return Response(resource.json(), media_type=FHIR_JSON, headers={"X-Request-ID": record["request_id"]})


def wants_fhir(request: Request) -> bool:
    """True when the client asks for FHIR JSON (``Accept: application/fhir+json``, q above 0);
    ``NotAcceptable`` when its Accept header allows neither FHIR JSON nor JSON."""
    accept = request.headers.get("accept", "")
    if accepts_fhir(accept):
        return True
    if not acceptable(accept, "application/json"):
        raise NotAcceptable(
            "This endpoint answers application/json or application/fhir+json; the Accept header allows neither."
        )
    return False


@asynccontextmanager
async def request_record(request: Request, event: str, info: ModelInfo) -> AsyncIterator[dict]:
    """Times a request and logs it as one JSON line; timeouts become ``RequestTimeout``."""
    started = time.perf_counter()
    request_id = request.state.request_id = uuid.uuid4().hex
    record: dict = {"event": event, "request_id": request_id, "model_version": info.model_version}
    try:
        yield record
        record["status"] = 200
    except PneumoscanError as exc:
        record.update(status=int(status_for(exc)), error=exc.code)
        raise
    except TimeoutError as exc:
        record.update(status=504, error=RequestTimeout.code)
        raise RequestTimeout(f"No result within {info.timeout_s:g} s.") from exc
    finally:
        record["latency_ms"] = round((time.perf_counter() - started) * 1000, 1)
        log.info(json.dumps(record, separators=(",", ":")))


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse} for status in (400, 401, 406, 413, 415, 422, 503, 504)
}
BINARY = {"type": "string", "format": "binary"}


def multipart_files(field: str, many: bool = False) -> dict:
    """The OpenAPI schema of a multipart form with one (or a repeated) file field."""
    schema = {"type": "array", "items": BINARY} if many else BINARY
    return {"schema": {"type": "object", "properties": {field: schema}, "required": [field]}}


IMAGE_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": multipart_files("image"),
            "image/jpeg": {"schema": BINARY},
            "image/png": {"schema": BINARY},
            "application/dicom": {"schema": BINARY},
        },
    }
}


def model_info(request: Request) -> ModelInfo:
    """The running service's model facts (``create_app``'s ``get_info``)."""
    return request.app.state.get_info()


def model_call(request: Request, name: str = "infer"):
    """A call into the model service: ``infer`` (scores) or ``explain`` (a Grad-CAM heatmap)."""
    return getattr(request.app.state, f"get_{name}")()


async def score_planes(request: Request, batch: np.ndarray, info: ModelInfo) -> Sequence[Prediction | PneumoscanError]:
    """The result, or the input gate's refusal, per uint8 plane (the batcher splits a request
    larger than one model batch)."""
    with anyio.fail_after(info.timeout_s):
        scores = await model_call(request)(batch)
    return judge_scores(info.decision, np.asarray(scores, dtype=np.float64).reshape(-1, 2))


def send_results(info: ModelInfo, results: list[Result], issued: datetime, background: BackgroundTasks) -> None:
    """Queue each result on the routes that are set (an ORU^R01 for an upload with patient
    context, a report for the FHIR server, issued at ``issued`` as in the response), and deliver
    after the response has gone out (the outboxes keep what fails). Each goes out once per
    ``Result.report_id``."""
    routes = info.delivery.queue(results, issued)
    if routes:
        background.add_task(info.delivery.deliver, routes)  # Starlette runs it in a thread
