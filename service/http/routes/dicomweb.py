"""``POST /dicomweb/studies`` and ``/dicomweb/studies/{study}``: STOW-RS in. Each instance is
filed in the DICOM node's store, as a C-STORE to the node would file it: ``pneumoscan dicom-node``
queues each study once it is quiet, and its results go back as the node's do."""

from __future__ import annotations

from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Request
from fastapi import Path as PathParam
from starlette.responses import JSONResponse, Response

from pneumoscan.access.clients import Scope
from pneumoscan.dicom.store import DicomStore, is_uid
from pneumoscan.dicom.stow import StowReader, StowRequestError, boundary_of, store_response, store_status
from pneumoscan.reports.fhir import acceptable
from pneumoscan.schemas import ErrorResponse
from pneumoscan.settings import get_settings
from service.http.access import audited, scoped
from service.http.errors import BadRequest, NotAcceptable, UnsupportedMediaType

router = APIRouter()
DICOM_JSON = "application/dicom+json"
# Warning headers name at most this many failed parts (the body lists every one).
WARNINGS = 20
STORE_DESCRIPTION = (
    "A DICOM JSON Store Instances response: ReferencedSOPSequence (00081199) for the instances stored, "
    "FailedSOPSequence (00081198) with a FailureReason for the others, and one `Warning` header per failed "
    "part saying why"
)
STORE_CONTENT = {DICOM_JSON: {"schema": {"type": "object"}}}
RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": f"Every instance stored. {STORE_DESCRIPTION}", "content": STORE_CONTENT},
    202: {"description": f"Some instances stored. {STORE_DESCRIPTION}", "content": STORE_CONTENT},
    409: {"description": f"No instance stored. {STORE_DESCRIPTION}", "content": STORE_CONTENT},
    **{status: {"model": ErrorResponse} for status in (400, 401, 403, 406, 413, 415)},
}
BODY = {
    "requestBody": {
        "required": True,
        "content": {
            'multipart/related; type="application/dicom"': {
                "schema": {"type": "string", "format": "binary", "description": "DICOM Part 10 instances"}
            }
        },
    }
}
StudyUid = Annotated[str, PathParam(description="The Study Instance UID every instance must belong to.")]


async def _store(request: Request, study: str | None) -> Response:
    accept = request.headers.get("accept", "")
    if not acceptable(accept, DICOM_JSON) and not acceptable(accept, "application/json"):
        raise NotAcceptable(f"The store response is {DICOM_JSON}; the Accept header allows neither it nor JSON.")
    if study is not None and not is_uid(study):
        raise BadRequest(f"{study[:80]!r} is not a Study Instance UID.")
    try:
        boundary = boundary_of(request.headers.get("content-type"))
    except StowRequestError as exc:
        raise UnsupportedMediaType(exc.detail) from exc
    settings = get_settings()
    reader = StowReader(DicomStore(settings.dicom_root), boundary, study, settings.max_upload_bytes)
    try:
        async for chunk in request.stream():
            # Each complete part is checked and written (fsynced) within the chunk that ends it.
            await anyio.to_thread.run_sync(reader.feed, chunk)
        parts = reader.close()
    except StowRequestError as exc:
        raise BadRequest(exc.detail) from exc
    audited(request).add(
        studies=[part.study for part in parts if part.stored],
        instances=[part.sop_instance for part in parts],
        patients=[part.patient for part in parts],
    )
    warnings = [f'299 pneumoscan "{part.detail}"' for part in parts if part.detail][:WARNINGS]
    response = JSONResponse(store_response(parts), status_code=store_status(parts), media_type=DICOM_JSON)
    for warning in warnings:
        response.headers.append("Warning", warning.replace("\n", " "))
    return response


@router.post(
    "/dicomweb/studies",
    response_class=Response,
    responses=RESPONSES,
    summary="STOW-RS: store instances for scoring (multipart/related of DICOM Part 10 files)",
    **scoped(Scope.SCORE, "stow", BODY),
)
async def stow(request: Request) -> Response:
    """Each instance is checked (a CR or DX radiograph, in a transfer syntax the decoders read) and
    filed by study; the DICOM node scores each study once it is quiet and sends its results back."""
    return await _store(request, None)


@router.post(
    "/dicomweb/studies/{study}",
    response_class=Response,
    responses=RESPONSES,
    summary="STOW-RS: store instances of one study (others fail with reason 0xA901)",
    **scoped(Scope.SCORE, "stow", BODY),
)
async def stow_study(study: StudyUid, request: Request) -> Response:
    return await _store(request, study)
