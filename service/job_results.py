"""A finished job's results: ``results.csv`` as it is, or its rows as FHIR (a Bundle or NDJSON).

The FHIR forms are built from ``results.csv`` on request, one row at a time, so the CSV stays the
one record of a job. Each scored row becomes the same ``DiagnosticReport`` that ``/predict``
answers (an ``ImagingStudy`` for DICOM input); each refused file an ``OperationOutcome``. Entries
follow the CSV's row order. A report's identifier is derived from the job id and the file's path,
so exporting a job twice gives the same identifiers and a FHIR server can de-duplicate them.
"""

from __future__ import annotations

import csv
import json
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

from fhir.resources.R4B.resource import Resource

from pneumoscan.dicom import DicomSource
from pneumoscan.errors import error_from_code
from pneumoscan.fhir import FHIR_JSON, FHIR_NDJSON, diagnostic_report, ndjson_lines, stream_bundle
from pneumoscan.schemas import Prediction
from service.errors import outcome_for
from service.jobs import DICOM_COLUMNS, RESULTS_FILE, SUMMARY_FILE, JobNotFinished, job_status

MEDIA_TYPES = {"csv": "text/csv", "fhir": FHIR_JSON, "ndjson": FHIR_NDJSON}


def finished_results(job_dir: Path) -> Path:
    """The job's ``results.csv``; :class:`JobNotFinished` until every file has been scored."""
    status = job_status(job_dir)
    if status.state != "done":
        raise JobNotFinished(
            status.detail
            or f"Job {status.job_id} is {status.state}: {status.done} of {status.total} files scored so far. "
            "Its results are ready when every file is."
        )
    return job_dir / RESULTS_FILE


def report_id(job_id: str, path: str) -> str:
    """The stable identifier of the report for ``path`` in job ``job_id``."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"urn:pneumoscan:job:{job_id}:{path}"))


def row_resource(row: dict[str, str], *, job_id: str, issued: datetime) -> Resource:
    """One ``results.csv`` row as a DiagnosticReport, or an OperationOutcome for a refused file."""
    if row["status"] != "ok":
        return outcome_for(error_from_code(row["error_code"], row["error_detail"]))
    prediction = Prediction(
        label=row["label"], probability=float(row["probability"]), threshold=float(row["threshold"]),
        model_version=row["model_version"], out_of_distribution=row.get("out_of_distribution") == "true",
        ood_score=float(row["ood_score"]) if row.get("ood_score") else None,
    )
    source = None
    if row.get("sop_instance_uid"):
        source = DicomSource(**{column: row.get(column) or None for column in DICOM_COLUMNS})
    return diagnostic_report(prediction, source=source, request_id=report_id(job_id, row["path"]), issued=issued)


def _finished_at(job_dir: Path) -> datetime:
    return datetime.fromisoformat(json.loads((job_dir / SUMMARY_FILE).read_text())["finished"])


def _resources(
    path: Path, *, job_id: str, issued: datetime, progress: Callable[[int], None] | None
) -> Iterator[Resource]:
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            yield row_resource(row, job_id=job_id, issued=issued)
            if progress is not None:
                progress(1)


def export(job_dir: Path, form: str, progress: Callable[[int], None] | None = None) -> Iterator[str]:
    """The job's results as text pieces: ``csv``, ``fhir`` (a collection Bundle) or ``ndjson``;
    ``progress`` is called with 1 per FHIR resource written."""
    if form not in MEDIA_TYPES:
        raise ValueError(f"Unknown results format {form!r}; choose one of {', '.join(MEDIA_TYPES)}.")
    path = finished_results(job_dir)
    if form == "csv":
        with path.open(newline="") as handle:
            yield from handle
        return
    issued = _finished_at(job_dir)
    resources = _resources(path, job_id=job_dir.name, issued=issued, progress=progress)
    if form == "fhir":
        yield from stream_bundle(resources, bundle_id=report_id(job_dir.name, ""), issued=issued)
    else:
        yield from ndjson_lines(resources)
