"""A result as FHIR R4: its resources as Bundle entries, the Bundles, the standalone form of FHIR
Bulk Data files, OperationOutcomes for errors, and the Accept-header rules of the FHIR media types.

A scored result is the four resources of ``pneumoscan.reports.resources`` (DiagnosticReport,
Observation, Device, Provenance), a refused input one OperationOutcome; every entry's fullUrl is
derived from the report id. Several results in one Bundle share one Device entry per model
version. Nothing is contained: references between the entries use their fullUrls, which a FHIR
server rewrites to its own ids when it stores a transaction.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime

from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.operationoutcome import OperationOutcome
from fhir.resources.R4B.resource import Resource

from pneumoscan import errors
from pneumoscan.reports.resources import (
    CODE_SYSTEM,
    LABEL_CONCEPTS,
    URI_SYSTEM,
    entry_url,
    fhir_datetime,
    patient_identifier,
    report_entries,
)
from pneumoscan.result import Result

__all__ = [
    "FHIR_JSON",
    "FHIR_NDJSON",
    "LABEL_CONCEPTS",
    "Entry",
    "acceptable",
    "accepts",
    "accepts_fhir",
    "collection_bundle",
    "distinct",
    "fhir_datetime",
    "operation_outcome",
    "outcome_for",
    "patient_identifier",
    "result_entries",
    "standalone",
    "stream_bundle",
]

FHIR_JSON = "application/fhir+json"
FHIR_NDJSON = "application/fhir+ndjson"
Entry = tuple[str, Resource]  # (fullUrl, resource)


def _media_ranges(accept: str) -> Iterator[tuple[str, float]]:
    """(media range, q) per entry of an Accept header, lower-cased; q is 1 unless given."""
    for part in accept.split(","):
        media, *parameters = (piece.strip() for piece in part.split(";"))
        quality = 1.0
        for parameter in parameters:
            name, _, value = parameter.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if media:
            yield media.lower(), quality


def accepts(accept: str, media_type: str) -> bool:
    """True when an Accept header names ``media_type`` itself with a q above 0 (``q=0`` means
    "not acceptable")."""
    return any(media == media_type and quality > 0 for media, quality in _media_ranges(accept))


def acceptable(accept: str, media_type: str) -> bool:
    """True when ``media_type`` may be sent: no Accept header, or a range that covers it
    (``*/*``, ``type/*`` or the type itself) with a q above 0 and no ``q=0`` for the type itself."""
    if not accept.strip():
        return True
    ranges = list(_media_ranges(accept))
    if any(media == media_type and quality == 0 for media, quality in ranges):
        return False
    family = media_type.split("/")[0] + "/*"
    return any(media in (media_type, family, "*/*") and quality > 0 for media, quality in ranges)


def accepts_fhir(accept: str) -> bool:
    """True when an Accept header lists ``application/fhir+json``."""
    return accepts(accept, FHIR_JSON)


# FHIR OperationOutcome issue types (http://hl7.org/fhir/issue-type) of the core errors, the most
# specific class first; anything else is an "exception". The HTTP adapter agrees with these for
# core errors and names the types of its own.
ISSUE_TYPES: dict[type[errors.PneumoscanError], str] = {
    errors.ImageTooLarge: "too-costly",
    errors.InvalidImage: "invalid",
    errors.FolderNotAllowed: "forbidden",
    errors.FolderNotFound: "not-found",
    errors.JobNotFound: "not-found",
    errors.ResultNotFound: "not-found",
    errors.JobNotFinished: "conflict",
    errors.QueueUnavailable: "transient",
    errors.AuditUnavailable: "transient",
    errors.SourceUnavailable: "transient",
    errors.SourceNotAllowed: "forbidden",
    errors.JobError: "invalid",
}


def outcome_for(
    error: errors.PneumoscanError, issue_type: str | None = None, *, diagnostics: str | None = None
) -> OperationOutcome:
    """The error as a FHIR OperationOutcome; its issue type from ``ISSUE_TYPES`` unless given."""
    if issue_type is None:
        issue_type = next((ISSUE_TYPES[cls] for cls in type(error).__mro__ if cls in ISSUE_TYPES), "exception")
    return operation_outcome(error.code, error.detail, issue_type, diagnostics=diagnostics)


def operation_outcome(code: str, detail: str, issue_type: str, *, diagnostics: str | None = None) -> OperationOutcome:
    """An error as FHIR clients expect it; ``code`` is pneumoscan's stable error code, and
    ``diagnostics`` the detail unless given (e.g. naming the input that was refused)."""
    return OperationOutcome.model_validate(
        {
            "resourceType": "OperationOutcome",
            "issue": [
                {
                    "severity": "error",
                    "code": issue_type,
                    "details": {"coding": [{"system": CODE_SYSTEM, "code": code}], "text": detail},
                    "diagnostics": diagnostics or detail,
                }
            ],
        }
    )


def result_entries(
    result: Result,
    *,
    report_id: str,
    issued: datetime | None = None,
    outcome: Callable[[errors.PneumoscanError], OperationOutcome] | None = None,
) -> list[Entry]:
    """A result's Bundle entries: its DiagnosticReport, Observation, Device and Provenance, or for
    a refused input one OperationOutcome (``outcome`` builds it, :func:`outcome_for` unless given).
    ``report_id`` (a UUID) is the report's identifier; the same id gives the same fullUrls."""
    if result.error is not None:
        return [(entry_url(report_id, "OperationOutcome"), (outcome or outcome_for)(result.error))]
    if result.prediction is None:
        raise ValueError("A Result holds either a prediction or an error.")
    issued = issued or datetime.now(UTC)
    return report_entries(result.prediction, report_id=report_id, issued=issued, source=result.dicom)


def distinct(entries: Iterable[Entry]) -> Iterator[Entry]:
    """The entries without repeats: one Device per model version, and one report for an image
    that appears several times (its entries share their fullUrls, ``Result.report_id``)."""
    seen: set[str] = set()
    for url, resource in entries:
        if url in seen:
            continue
        seen.add(url)
        yield url, resource


def collection_bundle(entries: Iterable[Entry], *, bundle_id: str, issued: datetime | None = None) -> Bundle:
    """A ``collection`` Bundle of the entries in order, one Device per model version; its
    identifier is ``bundle_id`` (the request id of an upload) as a ``urn:uuid``."""
    issued = issued or datetime.now(UTC)
    return Bundle.model_validate(
        {**_bundle_head(bundle_id, issued), "entry": [_entry(url, resource) for url, resource in distinct(entries)]}
    )


def stream_bundle(entries: Iterable[Entry], *, bundle_id: str, issued: datetime) -> Iterator[str]:
    """The JSON text of :func:`collection_bundle`'s Bundle in pieces, one entry at a time, so that
    a result set of any size is never held in memory at once."""
    head = Bundle.model_validate(_bundle_head(bundle_id, issued)).model_dump(mode="json", exclude_none=True)
    yield json.dumps(head, separators=(",", ":"))[:-1] + ',"entry":['
    for index, (url, resource) in enumerate(distinct(entries)):
        yield ("," if index else "") + json.dumps(_entry(url, resource), separators=(",", ":"))
    yield "]}"


def standalone(entries: Iterable[Entry]) -> list[dict]:
    """The entries of one result as FHIR Bulk Data files hold resources: each with an ``id`` (the
    uuid of its fullUrl), and references between them as ``Type/id``."""
    entries = list(entries)
    local = {url: f"{resource.get_resource_type()}/{url.removeprefix('urn:uuid:')}" for url, resource in entries}
    resources = []
    for url, resource in entries:
        document = {
            "resourceType": resource.get_resource_type(),
            "id": url.removeprefix("urn:uuid:"),
            **resource.model_dump(mode="json", exclude_none=True),
        }
        resources.append(_relink(document, local))
    return resources


def _relink(value, local: dict[str, str]):
    """``value`` with every ``reference`` found in ``local`` replaced by its local form."""
    if isinstance(value, list):
        return [_relink(item, local) for item in value]
    if not isinstance(value, dict):
        return value
    return {
        key: local.get(item, item) if key == "reference" and isinstance(item, str) else _relink(item, local)
        for key, item in value.items()
    }


def _bundle_head(bundle_id: str, issued: datetime) -> dict:
    return {
        "resourceType": "Bundle",
        "type": "collection",
        "identifier": {"system": URI_SYSTEM, "value": f"urn:uuid:{uuid.UUID(bundle_id)}"},
        "timestamp": issued.isoformat(),
    }


def _entry(url: str, resource: Resource) -> dict:
    return {"fullUrl": url, "resource": resource.model_dump(mode="json", exclude_none=True)}
