"""The HTTP adapter: request bodies -> core decoding -> the model service -> JSON.

Mounted into the BentoML service so that one endpoint can take both a multipart upload and a
raw ``image/*`` body, answer with the project's error bodies, and appear in ``/docs.json``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial

import anyio
import numpy as np
from fastapi import FastAPI, Request
from fhir.resources.R4B.resource import Resource
from fastapi.exceptions import RequestValidationError
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse, Response

from pneumoscan.errors import PneumoscanError
from pneumoscan.dicom import DicomSource
from pneumoscan.fhir import FHIR_JSON, accepts_fhir, diagnostic_report, report_bundle
from pneumoscan.imaging import load_plane_with_source
from pneumoscan.decision import Decision, judge_scores
from pneumoscan.predict import dicom_identifiers
from pneumoscan.schemas import (
    BatchItemError,
    BatchItemResult,
    BatchResponse,
    ErrorInfo,
    ErrorResponse,
    Prediction,
    PredictionResponse,
)
from service.jobs_api import router as jobs_router
from service.errors import (
    BadRequest,
    MissingImage,
    RequestTimeout,
    TooManyImages,
    UnsupportedMediaType,
    error_response,
    outcome_for,
    status_for,
)

RAW_IMAGE_TYPES = frozenset(
    {"image/jpeg", "image/jpg", "image/png", "application/dicom", "application/octet-stream"}
)
MULTIPART = "multipart/form-data"

log = logging.getLogger("pneumoscan.requests")

# uint8 planes (n, 128, 128) -> (n, 2): calibrated P(pneumonia) and the input gate's distance.
InferFn = Callable[[np.ndarray], Awaitable[np.ndarray]]


@dataclass(frozen=True)
class ModelInfo:
    decision: Decision  # the threshold, the input gate's limit and policy, the model version
    max_pixels: int
    max_batch_items: int
    model_batch_size: int
    timeout_s: float
    explanations: bool = True  # Grad-CAM needs Keras' TensorFlow backend

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
        f"Content-Type {kind!r} is not accepted; use image/jpeg, image/png, application/dicom "
        "or multipart/form-data."
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


async def decode_with_source(data: bytes, max_pixels: int) -> tuple[np.ndarray, DicomSource | None]:
    """The core decoder up to the uint8 plane, in a thread (Pillow releases the GIL meanwhile),
    and the UIDs of a DICOM input."""
    return await anyio.to_thread.run_sync(partial(load_plane_with_source, data, max_pixels=max_pixels))


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
    """True when the client asks for FHIR JSON (``Accept: application/fhir+json``)."""
    return accepts_fhir(request.headers.get("accept", ""))


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


def create_app(get_infer: Callable[[], InferFn], get_info: Callable[[], ModelInfo]) -> FastAPI:
    """The FastAPI app; ``get_infer`` and ``get_info`` reach the running BentoML service."""
    app = FastAPI(
        title="pneumoscan",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,  # BentoML serves the merged spec at /docs.json
    )
    error_responses = {
        status: {"model": ErrorResponse} for status in (400, 401, 413, 415, 422, 503, 504)
    }
    image_body = {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "properties": {"image": {"type": "string", "format": "binary"}},
                        "required": ["image"],
                    }
                },
                "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
                "image/png": {"schema": {"type": "string", "format": "binary"}},
                "application/dicom": {"schema": {"type": "string", "format": "binary"}},
            },
        }
    }
    batch_body = {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "properties": {
                            "images": {"type": "array", "items": {"type": "string", "format": "binary"}}
                        },
                        "required": ["images"],
                    }
                }
            },
        }
    }

    @app.exception_handler(PneumoscanError)
    async def pneumoscan_error(request: Request, exc: PneumoscanError) -> JSONResponse:
        return error_response(exc, getattr(request.state, "request_id", None), request.headers.get("accept", ""))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        # Starlette's own refusals (e.g. a malformed multipart body) in the same JSON shape.
        code = "bad_request" if exc.status_code < 500 else "internal_error"
        return JSONResponse({"error": code, "detail": str(exc.detail)}, status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        # "body.folder: String should have at least 1 character", one clause per problem.
        detail = "; ".join(
            f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}" for error in exc.errors()
        )
        return error_response(BadRequest(detail), None, request.headers.get("accept", ""))

    async def run_model(batch: np.ndarray, info: ModelInfo) -> list[Prediction | PneumoscanError]:
        """The result, or the input gate's refusal, per uint8 plane; chunks of at most one model
        batch go out concurrently."""
        infer = get_infer()
        size = info.model_batch_size
        with anyio.fail_after(info.timeout_s):
            outputs = await asyncio.gather(*(infer(batch[i : i + size]) for i in range(0, len(batch), size)))
        scores = np.concatenate([np.asarray(output, dtype=np.float64).reshape(-1, 2) for output in outputs])
        return judge_scores(info.decision, scores)

    @app.post(
        "/predict",
        response_model=PredictionResponse,
        responses={**error_responses, **fhir_alternative("DiagnosticReport")},
        openapi_extra=image_body,
        summary="Score one chest X-ray (multipart field 'image' or a raw image/jpeg|png or application/dicom body)",
    )
    async def predict(request: Request) -> PredictionResponse | Response:
        info = get_info()
        async with request_record(request, "predict", info) as record:
            data = await read_single_image(request)
            record.update(bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
            image, source = await decode_with_source(data, info.max_pixels)
            prediction = (await run_model(image[np.newaxis], info))[0]
            if isinstance(prediction, PneumoscanError):
                raise prediction
        if wants_fhir(request):
            return fhir_json(diagnostic_report(prediction, source=source, request_id=record["request_id"]), record)
        return PredictionResponse(
            **prediction.model_dump(), **dicom_identifiers(source), request_id=record["request_id"]
        )

    @app.post(
        "/predict_batch",
        response_model=BatchResponse,
        responses={**error_responses, **fhir_alternative("Bundle (collection)")},
        openapi_extra=batch_body,
        summary="Score several X-rays (repeated multipart field 'images'); results in upload order",
    )
    async def predict_batch(request: Request) -> BatchResponse | Response:
        info = get_info()
        async with request_record(request, "predict_batch", info) as record:
            items = await read_batch_images(request, info.max_batch_items)
            record.update(
                images=len(items),
                bytes=[len(data or b"") for _, data in items],
                sha256=[hashlib.sha256(data).hexdigest() if data is not None else None for _, data in items],
            )
            outcomes: list[np.ndarray | Prediction | PneumoscanError] = [
                MissingImage("This 'images' part is not a file.") for _ in items
            ]
            sources: list[DicomSource | None] = [None] * len(items)

            async def decode_item(index: int, data: bytes) -> None:
                try:
                    outcomes[index], sources[index] = await decode_with_source(data, info.max_pixels)
                except PneumoscanError as exc:
                    outcomes[index] = exc

            async with anyio.create_task_group() as group:
                for index, (_, data) in enumerate(items):
                    if data is not None:
                        group.start_soon(decode_item, index, data)
            good = [index for index, outcome in enumerate(outcomes) if isinstance(outcome, np.ndarray)]
            judged = await run_model(np.stack([outcomes[i] for i in good]), info) if good else []
            for index, result in zip(good, judged):
                outcomes[index] = result
            record["failed"] = sum(isinstance(outcome, PneumoscanError) for outcome in outcomes)
        if wants_fhir(request):
            entries = [
                outcome_for(outcome) if isinstance(outcome, PneumoscanError) else diagnostic_report(
                    outcome, source=sources[index], request_id=uuid.uuid4().hex,
                )
                for index, outcome in enumerate(outcomes)
            ]
            return fhir_json(report_bundle(entries, request_id=record["request_id"]), record)
        results: list[BatchItemResult | BatchItemError] = []
        for index, (filename, _) in enumerate(items):
            outcome = outcomes[index]
            if isinstance(outcome, PneumoscanError):
                results.append(BatchItemError(filename=filename, error=ErrorInfo(**outcome.to_dict())))
            else:
                results.append(
                    BatchItemResult(**outcome.model_dump(), **dicom_identifiers(sources[index]), filename=filename)
                )
        return BatchResponse(request_id=record["request_id"], results=results)

    app.include_router(jobs_router)
    return app
