"""A prediction as a FHIR R4 ``DiagnosticReport`` (built and validated with fhir.resources' R4B models).

The report is self-contained: the ``Observation`` with the result, the ``Device`` (the model and
its version) and, for DICOM input, an ``ImagingStudy`` citing the study, series and SOP instance
UIDs are contained resources. For DICOM input that carries them, the report names its patient by
identifier (PatientID, with IssuerOfPatientID as assigner), the order by accession number
(``basedOn``) and the acquisition time (``effectiveDateTime``); JPEG and PNG reports name no
patient.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timezone

from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.diagnosticreport import DiagnosticReport
from fhir.resources.R4B.operationoutcome import OperationOutcome
from fhir.resources.R4B.resource import Resource

from pneumoscan import errors
from pneumoscan.dicom import DicomSource, PatientContext, split_datetime
from pneumoscan.result import Result
from pneumoscan.schemas import Prediction

FHIR_JSON = "application/fhir+json"
FHIR_NDJSON = "application/fhir+ndjson"
CODE_SYSTEM = "urn:pneumoscan:codes"
LOINC = "http://loinc.org"
DICOM_UID = "urn:dicom:uid"
DICOM_MODALITIES = "http://dicom.nema.org/resources/ontology/DCM"
UCUM = "http://unitsofmeasure.org"
NOT_FOR_DIAGNOSIS = (
    "Preliminary automated screening result, not for diagnostic use: pneumoscan is not a medical "
    "device, and a clinician must read the radiograph."
)

# What the model finds is a suspicion, not a diagnosis: pneumoscan's own finding codes, with no
# disorder code (such as SNOMED CT's "Pneumonia") beside them that would mean more.
LABEL_CONCEPTS: dict[str, dict] = {
    "PNEUMONIA": {
        "coding": [{"system": CODE_SYSTEM, "code": "PNEUMONIA", "display": "Pneumonia suspected"}],
        "text": "Pneumonia suspected (automated screening)",
    },
    "NORMAL": {
        "coding": [{"system": CODE_SYSTEM, "code": "NORMAL", "display": "No pneumonia suspected"}],
        "text": "No pneumonia suspected (automated screening)",
    },
}
INTERPRETATION = {"PNEUMONIA": ("A", "Abnormal"), "NORMAL": ("N", "Normal")}
# Security label of the report, "artificial intelligence asserted"; its contained resources may
# carry none of their own (dom-5) and fall under the report's.
AI_ASSERTED = {
    "security": [{
        "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
        "code": "AIAST",
        "display": "Artificial Intelligence asserted",
    }]
}


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
    errors.JobError: "invalid",
}


def outcome_for(error: errors.PneumoscanError, issue_type: str | None = None) -> OperationOutcome:
    """The error as a FHIR OperationOutcome; its issue type from ``ISSUE_TYPES`` unless given."""
    if issue_type is None:
        issue_type = next((ISSUE_TYPES[cls] for cls in type(error).__mro__ if cls in ISSUE_TYPES), "exception")
    return operation_outcome(error.code, error.detail, issue_type)


def operation_outcome(code: str, detail: str, issue_type: str) -> OperationOutcome:
    """An error as FHIR clients expect it; ``code`` is pneumoscan's stable error code."""
    return OperationOutcome.model_validate(
        {
            "resourceType": "OperationOutcome",
            "issue": [
                {
                    "severity": "error",
                    "code": issue_type,
                    "details": {"coding": [{"system": CODE_SYSTEM, "code": code}], "text": detail},
                    "diagnostics": detail,
                }
            ],
        }
    )


OUT_OF_DISTRIBUTION = (
    "OUT OF DISTRIBUTION: the image is unlike the chest X-rays the model was trained on; "
    "do not rely on this label. "
)


def diagnostic_report(
    prediction: Prediction,
    *,
    source: DicomSource | None = None,
    request_id: str | None = None,
    issued: datetime | None = None,
) -> DiagnosticReport:
    """The FHIR DiagnosticReport (status ``preliminary``) for one X-ray's prediction."""
    issued = issued or datetime.now(timezone.utc)
    label = LABEL_CONCEPTS[prediction.label]
    contained: list[dict] = [_device(prediction.model_version), _observation(prediction, issued, source)]
    report: dict = {
        "resourceType": "DiagnosticReport",
        "meta": AI_ASSERTED,
        "contained": contained,
        "status": "preliminary",
        "category": [
            {
                "coding": [
                    {"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "RAD", "display": "Radiology"}
                ]
            }
        ],
        "code": {
            "coding": [{"system": LOINC, "code": "18748-4", "display": "Diagnostic imaging study"}],
            "text": "Chest X-ray pneumonia screening (automated)",
        },
        "issued": issued.isoformat(),
        "result": [{"reference": "#observation"}],
        "conclusion": (
            f"{OUT_OF_DISTRIBUTION if prediction.out_of_distribution else ''}"
            f"{prediction.label}: P(pneumonia) = {prediction.probability:.3f} at threshold "
            f"{prediction.threshold:.3f}. {NOT_FOR_DIAGNOSIS}"
        ),
        "conclusionCode": [label],
    }
    if request_id:
        report["identifier"] = [{"system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{uuid.UUID(request_id)}"}]
    if source is not None:
        contained.append(_imaging_study(source))
        report["imagingStudy"] = [{"reference": "#study"}]
        _file_under(report, contained, source.patient)
    return DiagnosticReport.model_validate(report)


def patient_identifier(patient: PatientContext) -> dict:
    """The patient's identifier as FHIR: the issuer as its assigner (and system when a URI)."""
    identifier: dict = {"value": patient.patient_id}
    issuer = patient.patient_id_issuer
    if issuer:
        if issuer.startswith(("urn:", "http://", "https://")):
            identifier["system"] = issuer
        identifier["assigner"] = {"display": issuer}
    return identifier


def fhir_datetime(value: str | None) -> str | None:
    """A DICOM DT as a FHIR dateTime: the date alone unless the time's UTC offset is known (FHIR
    requires an offset with a time)."""
    if not value or len(value) < 8 or not value[:8].isdigit():
        return None
    date = f"{value[:4]}-{value[4:6]}-{value[6:8]}"
    body, zone = split_datetime(value)
    offset = f"{zone[:3]}:{zone[3:5]}" if len(zone) >= 5 and zone[1:5].isdigit() else None
    time_ = body[8:14]
    if offset is None or len(time_) < 4 or not time_.isdigit():
        return date
    time_ = (time_ + "00")[:6]
    return f"{date}T{time_[:2]}:{time_[2:4]}:{time_[4:6]}{offset}"


def _file_under(report: dict, contained: list[dict], patient: PatientContext | None) -> None:
    """The patient (by identifier), the order (accession number) and the acquisition time."""
    if patient is None:
        return
    if patient.patient_id:
        subject = {"identifier": patient_identifier(patient), "display": "Patient of the referenced DICOM study"}
        report["subject"] = subject
        for resource in contained:
            if resource["resourceType"] in ("Observation", "ImagingStudy"):
                resource["subject"] = subject
    if patient.accession_number:
        report["basedOn"] = [{
            "type": "ServiceRequest",
            "identifier": {
                "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "ACSN"}]},
                "value": patient.accession_number,
            },
        }]
    effective = fhir_datetime(patient.acquired)
    if effective:
        report["effectiveDateTime"] = effective
        for resource in contained:
            if resource["resourceType"] == "Observation":
                resource["effectiveDateTime"] = effective


def result_resource(
    result: Result,
    *,
    request_id: str | None = None,
    issued: datetime | None = None,
    outcome: Callable[[errors.PneumoscanError], OperationOutcome] | None = None,
) -> Resource:
    """A result as FHIR: its DiagnosticReport, or for a refused input an OperationOutcome
    (``outcome`` builds it, :func:`outcome_for` unless given)."""
    if result.error is not None:
        return (outcome or outcome_for)(result.error)
    return diagnostic_report(result.prediction, source=result.dicom, request_id=request_id, issued=issued)


def report_bundle(
    entries: list[DiagnosticReport | OperationOutcome], *, request_id: str, issued: datetime | None = None
) -> Bundle:
    """A ``collection`` Bundle of one report (or OperationOutcome for a refused image) per upload,
    in upload order; the Bundle's identifier is the request's."""
    issued = issued or datetime.now(timezone.utc)
    return Bundle.model_validate(
        {
            "resourceType": "Bundle",
            "type": "collection",
            "identifier": {"system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{uuid.UUID(request_id)}"},
            "timestamp": issued.isoformat(),
            "entry": [_entry(entry) for entry in entries],
        }
    )


def stream_bundle(entries: Iterable[Resource], *, bundle_id: str, issued: datetime) -> Iterator[str]:
    """The JSON text of :func:`report_bundle`'s Bundle in pieces, one entry at a time, so that a
    result set of any size is never held in memory at once."""
    head = report_bundle([], request_id=bundle_id, issued=issued).model_dump(mode="json", exclude_none=True)
    head.pop("entry", None)
    yield json.dumps(head, separators=(",", ":"))[:-1] + ',"entry":['
    for index, entry in enumerate(entries):
        yield ("," if index else "") + json.dumps(_entry(entry), separators=(",", ":"))
    yield "]}"


def ndjson_lines(entries: Iterable[Resource]) -> Iterator[str]:
    """FHIR NDJSON (as in FHIR Bulk Data): one resource per line."""
    for entry in entries:
        yield entry.json() + "\n"


def _entry(resource: Resource) -> dict:
    return {"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": resource.model_dump(mode="json", exclude_none=True)}


def _observation(prediction: Prediction, issued: datetime, source: DicomSource | None) -> dict:
    code, display = INTERPRETATION[prediction.label]
    observation: dict = {
        "resourceType": "Observation",
        "id": "observation",
        "status": "preliminary",
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                        "code": "imaging",
                        "display": "Imaging",
                    }
                ]
            }
        ],
        "code": {
            "coding": [{"system": CODE_SYSTEM, "code": "pneumonia-screening", "display": "Pneumonia screening"}],
            "text": "Pneumonia screening on a chest X-ray (automated)",
        },
        "issued": issued.isoformat(),
        "valueCodeableConcept": LABEL_CONCEPTS[prediction.label],
        "interpretation": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation",
                        "code": code,
                        "display": display,
                    }
                ]
            }
        ],
        "component": [
            _quantity_component("probability", "Probability of pneumonia", prediction.probability),
            _quantity_component("threshold", "Decision threshold: PNEUMONIA at or above", prediction.threshold),
        ],
        "device": {"reference": "#device"},
        "note": [{"text": NOT_FOR_DIAGNOSIS}],
    }
    if source is not None:
        observation["derivedFrom"] = [{"reference": "#study"}]
    return observation


def _quantity_component(code: str, display: str, value: float) -> dict:
    return {
        "code": {"coding": [{"system": CODE_SYSTEM, "code": code, "display": display}], "text": display},
        "valueQuantity": {"value": round(value, 6), "unit": "probability", "system": UCUM, "code": "1"},
    }


def _device(model_version: str) -> dict:
    return {
        "resourceType": "Device",
        "id": "device",
        "status": "active",
        "manufacturer": "pneumoscan",
        "deviceName": [{"name": "pneumoscan pneumonia-cnn", "type": "model-name"}],
        "version": [{"value": model_version}],
        "note": [{"text": "Screening software; not a medical device."}],
    }


def _imaging_study(source: DicomSource) -> dict:
    study: dict = {
        "resourceType": "ImagingStudy",
        "id": "study",
        "status": "available",
        # Required by FHIR; the patient's identifier replaces it when the file carries one.
        "subject": {"display": "Patient of the referenced DICOM study"},
    }
    if source.study_instance_uid:
        study["identifier"] = [{"system": DICOM_UID, "value": f"urn:oid:{source.study_instance_uid}"}]
    if source.series_instance_uid:
        series: dict = {
            "uid": source.series_instance_uid,
            # "OT" (other) when the file leaves the modality unset, which pneumoscan accepts.
            "modality": {"system": DICOM_MODALITIES, "code": source.modality or "OT"},
        }
        if source.sop_instance_uid and source.sop_class_uid:
            series["instance"] = [
                {
                    "uid": source.sop_instance_uid,
                    "sopClass": {"system": "urn:ietf:rfc:3986", "code": f"urn:oid:{source.sop_class_uid}"},
                }
            ]
        study["series"] = [series]
    return study
