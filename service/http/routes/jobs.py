"""``POST /jobs``, ``GET /jobs``, ``GET /jobs/{job_id}``, its ``/results``, ``/summary.png`` and
``/export`` (FHIR Bulk Data NDJSON): batch scoring of server-side folders over HTTP."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Request
from fastapi import Path as PathParam
from pydantic import BaseModel, Field, model_validator
from starlette.responses import FileResponse, Response, StreamingResponse

from pneumoscan.access.clients import Scope
from pneumoscan.dicom.query import DicomwebQuery
from pneumoscan.errors import FolderNotAllowed, JobError, JobNotFound, ResultNotFound, SourceNotAllowed
from pneumoscan.jobs.export import ERROR_TYPE, NDJSON_TYPES, bulk_manifest, export, ndjson_counts, ndjson_lines
from pneumoscan.jobs.folder import PLOT_FILE
from pneumoscan.jobs.folder import find_job as find_job_in
from pneumoscan.jobs.results import finished_results, job_status, list_jobs
from pneumoscan.reports.fhir import FHIR_JSON, FHIR_NDJSON, acceptable, accepts
from pneumoscan.schemas import ErrorResponse, JobStatus
from pneumoscan.settings import get_settings
from service.http.access import audited, key_required, scoped
from service.http.context import SubmitJob
from service.http.errors import NotAcceptable

router = APIRouter()


JOB_ID = re.compile(r"[0-9a-f]{16}")


def find_job(job_id: str) -> Path:
    """The job folder of an id; 404 ``job_not_found`` for an unknown id or one that is not an id at
    all (only ids are looked up: a path is never taken from a URL)."""
    if not JOB_ID.fullmatch(job_id):
        raise JobNotFound(f"There is no job {job_id[:40]!r}: a job id is 16 lowercase hexadecimal characters.")
    return find_job_in(get_settings().jobs_root, job_id)


ERRORS: dict[int | str, dict[str, Any]] = {status: {"model": ErrorResponse} for status in (400, 401, 403, 404, 503)}
JobId = Annotated[str, PathParam(description="The job's id: 16 lowercase hexadecimal characters.")]


class JobRequest(BaseModel):
    folder: str | None = Field(
        default=None, min_length=1, description="A folder under one of PNEUMOSCAN_INPUT_ROOTS, as the server sees it."
    )
    dicomweb: DicomwebQuery | None = Field(
        default=None,
        description="In place of a folder: studies in a PACS (one of PNEUMOSCAN_DICOMWEB_SOURCES), found by "
        "QIDO-RS and fetched by WADO-RS; the results go back through the DICOM node's outbox.",
    )
    output: str | None = Field(
        default=None, description="Output root under PNEUMOSCAN_JOBS_DIR or an input root (default: the former)."
    )

    @model_validator(mode="after")
    def _one_source(self) -> JobRequest:
        if (self.folder is None) == (self.dicomweb is None):
            raise ValueError("name a folder or a dicomweb query, not both and not neither")
        return self


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


def submit_job(request: Request) -> SubmitJob:
    """The job queue the running service was given (``create_app``'s ``submit_job``)."""
    submit = request.app.state.submit_job
    if submit is None:
        raise JobError("This app was started without a job queue.")
    return submit


@router.post(
    "/jobs",
    response_model=JobCreated,
    status_code=202,
    responses={**ERRORS, 415: {"model": ErrorResponse}},
    summary="Score every X-ray in a server-side folder through the queue",
    **scoped(Scope.JOBS, "job.create"),
)
async def create_job(request: JobRequest, http_request: Request, response: Response) -> JobCreated:
    """202 with the job's id; ``Location`` is its progress (``GET /jobs/{job_id}``) and
    ``Content-Location`` its FHIR Bulk Data export's status URL, as a Bulk Data kick-off answers."""
    settings = get_settings()
    roots = settings.allowed_input_roots
    if request.dicomweb is not None:
        status = await _submit_query(request.dicomweb, http_request, _check_output(request.output, roots or []))
    else:
        status = await _submit_folder(request.folder or "", http_request, request.output, roots)
    audited(http_request).add(job=status.job_id)
    response.headers["Location"] = str(http_request.url_for("get_job", job_id=status.job_id))
    response.headers["Content-Location"] = str(http_request.url_for("get_job_export", job_id=status.job_id))
    return JobCreated(job_id=status.job_id, state=status.state)


async def _submit_query(query: DicomwebQuery, http_request: Request, output: str | None) -> JobStatus:
    allowed = get_settings().allowed_dicomweb_sources
    if query.url.rstrip("/") not in allowed:
        raise SourceNotAllowed(
            f"{query.url[:200]} is not one of PNEUMOSCAN_DICOMWEB_SOURCES ({', '.join(allowed) or 'none set'})."
        )
    submit = http_request.app.state.submit_query
    if submit is None:
        raise JobError("This app was started without a job queue.")
    return await anyio.to_thread.run_sync(submit, query, output)


async def _submit_folder(
    folder: str, http_request: Request, output_root: str | None, roots: list[Path] | None
) -> JobStatus:
    if roots is None:
        raise FolderNotAllowed(
            "Batch jobs over HTTP are disabled: the operator must set PNEUMOSCAN_INPUT_ROOTS "
            "to the folders this service may read."
        )
    output = _check_output(output_root, roots)
    try:
        return await anyio.to_thread.run_sync(submit_job(http_request), folder, output, roots)
    except OSError as exc:
        raise JobError(f"Cannot create the job's output folder: {exc.strerror or exc}") from exc


class JobList(BaseModel):
    jobs: list[JobStatus] = Field(description="Every known job, newest first.")


@router.get(
    "/jobs",
    response_model=JobList,
    responses=ERRORS,
    summary="Every known batch job, newest first",
    **scoped(Scope.JOBS, "job.list"),
)
async def list_all_jobs() -> JobList:
    return JobList(jobs=await anyio.to_thread.run_sync(list_jobs, get_settings().jobs_root))


@router.get(
    "/jobs/{job_id}",
    response_model=JobStatus,
    responses=ERRORS,
    summary="Progress of a batch job",
    **scoped(Scope.JOBS, "job.status"),
)
async def get_job(job_id: JobId, request: Request) -> JobStatus:
    audited(request).add(job=job_id)
    return await anyio.to_thread.run_sync(lambda: job_status(find_job(job_id)))


RESULTS_CONTENT = {
    "text/csv": {"schema": {"type": "string", "description": "results.csv, one row per file"}},
    FHIR_JSON: {
        "schema": {
            "type": "object",
            "description": (
                "FHIR R4 Bundle (collection): per row its DiagnosticReport, Observation and Provenance (one "
                "Device per model version), or an OperationOutcome for a refused file"
            ),
        }
    },
}


@router.get(
    "/jobs/{job_id}/results",
    response_class=StreamingResponse,
    responses={
        **ERRORS,
        406: {"model": ErrorResponse},
        409: {"model": ErrorResponse},
        200: {"description": "The results", "content": RESULTS_CONTENT},
    },
    summary="A finished job's results: CSV, or a FHIR Bundle by Accept header",
    **scoped(Scope.JOBS, "job.results"),
)
async def get_job_results(job_id: JobId, request: Request) -> Response:
    """``results.csv`` by default; with ``Accept: application/fhir+json`` a FHIR collection Bundle
    of every row's resources (an OperationOutcome per refused file). The FHIR Bulk Data files are
    at ``/jobs/{job_id}/export``."""
    audited(request).add(job=job_id, whole_job=True)
    job_dir = await anyio.to_thread.run_sync(find_job, job_id)
    path = await anyio.to_thread.run_sync(finished_results, job_dir)
    accept = request.headers.get("accept", "")
    if accepts(accept, FHIR_JSON):
        # A sync iterator: Starlette builds each piece in a worker thread.
        return StreamingResponse(export(job_dir, "fhir"), media_type=FHIR_JSON)
    if not acceptable(accept, "text/csv"):
        raise NotAcceptable(
            f"Job results are text/csv or {FHIR_JSON}; the Accept header allows neither. FHIR NDJSON, one "
            f"file per resource type, is listed at GET /jobs/{job_id}/export."
        )
    return FileResponse(path, media_type="text/csv", filename=f"{job_id}-results.csv")


class ExportFile(BaseModel):
    type: str = Field(description="The FHIR resource type of every line of the file.")
    url: str = Field(description="Where to GET the file (application/fhir+ndjson).")
    count: int = Field(description="Resources (lines) in the file.")


class ExportManifest(BaseModel):
    """FHIR Bulk Data's ``$export`` manifest (https://hl7.org/fhir/uv/bulkdata/export.html)."""

    transactionTime: str = Field(description="When the job finished: its results are as of then.")
    request: str = Field(description="The URL that asked for this manifest.")
    requiresAccessToken: bool = Field(description="True when the files need the API key (Authorization: Bearer).")
    output: list[ExportFile] = Field(description="One NDJSON file per resource type with resources.")
    error: list[ExportFile] = Field(description="OperationOutcome.ndjson: one per refused file, naming its row.")


EXPORT_IN_PROGRESS = {
    "model": JobStatus,
    "description": (
        "The job is queued or running, as FHIR Bulk Data's status request answers an export in "
        "progress: poll again after Retry-After seconds; X-Progress says how far it got"
    ),
    "headers": {
        "X-Progress": {"schema": {"type": "string"}, "description": "e.g. '120 of 512 files scored'"},
        "Retry-After": {"schema": {"type": "integer"}, "description": "seconds before polling again"},
    },
}


def export_in_progress(status: JobStatus) -> Response | None:
    """202 with X-Progress and Retry-After for a queued or running job (Bulk Data's status
    request in progress); None when the job has finished or failed."""
    if status.state not in ("queued", "running"):
        return None
    retry_after = min(60, max(1, round(status.eta_seconds or 5)))
    return Response(
        status.model_dump_json(),
        status_code=202,
        media_type="application/json",
        headers={"X-Progress": f"{status.done} of {status.total} files scored", "Retry-After": str(retry_after)},
    )


@router.get(
    "/jobs/{job_id}/export",
    response_model=ExportManifest,
    responses={**ERRORS, 202: EXPORT_IN_PROGRESS, 409: {"model": ErrorResponse}},
    summary="A job's FHIR Bulk Data export: the manifest of its NDJSON files once it is done, 202 until then",
    **scoped(Scope.JOBS, "job.export"),
)
async def get_job_export(job_id: JobId, request: Request) -> ExportManifest | Response:
    """The status URL of FHIR Bulk Data's asynchronous pattern: 202 (X-Progress, Retry-After)
    while the job is queued or running, the manifest when it is done, 409 ``job_not_finished``
    for a failed job."""
    audited(request).add(job=job_id)
    job_dir = await anyio.to_thread.run_sync(find_job, job_id)
    status = await anyio.to_thread.run_sync(job_status, job_dir)
    if (waiting := export_in_progress(status)) is not None:
        return waiting
    counts = await anyio.to_thread.run_sync(ndjson_counts, job_dir)

    def url_for(kind: str) -> str:
        return str(request.url_for("get_job_export_file", job_id=job_id, resource_type=kind))

    manifest = bulk_manifest(
        job_dir,
        counts,
        url_for=url_for,
        request=str(request.url),
        requires_access_token=key_required(get_settings()),
    )
    return ExportManifest.model_validate(manifest)


@router.get(
    "/jobs/{job_id}/export/{resource_type}.ndjson",
    response_class=StreamingResponse,
    responses={
        **ERRORS,
        409: {"model": ErrorResponse},
        200: {"description": "One resource per line", "content": {FHIR_NDJSON: {"schema": {"type": "string"}}}},
    },
    summary="One file of a finished job's FHIR Bulk Data export",
    **scoped(Scope.JOBS, "job.export_file"),
)
async def get_job_export_file(job_id: JobId, resource_type: str, request: Request) -> Response:
    """The job's resources of one type as FHIR NDJSON (``OperationOutcome`` for refused files);
    404 ``result_not_found`` for a type the export has no file of."""
    audited(request).add(job=job_id, whole_job=True)
    job_dir = await anyio.to_thread.run_sync(find_job, job_id)
    counts = await anyio.to_thread.run_sync(ndjson_counts, job_dir)
    if resource_type not in (*NDJSON_TYPES, ERROR_TYPE) or not counts.get(resource_type):
        raise ResultNotFound(
            f"Job {job_id}'s export has no {resource_type}.ndjson; its manifest lists the files "
            f"it has (GET /jobs/{job_id}/export)."
        )
    return StreamingResponse(ndjson_lines(job_dir, resource_type), media_type=FHIR_NDJSON)


@router.get(
    "/jobs/{job_id}/summary.png",
    response_class=FileResponse,
    responses={**ERRORS, 409: {"model": ErrorResponse}, 200: {"content": {"image/png": {}}}},
    summary="A finished job's summary plot: the spread of its scores, and its refusals",
    **scoped(Scope.JOBS, "job.summary"),
)
async def get_job_summary_plot(job_id: JobId, request: Request) -> FileResponse:
    audited(request).add(job=job_id)
    job_dir = await anyio.to_thread.run_sync(find_job, job_id)
    await anyio.to_thread.run_sync(finished_results, job_dir)
    plot = job_dir / PLOT_FILE
    if not plot.is_file():  # jobs finished before the plot existed, or whose plot failed
        raise ResultNotFound(f"Job {job_id} has no {PLOT_FILE}; its results are complete.")
    return FileResponse(plot, media_type="image/png")
