"""A finished job's results exported as CSV, as one FHIR Bundle, or as FHIR Bulk Data NDJSON files.

The FHIR forms are built from ``results.csv`` on request, one result at a time, so the CSV stays
the one record of a job. Each scored file becomes the same resources that ``/predict`` answers
(DiagnosticReport, Observation, Device, Provenance; one Device per model version), each refused
file an ``OperationOutcome`` naming its row: ``results.csv row N (path): detail``, N counting the
data rows from 1. A report's identifier is derived from the image and the model that scored it, so
exporting a job twice gives the same identifiers and fullUrls, and a FHIR server can recognise
a repeat.

The NDJSON export is shaped as FHIR Bulk Data's ``$export``: one file per resource type
(``DiagnosticReport.ndjson``, ``Observation.ndjson``, ``Device.ndjson``, ``Provenance.ndjson``),
refusals in ``OperationOutcome.ndjson``, each resource with an ``id`` and references between them
as ``Type/id``, and a manifest listing the files with their counts. The first file served over
HTTP writes every file into the job folder in one pass (``kept_ndjson``): derived copies that the
CSV can always rebuild.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from itertools import chain
from pathlib import Path
from typing import TextIO

from fhir.resources.R4B.operationoutcome import OperationOutcome

from pneumoscan.errors import PneumoscanError
from pneumoscan.files import atomic_write
from pneumoscan.jobs.folder import RESULTS_FILE, SUMMARY_FILE, ShardMeta, load_job, shard_files, shard_path
from pneumoscan.jobs.results import finished_results, read_results
from pneumoscan.reports.fhir import FHIR_JSON, Entry, outcome_for, result_entries, standalone, stream_bundle
from pneumoscan.result import Result

log = logging.getLogger("pneumoscan.jobs")

MEDIA_TYPES = {"csv": "text/csv", "fhir": FHIR_JSON}
# The files of the NDJSON export, in the manifest's order; refusals go to ERROR_TYPE's file.
NDJSON_TYPES = ("DiagnosticReport", "Observation", "Device", "Provenance")
ERROR_TYPE = "OperationOutcome"
MANIFEST = "manifest.json"


def bundle_id(job_id: str) -> str:
    """The stable identifier of job ``job_id``'s collection Bundle."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"urn:pneumoscan:job:{job_id}:"))


def row_entries(result: Result, *, number: int, issued: datetime) -> list[Entry]:
    """The FHIR entries of ``results.csv``'s data row ``number`` (from 1), read back as ``result``:
    its report's resources, or an OperationOutcome naming the row and the file for a refused file."""

    def outcome(error: PneumoscanError) -> OperationOutcome:
        return outcome_for(error, diagnostics=f"{RESULTS_FILE} row {number} ({result.file}): {error.detail}")

    return result_entries(result, report_id=result.report_id, issued=issued, outcome=outcome)


def _finished_at(job_dir: Path) -> datetime:
    """When the job's last shard finished (``summary.json``): the ``issued`` time of its reports."""
    return datetime.fromisoformat(json.loads((job_dir / SUMMARY_FILE).read_text())["finished"])


def _issued_by_file(job_dir: Path) -> dict[str, datetime]:
    """When the shard that scored each file finished: its report's ``issued`` time, the one the
    report pushed to a FHIR server carried too."""
    spec = load_job(job_dir)
    issued = {}
    for index in range(spec.shards):
        try:
            meta = ShardMeta.model_validate_json(shard_path(job_dir, index, "json").read_bytes())
        except (OSError, ValueError):
            continue
        finished = datetime.fromtimestamp(meta.finished, UTC)
        issued.update(dict.fromkeys(shard_files(job_dir, spec, index), finished))
    return issued


def _row_entries(job_dir: Path, progress: Callable[[int], None] | None) -> Iterator[list[Entry]]:
    """Each row's entries in the CSV's order; ``progress`` is called with 1 per row."""
    job_finished, issued = _finished_at(job_dir), _issued_by_file(job_dir)
    for number, result in enumerate(read_results(job_dir), start=1):
        yield row_entries(result, number=number, issued=issued.get(result.file or "", job_finished))
        if progress is not None:
            progress(1)


def export(job_dir: Path, form: str, progress: Callable[[int], None] | None = None) -> Iterator[str]:
    """The job's results as text pieces: ``csv`` or ``fhir`` (one collection Bundle); ``progress``
    is called with 1 per row turned into FHIR."""
    if form not in MEDIA_TYPES:
        raise ValueError(f"Unknown results format {form!r}; choose one of {', '.join(MEDIA_TYPES)}.")
    path = finished_results(job_dir)
    if form == "csv":
        with path.open(newline="") as handle:
            yield from handle
        return
    entries = chain.from_iterable(_row_entries(job_dir, progress))
    yield from stream_bundle(entries, bundle_id=bundle_id(job_dir.name), issued=_finished_at(job_dir))


def _bulk_resources(rows: Iterable[list[Entry]]) -> Iterator[dict]:
    """Every row's resources in their standalone form, each once: a Device per model version, and
    one report for an image that appears in the job under several names."""
    seen: set[tuple[str, str]] = set()
    for entries in rows:
        for resource in standalone(entries):
            key = (resource["resourceType"], resource["id"])
            if key in seen:
                continue
            seen.add(key)
            yield resource


def _line(resource: dict) -> str:
    return json.dumps(resource, separators=(",", ":")) + "\n"


# Built NDJSON files are kept in the job folder under a name that changes with the code that
# builds them, so an upgrade never serves files of an older shape.
KEPT_EXPORT = "export"
_BUILDERS = ("reports/fhir.py", "reports/resources.py", "jobs/export.py", "jobs/results.py", "result.py")


def _export_form() -> str:
    try:
        sources = b"".join((Path(__file__).resolve().parents[1] / name).read_bytes() for name in _BUILDERS)
    except OSError:  # installed without sources
        from pneumoscan import __version__

        return __version__
    return hashlib.sha256(sources).hexdigest()[:12]


EXPORT_FORM = _export_form()


def kept_ndjson(job_dir: Path, resource_type: str) -> Path:
    """Where the job folder keeps its built ``resource_type`` file (it may not exist yet)."""
    return job_dir / KEPT_EXPORT / f"{resource_type}.{EXPORT_FORM}.ndjson"


def ndjson_lines(job_dir: Path, resource_type: str) -> Iterator[str]:
    """The lines of one file of the job's NDJSON export: its resources of ``resource_type``.

    The first complete pass writes every file of the export into the job folder (a finished
    job's results never change), and later calls read them; an interrupted pass keeps nothing,
    and a folder that cannot be written to only costs the rebuild."""
    kept = kept_ndjson(job_dir, resource_type)
    try:
        handle = kept.open(encoding="utf-8")
    except OSError:  # not built yet, or the folder is not ours to keep it in
        pass
    else:
        with handle:
            yield from handle
        return
    try:
        kept.parent.mkdir(exist_ok=True)
    except OSError as exc:
        log.warning("Cannot keep the NDJSON export in %s (%s); it is built again on each request.", kept.parent, exc)
        resources = _bulk_resources(_row_entries(job_dir, None))
    else:
        resources = _write_files(job_dir, lambda kind: kept_ndjson(job_dir, kind), {})
    for resource in resources:
        if resource["resourceType"] == resource_type:
            yield _line(resource)


def ndjson_counts(job_dir: Path) -> dict[str, int]:
    """How many lines each file of the NDJSON export has (types with none left out), read from
    ``results.csv`` without building the resources."""
    counts = dict.fromkeys((*NDJSON_TYPES, ERROR_TYPE), 0)
    versions: set[str] = set()
    for result in read_results(job_dir):
        if result.prediction is None:
            counts[ERROR_TYPE] += 1
            continue
        versions.add(result.prediction.model_version)
        for resource_type in ("DiagnosticReport", "Observation", "Provenance"):
            counts[resource_type] += 1
    counts["Device"] = len(versions)
    return {resource_type: count for resource_type, count in counts.items() if count}


def bulk_manifest(
    job_dir: Path,
    counts: dict[str, int],
    *,
    url_for: Callable[[str], str],
    request: str,
    requires_access_token: bool,
) -> dict:
    """The NDJSON export's manifest as FHIR Bulk Data's ``$export`` answers it: ``url_for`` gives
    a type's file URL, ``request`` is what asked for the export."""

    def files(types: Iterable[str]) -> list[dict]:
        return [{"type": kind, "url": url_for(kind), "count": counts[kind]} for kind in types if counts.get(kind)]

    return {
        "transactionTime": _finished_at(job_dir).isoformat(),
        "request": request,
        "requiresAccessToken": requires_access_token,
        "output": files(NDJSON_TYPES),
        "error": files([ERROR_TYPE]),
    }


def _write_files(
    job_dir: Path,
    target: Callable[[str], Path],
    counts: dict[str, int],
    progress: Callable[[int], None] | None = None,
) -> Iterator[dict]:
    """Every resource of the export, each written to ``target(type)`` as it is yielded; ``counts``
    gets the lines per type. The files appear only once every one is complete (under their own
    temporary names until then, so concurrent passes do not mix); a pass left unfinished, by an
    error or by its consumer, leaves none."""
    token = uuid.uuid4().hex
    partials: dict[str, Path] = {}
    handles: dict[str, TextIO] = {}
    try:
        for resource in _bulk_resources(_row_entries(job_dir, progress)):
            kind = resource["resourceType"]
            if kind not in handles:
                partials[kind] = target(kind).with_name(f".{target(kind).name}.{token}.partial")
                handles[kind] = partials[kind].open("w", encoding="utf-8")
            handles[kind].write(_line(resource))
            counts[kind] = counts.get(kind, 0) + 1
            yield resource
        for handle in handles.values():
            handle.close()
        for kind, partial in partials.items():
            partial.replace(target(kind))
    finally:
        for handle in handles.values():
            handle.close()
        for partial in partials.values():
            partial.unlink(missing_ok=True)


def write_ndjson(job_dir: Path, out_dir: Path, *, request: str, progress: Callable[[int], None] | None = None) -> dict:
    """Write the NDJSON export into ``out_dir`` (made if missing): one ``<type>.ndjson`` per type
    with resources, and ``manifest.json`` (``file:`` URLs) last; answers the manifest."""
    finished_results(job_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    counts: dict[str, int] = {}
    for _ in _write_files(job_dir, lambda kind: out_dir / f"{kind}.ndjson", counts, progress):
        pass
    # A type this export has none of loses the file an earlier export into this folder left.
    for kind in (*NDJSON_TYPES, ERROR_TYPE):
        if kind not in counts:
            (out_dir / f"{kind}.ndjson").unlink(missing_ok=True)
    manifest = bulk_manifest(
        job_dir,
        counts,
        url_for=lambda kind: (out_dir / f"{kind}.ndjson").resolve().as_uri(),
        request=request,
        requires_access_token=False,
    )
    atomic_write(out_dir / MANIFEST, (json.dumps(manifest, indent=2) + "\n").encode())
    return manifest
