"""The FHIR R4 resources of one scored X-ray, built and validated with fhir.resources' R4B models.

A result becomes four separate resources, each with a ``fullUrl`` (``urn:uuid:``) derived from
the report id, so building them twice gives the same ids:

- ``DiagnosticReport`` (status ``preliminary``): the conclusion; ``result`` is the Observation;
- ``Observation``: the label, the probability and the threshold; ``device`` is the Device;
- ``Device``: the model and its version. Its fullUrl depends on the model version alone, so every
  report of one model shares one Device;
- ``Provenance``: the report and the Observation were authored by the Device at ``recorded``.

A DICOM input's study is the PACS's ImagingStudy, cited by identifier (``urn:dicom:uid``) from
``DiagnosticReport.imagingStudy``, ``Observation.derivedFrom`` and the Provenance's source entity;
its series and instance UIDs are named in the reference's display. When the file carries them,
the report names its patient by identifier (PatientID, with IssuerOfPatientID as assigner), the
order by accession number (``basedOn``) and the acquisition time (``effectiveDateTime``). JPEG
and PNG reports name no patient and no study.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from fhir.resources.R4B.device import Device
from fhir.resources.R4B.diagnosticreport import DiagnosticReport
from fhir.resources.R4B.observation import Observation
from fhir.resources.R4B.provenance import Provenance
from fhir.resources.R4B.resource import Resource

from pneumoscan.dicom.decode import DicomSource, PatientContext, split_datetime
from pneumoscan.findings import NOT_FOR_DIAGNOSIS_NOTE as NOT_FOR_DIAGNOSIS
from pneumoscan.schemas import Prediction

CODE_SYSTEM = "urn:pneumoscan:codes"
MODEL_SYSTEM = "urn:pneumoscan:model"  # Device.identifier: the model version
REPORT_TAG_SYSTEM = "urn:pneumoscan:report"  # Provenance.meta.tag: the report id it is about
URI_SYSTEM = "urn:ietf:rfc:3986"
LOINC = "http://loinc.org"
DICOM_UID = "urn:dicom:uid"
UCUM = "http://unitsofmeasure.org"
# Names the deterministic ids (uuid5) of every entry.
NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:pneumoscan:fhir")
OUT_OF_DISTRIBUTION = (
    "OUT OF DISTRIBUTION: the image is unlike the chest X-rays the model was trained on; do not rely on this label. "
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
# Security label of the report and its Observation: "artificial intelligence asserted".
AI_ASSERTED = {
    "security": [
        {
            "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
            "code": "AIAST",
            "display": "Artificial Intelligence asserted",
        }
    ]
}
DEVICE_NAME = "pneumoscan pneumonia-cnn"


def entry_url(report_id: str, part: str) -> str:
    """The fullUrl of one part (a resource type) of report ``report_id``: the same every time."""
    return f"urn:uuid:{uuid.uuid5(NAMESPACE, f'urn:pneumoscan:report:{uuid.UUID(report_id)}:{part}')}"


def device_url(model_version: str) -> str:
    """The fullUrl of the model's Device, shared by every report of that version."""
    return f"urn:uuid:{uuid.uuid5(NAMESPACE, f'{MODEL_SYSTEM}:{model_version}')}"


def report_entries(
    prediction: Prediction, *, report_id: str, issued: datetime, source: DicomSource | None = None
) -> list[tuple[str, Resource]]:
    """(fullUrl, resource) of the DiagnosticReport, Observation, Device and Provenance of one
    prediction; ``report_id`` (a UUID) is the report's identifier and seeds every fullUrl."""
    report_id = str(uuid.UUID(report_id))
    urls = {part: entry_url(report_id, part) for part in ("DiagnosticReport", "Observation", "Provenance")}
    urls["Device"] = device_url(prediction.model_version)
    study = study_reference(source)
    patient = source.patient if source is not None else None
    report = _diagnostic_report(prediction, report_id, issued, urls, study, patient)
    observation = _observation(prediction, report_id, issued, urls, study, patient)
    device = _device(prediction.model_version)
    provenance = _provenance(report_id, issued, urls, study, prediction.model_version)
    return [
        (urls["DiagnosticReport"], report),
        (urls["Observation"], observation),
        (urls["Device"], device),
        (urls["Provenance"], provenance),
    ]


def study_reference(source: DicomSource | None) -> dict | None:
    """The PACS's ImagingStudy of a DICOM input, by its Study Instance UID; the display names the
    series and the instance. None for JPEG and PNG, or a file without a study UID."""
    if source is None or not source.study_instance_uid:
        return None
    named = [f"Study {source.study_instance_uid}"]
    if source.series_instance_uid:
        named.append(f"series {source.series_instance_uid}")
    if source.sop_instance_uid:
        named.append(f"instance {source.sop_instance_uid}")
    return {
        "type": "ImagingStudy",
        "identifier": {"system": DICOM_UID, "value": f"urn:oid:{source.study_instance_uid}"},
        "display": ", ".join(named),
    }


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


def _filing(patient: PatientContext | None, *, with_order: bool) -> dict:
    """The patient (by identifier), the order (accession number, when ``with_order``) and the
    acquisition time a resource is filed under."""
    if patient is None:
        return {}
    filed: dict = {}
    if patient.patient_id:
        filed["subject"] = {
            "identifier": patient_identifier(patient),
            "display": "Patient of the referenced DICOM study",
        }
    if with_order and patient.accession_number:
        filed["basedOn"] = [
            {
                "type": "ServiceRequest",
                "identifier": {
                    "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "ACSN"}]},
                    "value": patient.accession_number,
                },
            }
        ]
    effective = fhir_datetime(patient.acquired)
    if effective:
        filed["effectiveDateTime"] = effective
    return filed


def _diagnostic_report(
    prediction: Prediction,
    report_id: str,
    issued: datetime,
    urls: dict[str, str],
    study: dict | None,
    patient: PatientContext | None,
) -> DiagnosticReport:
    report: dict = {
        "resourceType": "DiagnosticReport",
        "meta": AI_ASSERTED,
        "identifier": [{"system": URI_SYSTEM, "value": f"urn:uuid:{report_id}"}],
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
        **_filing(patient, with_order=True),
        "issued": issued.isoformat(),
        "result": [{"reference": urls["Observation"]}],
        "conclusion": (
            f"{OUT_OF_DISTRIBUTION if prediction.out_of_distribution else ''}"
            f"{prediction.label}: P(pneumonia) = {prediction.probability:.3f} at threshold "
            f"{prediction.threshold:.3f}. {NOT_FOR_DIAGNOSIS}"
        ),
        "conclusionCode": [LABEL_CONCEPTS[prediction.label]],
    }
    if study is not None:
        report["imagingStudy"] = [study]
    return DiagnosticReport.model_validate(report)


def _observation(
    prediction: Prediction,
    report_id: str,
    issued: datetime,
    urls: dict[str, str],
    study: dict | None,
    patient: PatientContext | None,
) -> Observation:
    code, display = INTERPRETATION[prediction.label]
    observation: dict = {
        "resourceType": "Observation",
        "meta": AI_ASSERTED,
        # Not the fullUrl: a server rewrites every occurrence of a fullUrl in a transaction.
        "identifier": [{"system": URI_SYSTEM, "value": entry_url(report_id, "Observation.identifier")}],
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
        **_filing(patient, with_order=False),
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
        "device": {"reference": urls["Device"]},
        "note": [{"text": NOT_FOR_DIAGNOSIS}],
    }
    if study is not None:
        observation["derivedFrom"] = [study]
    return Observation.model_validate(observation)


def _quantity_component(code: str, display: str, value: float) -> dict:
    return {
        "code": {"coding": [{"system": CODE_SYSTEM, "code": code, "display": display}], "text": display},
        "valueQuantity": {"value": round(value, 6), "unit": "probability", "system": UCUM, "code": "1"},
    }


def _device(model_version: str) -> Device:
    return Device.model_validate(
        {
            "resourceType": "Device",
            "identifier": [{"system": MODEL_SYSTEM, "value": model_version}],
            "status": "active",
            "manufacturer": "pneumoscan",
            "deviceName": [{"name": DEVICE_NAME, "type": "model-name"}],
            "version": [{"value": model_version}],
            "note": [{"text": "Screening software; not a medical device."}],
        }
    )


def _provenance(
    report_id: str, issued: datetime, urls: dict[str, str], study: dict | None, model_version: str
) -> Provenance:
    # R4's Provenance has no identifier: its tag names the report, for conditional creates.
    provenance: dict = {
        "resourceType": "Provenance",
        "meta": {"tag": [{"system": REPORT_TAG_SYSTEM, "code": report_id}]},
        "target": [{"reference": urls["DiagnosticReport"]}, {"reference": urls["Observation"]}],
        "recorded": issued.isoformat(),
        "agent": [
            {
                "type": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/provenance-participant-type",
                            "code": "author",
                            "display": "Author",
                        }
                    ]
                },
                "who": {"reference": urls["Device"], "display": f"{DEVICE_NAME} {model_version}"},
            }
        ],
    }
    if study is not None:
        provenance["entity"] = [{"role": "source", "what": study}]
    return Provenance.model_validate(provenance)
