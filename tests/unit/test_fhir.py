"""FHIR output: the DiagnosticReport validates with fhir.resources and says what it must."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timezone

import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.diagnosticreport import DiagnosticReport
from fhir.resources.R4B.operationoutcome import OperationOutcome
from pydantic import ValidationError

from pneumoscan import errors
from pneumoscan.dicom import DicomSource
from pneumoscan.fhir import (
    acceptable, accepts, accepts_fhir, diagnostic_report, ndjson_lines, operation_outcome, report_bundle, stream_bundle,
)
from pneumoscan.schemas import Prediction

SOURCE = DicomSource(
    study_instance_uid="1.2.826.0.1.3680043.8.498.1",
    series_instance_uid="1.2.826.0.1.3680043.8.498.2",
    sop_instance_uid="1.2.826.0.1.3680043.8.498.3",
    sop_class_uid="1.2.840.10008.5.1.4.1.1.1.1",
    modality="DX",
)


def contained(report: DiagnosticReport) -> dict[str, dict]:
    return {resource["id"]: resource for resource in report.model_dump(mode="json", exclude_none=True)["contained"]}


def roundtrip(report: DiagnosticReport) -> DiagnosticReport:
    return DiagnosticReport.model_validate_json(report.json())


@pytest.mark.parametrize(("label", "probability", "display", "interpretation"), [
    ("PNEUMONIA", 0.91, "Pneumonia suspected", "A"),
    ("NORMAL", 0.12, "No pneumonia suspected", "N"),
])
def test_report_carries_the_prediction(label, probability, display, interpretation):
    prediction = Prediction(label=label, probability=probability, threshold=0.65, model_version="tuned-1")
    request_id = uuid.uuid4().hex
    report = roundtrip(diagnostic_report(prediction, request_id=request_id, issued=datetime(2026, 1, 2, tzinfo=timezone.utc)))
    assert report.status == "preliminary"
    assert "not for diagnostic use" in report.conclusion
    assert report.identifier[0].value == f"urn:uuid:{uuid.UUID(request_id)}"
    # One finding code, meaning a suspicion: no disorder code in conclusionCode.
    assert [(c.code, c.display) for c in report.conclusionCode[0].coding] == [(label, display)]
    assert report.imagingStudy is None
    resources = contained(report)
    assert set(resources) == {"observation", "device"}
    assert [r["reference"] for r in report.model_dump(mode="json")["result"]] == ["#observation"]
    observation = resources["observation"]
    assert observation["status"] == "preliminary"
    assert observation["valueCodeableConcept"]["coding"] == [c.model_dump(exclude_none=True) for c in report.conclusionCode[0].coding]
    assert observation["interpretation"][0]["coding"][0]["code"] == interpretation
    values = {c["code"]["coding"][0]["code"]: c["valueQuantity"]["value"] for c in observation["component"]}
    assert values == {"probability": probability, "threshold": 0.65}
    assert observation["device"]["reference"] == "#device"
    assert resources["device"]["version"][0]["value"] == "tuned-1"


def test_dicom_input_is_cited_by_its_uids():
    prediction = Prediction(label="NORMAL", probability=0.2, threshold=0.65, model_version="tuned-1")
    report = roundtrip(diagnostic_report(prediction, source=SOURCE))
    assert [r.reference for r in report.imagingStudy] == ["#study"]
    study = contained(report)["study"]
    assert study["identifier"][0] == {"system": "urn:dicom:uid", "value": f"urn:oid:{SOURCE.study_instance_uid}"}
    series = study["series"][0]
    assert series["uid"] == SOURCE.series_instance_uid and series["modality"]["code"] == "DX"
    assert series["instance"][0]["uid"] == SOURCE.sop_instance_uid
    assert series["instance"][0]["sopClass"]["code"] == f"urn:oid:{SOURCE.sop_class_uid}"
    assert contained(report)["observation"]["derivedFrom"] == [{"reference": "#study"}]


def test_the_validator_is_real():
    prediction = Prediction(label="NORMAL", probability=0.2, threshold=0.65, model_version="tuned-1")
    document = diagnostic_report(prediction).model_dump(mode="json", exclude_none=True)
    DiagnosticReport.model_validate(document)
    for broken in ({"status": None}, {"issued": "yesterday"}, {"result": "#observation"}, {"unknown": 1}):
        with pytest.raises(ValidationError):
            DiagnosticReport.model_validate({**document, **broken})
    without_code = {key: value for key, value in document.items() if key != "code"}
    with pytest.raises(ValidationError):
        DiagnosticReport.model_validate(without_code)


def _entries() -> list:
    prediction = Prediction(label="PNEUMONIA", probability=0.8, threshold=0.65, model_version="tuned-1")
    return [
        diagnostic_report(prediction, source=SOURCE),
        operation_outcome("empty_image", "The file is empty.", "invalid"),
        diagnostic_report(prediction),
    ]


@pytest.mark.parametrize("count", [0, 1, 3])
def test_streamed_bundle_is_the_bundle(count):
    entries, issued, bundle_id = _entries()[:count], datetime(2026, 1, 2, tzinfo=timezone.utc), str(uuid.uuid4())
    text = "".join(stream_bundle(iter(entries), bundle_id=bundle_id, issued=issued))
    streamed = Bundle.model_validate_json(text)
    built = report_bundle(entries, request_id=bundle_id, issued=issued)
    assert streamed.type == "collection" and streamed.identifier == built.identifier
    assert streamed.timestamp == built.timestamp
    assert [e.resource.model_dump(mode="json") for e in streamed.entry or []] == [
        e.resource.model_dump(mode="json") for e in built.entry or []]


def test_ndjson_is_one_valid_resource_per_line():
    lines = list(ndjson_lines(_entries()))
    assert all(line.endswith("\n") and "\n" not in line[:-1] for line in lines)
    types = [json.loads(line)["resourceType"] for line in lines]
    assert types == ["DiagnosticReport", "OperationOutcome", "DiagnosticReport"]
    DiagnosticReport.model_validate_json(lines[0])
    OperationOutcome.model_validate_json(lines[1])


def test_accept_headers():
    assert accepts_fhir("application/json, application/fhir+json;q=0.9")
    assert not accepts_fhir("application/json")
    assert accepts("text/csv, Application/FHIR+NDJSON", "application/fhir+ndjson")
    assert not accepts("application/fhir+json", "application/fhir+ndjson")
    # q=0 means "not acceptable".
    assert not accepts_fhir("application/fhir+json;q=0, application/json")
    assert not accepts_fhir("application/fhir+json; q=0.0")
    assert acceptable("", "application/json") and acceptable("*/*", "application/json")
    assert acceptable("application/*;q=0.5", "application/json")
    assert not acceptable("text/csv", "application/json")
    assert not acceptable("*/*, application/json;q=0", "application/json")


def test_recorded_errors_come_back_as_their_class():
    error = errors.error_from_code("unsupported_modality", "A CT image.")
    assert type(error) is errors.UnsupportedModality and error.detail == "A CT image."
    assert isinstance(errors.error_from_code("empty_image", "x"), errors.InvalidImage)
    unknown = errors.error_from_code("never_heard_of_it", "y")
    assert type(unknown) is errors.PneumoscanError and unknown.code == "never_heard_of_it"
    assert errors.PneumoscanError.code == "error"
