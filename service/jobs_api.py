"""``POST /jobs``, ``GET /jobs``, ``GET /jobs/{job_id}``, its ``/results`` and ``/summary.png``:
batch scoring of server-side folders over HTTP."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import anyio
from fastapi import APIRouter, Path as PathParam, Request
from pydantic import BaseModel, Field
from starlette.responses import FileResponse, Response, StreamingResponse

from pneumoscan.fhir import FHIR_JSON, FHIR_NDJSON, accepts
from pneumoscan.schemas import ErrorResponse
from pneumoscan.settings import get_settings
from pneumoscan.errors import FolderNotAllowed, JobError, ResultNotFound
from pneumoscan.jobs.folder import PLOT_FILE
from pneumoscan.jobs.folder import find_job as find_job_in
from pneumoscan.jobs.results import MEDIA_TYPES, export, finished_results, job_status, list_jobs
from pneumoscan.schemas import JobStatus

router = APIRouter()


def find_job(job_id: str) -> Path:
    return find_job_in(get_settings().jobs_root, job_id)
ERRORS = {status: {"model": ErrorResponse} for status in (400, 401, 403, 404, 503)}
JobId = Annotated[str, PathParam(pattern=r"^[0-9a-f]{16}$")]


class JobRequest(BaseModel):
    folder: str = Field(min_length=1, description="A folder under one of PNEUMOSCAN_INPUT_ROOTS, as the server sees it.")
    output: str | None = Field(
        default=None, description="Output root under PNEUMOSCAN_JOBS_DIR or an input root (default: the former)."
    )


class JobCreated(BaseModel):
    job_id: str
    state: str


def _check_output(output: str | None, allowed_roots: list[Path]) -> str | None:
    if output is None:
        return None
    try:
        resolved = Path(output).resolve()
    except (OSError, RuntimeError, ValueError) as exc:  # ValueError: a NUL byte in the path
        raise FolderNotAllowed(f"Output {output} is not a usable path.") from exc
    permitted = [get_settings().jobs_root.resolve(), *allowed_roots]
    if not any(resolved.is_relative_to(root) for root in permitted):
        raise FolderNotAllowed(f"Output {output} is outside PNEUMOSCAN_JOBS_DIR and the input roots.")
    return str(resolved)


@router.post("/jobs", response_model=JobCreated, status_code=202, responses=ERRORS,
             summary="Score every X-ray in a server-side folder through the queue")
async def create_job(request: JobRequest) -> JobCreated:
    from service.worker import submit

    roots = get_settings().allowed_input_roots
    if roots is None:
        raise FolderNotAllowed(
            "Batch jobs over HTTP are disabled: the operator must set PNEUMOSCAN_INPUT_ROOTS "
            "to the folders this service may read."
        )
    output = _check_output(request.output, roots)
    try:
        status = await anyio.to_thread.run_sync(submit, request.folder, output, roots)
    except OSError as exc:
        raise JobError(f"Cannot create the job's output folder: {exc.strerror or exc}") from exc
    return JobCreated(job_id=status.job_id, state=status.state)


class JobList(BaseModel):
    jobs: list[JobStatus] = Field(description="Every known job, newest first.")


@router.get("/jobs", response_model=JobList, responses=ERRORS, summary="Every known batch job, newest first")
async def list_all_jobs() -> JobList:
    return JobList(jobs=await anyio.to_thread.run_sync(list_jobs, get_settings().jobs_root))


@router.get("/jobs/{job_id}", response_model=JobStatus, responses=ERRORS, summary="Progress of a batch job")
async def get_job(job_id: JobId) -> JobStatus:
    return await anyio.to_thread.run_sync(lambda: job_status(find_job(job_id)))


RESULTS_CONTENT = {
    "text/csv": {"schema": {"type": "string", "description": "results.csv, one row per file"}},
    FHIR_JSON: {"schema": {"type": "object", "description": "FHIR R4 Bundle (collection), one entry per row"}},
    FHIR_NDJSON: {"schema": {"type": "string", "description": "FHIR NDJSON, one resource per row"}},
}


@router.get(
    "/jobs/{job_id}/results", response_class=StreamingResponse,
    responses={**ERRORS, 409: {"model": ErrorResponse}, 200: {"description": "The results", "content": RESULTS_CONTENT}},
    summary="A finished job's results: CSV, or FHIR by Accept header",
)
async def get_job_results(job_id: JobId, request: Request) -> Response:
    """``results.csv`` by default; a FHIR Bundle of DiagnosticReports (an OperationOutcome per
    refused file) with ``Accept: application/fhir+json``; FHIR NDJSON with ``application/fhir+ndjson``."""
    job_dir = await anyio.to_thread.run_sync(find_job, job_id)
    path = await anyio.to_thread.run_sync(finished_results, job_dir)
    accept = request.headers.get("accept", "")
    for form in ("ndjson", "fhir"):
        if accepts(accept, MEDIA_TYPES[form]):
            # A sync iterator: Starlette builds each piece in a worker thread.
            return StreamingResponse(export(job_dir, form), media_type=MEDIA_TYPES[form])
    return FileResponse(path, media_type="text/csv", filename=f"{job_id}-results.csv")


@router.get(
    "/jobs/{job_id}/summary.png", response_class=FileResponse,
    responses={**ERRORS, 409: {"model": ErrorResponse}, 200: {"content": {"image/png": {}}}},
    summary="A finished job's summary plot: the spread of its scores, and its refusals",
)
async def get_job_summary_plot(job_id: JobId) -> FileResponse:
    job_dir = await anyio.to_thread.run_sync(find_job, job_id)
    await anyio.to_thread.run_sync(finished_results, job_dir)
    plot = job_dir / PLOT_FILE
    if not plot.is_file():  # jobs finished before the plot existed, or whose plot failed
        raise ResultNotFound(f"Job {job_id} has no {PLOT_FILE}; its results are complete.")
    return FileResponse(plot, media_type="image/png")
