"""Reviewing a finished job: its input images, and readers' reviews of its results.

``GET /jobs/{job_id}/images/{file}`` serves an input file (only one its manifest lists, only from
inside its input folder and the input roots); ``GET``/``POST /jobs/{job_id}/reviews`` read and
append reviews (``pneumoscan.jobs.reviews``: append-only, the latest review per file wins);
``GET /jobs/{job_id}/reviews.csv`` is the ``file,label`` CSV that ``pneumoscan validate`` and
``calibrate`` read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
from fastapi import APIRouter, BackgroundTasks, Request
from pydantic import BaseModel, Field
from starlette.responses import FileResponse, Response

from pneumoscan.access.clients import Scope
from pneumoscan.errors import ResultNotFound
from pneumoscan.jobs.dicom_outputs import write_review
from pneumoscan.jobs.folder import load_job
from pneumoscan.jobs.rescore import record_review
from pneumoscan.jobs.results import finished_results, read_results
from pneumoscan.jobs.reviews import (
    Agreement,
    Review,
    Truth,
    Verdict,
    agreement,
    input_file,
    labels_csv,
    latest_reviews,
    make_review,
    read_reviews,
)
from pneumoscan.reports.verification import Verification
from pneumoscan.settings import get_settings
from service.http.access import audited, scoped
from service.http.context import model_info
from service.http.errors import BadRequest
from service.http.routes.jobs import ERRORS, JobId, find_job

router = APIRouter()
MEDIA_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".dcm": "application/dicom"}
FINISHED_ERRORS: dict[int | str, dict[str, Any]] = {**ERRORS, 409: ERRORS[404]}


@router.get(
    "/jobs/{job_id}/images/{file:path}",
    response_class=FileResponse,
    responses={
        **ERRORS,
        200: {
            "description": "The input file as it is",
            "content": {media: {} for media in dict.fromkeys(MEDIA_TYPES.values())},
        },
    },
    summary="One input file of a job (a path results.csv lists), for review",
    **scoped(Scope.REVIEW, "image.read"),
)
async def get_job_image(job_id: JobId, file: str, request: Request) -> FileResponse:
    """The file as the job read it: JPEG, PNG or DICOM. 404 ``result_not_found`` for a file the
    job's manifest does not list; 403 ``folder_not_allowed`` for one that resolves (symlinks
    followed) outside the job's input folder or outside ``PNEUMOSCAN_INPUT_ROOTS`` (or while that
    is unset)."""
    audited(request).add(job=job_id, files=[file])

    def locate() -> Path:
        job_dir = find_job(job_id)
        return input_file(job_dir, Path(load_job(job_dir).input_folder), file, get_settings().allowed_input_roots)

    path = await anyio.to_thread.run_sync(locate)
    media = MEDIA_TYPES.get(path.suffix.lower(), "application/octet-stream")
    return FileResponse(path, media_type=media, headers={"Cache-Control": "no-store"})


class ReviewRequest(BaseModel):
    file: str = Field(min_length=1, description="The file, as results.csv's path column names it.")
    reader: str = Field(min_length=1, max_length=100, description="The reader's name, stored with the review.")
    verdict: Verdict | None = Field(default=None, description="agree or disagree with the model's answer.")
    truth: Truth | None = Field(default=None, description="What the image shows; wins over the verdict's implication.")


class Reviews(BaseModel):
    reviews: list[Review] = Field(description="Every review, oldest first.")
    latest: list[Review] = Field(description="The latest review of each reviewed file: the one that counts.")
    agreement: Agreement


@router.get(
    "/jobs/{job_id}/reviews",
    response_model=Reviews,
    responses=FINISHED_ERRORS,
    summary="A finished job's reviews and the reader-vs-model agreement",
    **scoped(Scope.REVIEW, "review.list"),
)
async def get_reviews(job_id: JobId, request: Request) -> Reviews:
    audited(request).add(job=job_id, whole_job=True)

    def load() -> Reviews:
        job_dir = find_job(job_id)
        results = list(read_results(job_dir))
        everything = read_reviews(job_dir)
        latest = latest_reviews(everything)
        return Reviews(reviews=everything, latest=list(latest.values()), agreement=agreement(results, latest))

    return await anyio.to_thread.run_sync(load)


@router.post(
    "/jobs/{job_id}/reviews",
    response_model=Review,
    status_code=201,
    responses=FINISHED_ERRORS,
    summary="Record a reader's review of one file of a finished job (append-only)",
    **scoped(Scope.REVIEW, "review.write"),
)
async def post_review(
    job_id: JobId, request: ReviewRequest, http_request: Request, background: BackgroundTasks
) -> Review:
    """Agree or disagree with the model's answer for the file, or state its truth (NORMAL,
    PNEUMONIA, not_a_chest_xray), or both. Stored with the reader's name, the time and the model
    version; earlier reviews are kept, and the latest review of a file is the one that counts.
    The result is sent again to the destinations of PNEUMOSCAN_REVIEW_DESTINATIONS: final when the
    reader agrees, corrected when not (a later review sends the next version)."""
    entry = audited(http_request)
    entry.add(job=job_id, files=[request.file])
    delivery = model_info(http_request).delivery.only(get_settings().review_destination_names)

    def store() -> Review:
        job_dir = find_job(job_id)
        result = next((result for result in read_results(job_dir) if result.file == request.file), None)
        if result is None:
            raise ResultNotFound("The job's results.csv has no such file.")
        entry.add(results=[result])
        spec = load_job(job_dir)
        try:
            review = make_review(result, spec.model_version, request.reader, request.verdict, request.truth)
        except ValueError as exc:
            raise BadRequest(str(exc)) from exc
        stored, sequence = record_review(job_dir, review)  # numbered after the file's reviews and corrections
        verification = Verification.of(result, stored.verdict, stored.truth, stored.reader, stored.time, sequence)
        if verification is None:
            return stored
        if routes := delivery.queue_verification(result, verification):
            background.add_task(delivery.deliver, routes)
        settings = get_settings()
        if spec.dicom_outbox is not None and "dicom" in settings.review_destination_names:
            # The DICOM node sends it, as it sends the job's other results.
            source = Path(spec.input_folder) / stored.file
            outbox = Path(spec.dicom_outbox)
            write_review(outbox, source, result, stored.model_version, verification, settings.review_organization)
        return stored

    return await anyio.to_thread.run_sync(store)


@router.get(
    "/jobs/{job_id}/reviews.csv",
    response_class=Response,
    responses={
        **FINISHED_ERRORS,
        200: {"description": "file,label", "content": {"text/csv": {"schema": {"type": "string"}}}},
    },
    summary="The readers' labels as the file,label CSV that `pneumoscan validate` and `calibrate` read",
    **scoped(Scope.REVIEW, "review.csv"),
)
async def get_reviews_csv(job_id: JobId, request: Request) -> Response:
    """One row per file whose latest review says NORMAL or PNEUMONIA, ``file`` relative to the
    job's input folder; files found not to be chest X-rays are left out."""
    audited(request).add(job=job_id, whole_job=True)

    def build() -> str:
        job_dir = find_job(job_id)
        finished_results(job_dir)
        return labels_csv(latest_reviews(read_reviews(job_dir)))

    text = await anyio.to_thread.run_sync(build)
    return Response(
        text,
        media_type="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{job_id}-reviews.csv"', "Cache-Control": "no-store"},
    )
