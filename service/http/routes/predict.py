"""``POST /predict`` and ``POST /predict_batch``: X-rays in, results (JSON or FHIR) out."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import anyio
import numpy as np
from fastapi import APIRouter, BackgroundTasks, Request
from starlette.responses import Response

from pneumoscan.access.clients import Scope
from pneumoscan.dicom.decode import DicomSource
from pneumoscan.errors import PneumoscanError
from pneumoscan.reports.fhir import collection_bundle, result_entries
from pneumoscan.result import Result
from pneumoscan.schemas import BatchResponse, Prediction, PredictionResponse
from service.http.access import audited, scoped
from service.http.context import (
    ERROR_RESPONSES,
    IMAGE_BODY,
    decode_with_source,
    digests,
    fhir_alternative,
    fhir_json,
    model_info,
    multipart_files,
    read_batch_images,
    read_single_image,
    request_record,
    score_planes,
    send_results,
    wants_fhir,
)
from service.http.errors import MissingImage, outcome_for
from service.result_metrics import observe_result

router = APIRouter()
BATCH_BODY = {
    "requestBody": {"required": True, "content": {"multipart/form-data": multipart_files("images", many=True)}}
}


@router.post(
    "/predict",
    response_model=PredictionResponse,
    responses={
        **ERROR_RESPONSES,
        **fhir_alternative("Bundle (collection): the DiagnosticReport, Observation, Device and Provenance"),
    },
    **scoped(Scope.SCORE, "predict", IMAGE_BODY),
    summary="Score one chest X-ray (multipart field 'image' or a raw image/jpeg|png or application/dicom body)",
)
async def predict(request: Request, background: BackgroundTasks) -> PredictionResponse | Response:
    info = model_info(request)
    async with request_record(request, "predict", info) as record:
        fhir = wants_fhir(request)
        data = await read_single_image(request)
        [sha256] = await digests(request, [data])
        record.update(bytes=len(data), sha256=sha256)
        try:
            image, source = await decode_with_source(request, data)
            prediction = (await score_planes(request, image[np.newaxis], info))[0]
            if isinstance(prediction, PneumoscanError):
                raise prediction
        except PneumoscanError as exc:
            observe_result(Result(error=exc), info.model_version)
            raise
        result = Result(prediction=prediction, sha256=sha256 or "", dicom=source)
        audited(request).add(results=[result])
        observe_result(result, info.model_version)
        issued = datetime.now(UTC)
        send_results(info, [result], issued, background)
    if fhir:
        entries = result_entries(result, report_id=result.report_id, issued=issued)
        return fhir_json(collection_bundle(entries, bundle_id=record["request_id"]), record)
    return result.response(record["request_id"])


@router.post(
    "/predict_batch",
    response_model=BatchResponse,
    responses={
        **ERROR_RESPONSES,
        **fhir_alternative(
            "Bundle (collection): each upload's resources in upload order, an OperationOutcome for a refused one"
        ),
    },
    **scoped(Scope.SCORE, "predict_batch", BATCH_BODY),
    summary="Score several X-rays (repeated multipart field 'images'); results in upload order",
)
async def predict_batch(request: Request, background: BackgroundTasks) -> BatchResponse | Response:
    info = model_info(request)
    async with request_record(request, "predict_batch", info) as record:
        fhir = wants_fhir(request)
        items = await read_batch_images(request, info.max_batch_items)
        hashes = await digests(request, [data for _, data in items])
        record.update(images=len(items), bytes=[len(data or b"") for _, data in items], sha256=hashes)
        outcomes: list[Prediction | PneumoscanError] = [
            MissingImage("This 'images' part is not a file.") for _ in items
        ]
        sources: list[DicomSource | None] = [None] * len(items)

        planes: dict[int, np.ndarray] = {}

        async def decode_item(index: int, data: bytes) -> None:
            try:
                planes[index], sources[index] = await decode_with_source(request, data)
            except PneumoscanError as exc:
                outcomes[index] = exc

        async with anyio.create_task_group() as group:
            for index, (_, data) in enumerate(items):
                if data is not None:
                    group.start_soon(decode_item, index, data)
        good = sorted(planes)
        judged = await score_planes(request, np.stack([planes[i] for i in good]), info) if good else []
        for index, result in zip(good, judged, strict=False):
            outcomes[index] = result
        results = [
            Result.of(outcome, file=filename, sha256=hashes[index] or "", dicom=sources[index])
            for index, (outcome, (filename, _)) in enumerate(zip(outcomes, items, strict=False))
        ]
        audited(request).add(results=results)
        record["failed"] = sum(not result.ok for result in results)
        for each in results:
            observe_result(each, info.model_version)
        issued = datetime.now(UTC)
        send_results(info, results, issued, background)
    if fhir:
        # A scored image's report is its own (the same image twice is one report); each refused
        # upload gets an OperationOutcome of its own.
        entries = [
            entry
            for result in results
            for entry in result_entries(
                result,
                report_id=result.report_id if result.ok else str(uuid.uuid4()),
                issued=issued,
                outcome=outcome_for,
            )
        ]
        return fhir_json(collection_bundle(entries, bundle_id=record["request_id"]), record)
    return BatchResponse(request_id=record["request_id"], results=[result.batch_item() for result in results])
