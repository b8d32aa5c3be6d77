"""``POST /jobs`` and ``GET /jobs/{job_id}``: batch scoring of server-side folders over HTTP."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import anyio
from fastapi import APIRouter, Path as PathParam
from pydantic import BaseModel, Field

from pneumoscan.schemas import ErrorResponse
from pneumoscan.settings import get_settings
from service.jobs import FolderNotAllowed, JobError, JobStatus, job_status

router = APIRouter()
ERRORS = {status: {"model": ErrorResponse} for status in (400, 401, 403, 404, 503)}


class JobRequest(BaseModel):
    folder: str = Field(description="A folder under one of PNEUMOSCAN_INPUT_ROOTS, as the server sees it.")
    output: str | None = Field(
        default=None, description="Output root under PNEUMOSCAN_JOBS_DIR or an input root (default: the former)."
    )


class JobCreated(BaseModel):
    job_id: str
    state: str


def _check_output(output: str | None, allowed_roots: list[Path]) -> str | None:
    if output is None:
        return None
    resolved = Path(output).resolve()
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


@router.get("/jobs/{job_id}", response_model=JobStatus, responses=ERRORS, summary="Progress of a batch job")
async def get_job(job_id: Annotated[str, PathParam(pattern=r"^[0-9a-f]{16}$")]) -> JobStatus:
    from service.worker import find_job

    return await anyio.to_thread.run_sync(lambda: job_status(find_job(job_id)))
