"""FHIR output: a result's separate resources validate with fhir.resources and say what they must;
their ids are deterministic, a Bundle holds one Device per model version, nothing is contained,
and the DICOM study is cited by identifier only."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.diagnosticreport import DiagnosticReport
from pydantic import ValidationError

from pneumoscan import errors
from pneumoscan.delivery.fhir_server import transaction
from pneumoscan.dicom.decode import DicomSource, PatientContext
from pneumoscan.reports.fhir import (
    acceptable,
    accepts,
    accepts_fhir,
    collection_bundle,
    result_entries,
    standalone,
    stream_bundle,
)
from pneumoscan.result import Result
from pneumoscan.schemas import Prediction

ISSUED = datetime(2026, 1, 2, tzinfo=UTC)
SOURCE = DicomSource(
    study_instance_uid="1.2.826.0.1.3680043.8.498.1",
    series_instance_uid="1.2.826.0.1.3680043.8.498.2",
    sop_instance_uid="1.2.826.0.1.3680043.8.498.3",
    sop_class_uid="1.2.840.10008.5.1.4.1.1.1.1",
    modality="DX",
    patient=PatientContext(
        patient_id="PID-1", patient_id_issuer="HOSPITAL-A", accession_number="ACC-1", acquired="20261130101502+0100"
    ),
)
PREDICTION = Prediction(label="PNEUMONIA", probability=0.8, threshold=0.65, model_version="tuned-1")


def resources(result: Result, report_id: str | None = None) -> dict[str, dict]:
    """The result's resources as JSON, by type; also checks their order."""
    entries = result_entries(result, report_id=report_id or uuid.uuid4().hex, issued=ISSUED)
    assert [resource.get_resource_type() for _, resource in entries] == [
        "DiagnosticReport",
        "Observation",
        "Device",
        "Provenance",
    ]
    return {resource.get_resource_type(): {"fullUrl": url, **json.loads(resource.json())} for url, resource in entries}


def texts(value) -> str:
    return json.dumps(value)


@pytest.mark.parametrize(
    ("label", "probability", "display", "interpretation"),
    [
        ("PNEUMONIA", 0.91, "Pneumonia suspected", "A"),
        ("NORMAL", 0.12, "No pneumonia suspected", "N"),
    ],
)
def test_the_resources_carry_the_prediction(label, probability, display, interpretation):
    prediction = Prediction(label=label, probability=probability, threshold=0.65, model_version="tuned-1")
    request_id = uuid.uuid4().hex
    found = resources(Result(prediction=prediction), request_id)
    report, observation, device = found["DiagnosticReport"], found["Observation"], found["Device"]
    assert report["status"] == "preliminary" and "not for diagnostic use" in report["conclusion"]
    assert report["identifier"] == [{"system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{uuid.UUID(request_id)}"}]
    assert report["category"][0]["coding"][0]["code"] == "RAD" and report["code"]["coding"][0]["code"] == "18748-4"
    # One finding code, meaning a suspicion: no disorder code in conclusionCode.
    assert [(c["code"], c["display"]) for c in report["conclusionCode"][0]["coding"]] == [(label, display)]
    assert report["result"] == [{"reference": observation["fullUrl"]}]
    assert "imagingStudy" not in report and "subject" not in report and "derivedFrom" not in observation
    for resource in (report, observation):
        assert resource["meta"]["security"][0]["code"] == "AIAST"
    assert observation["status"] == "preliminary"
    assert observation["valueCodeableConcept"]["coding"] == report["conclusionCode"][0]["coding"]
    assert observation["interpretation"][0]["coding"][0]["code"] == interpretation
    values = {c["code"]["coding"][0]["code"]: c["valueQuantity"]["value"] for c in observation["component"]}
    assert values == {"probability": probability, "threshold": 0.65}
    assert observation["device"] == {"reference": device["fullUrl"]}
    assert observation["identifier"][0]["value"].startswith("urn:uuid:")
    assert device["version"] == [{"value": "tuned-1"}] and device["manufacturer"] == "pneumoscan"
    assert device["identifier"] == [{"system": "urn:pneumoscan:model", "value": "tuned-1"}]


def test_ids_are_deterministic():
    report_id = str(uuid.uuid4())
    first = result_entries(Result(prediction=PREDICTION, dicom=SOURCE), report_id=report_id, issued=ISSUED)
    again = result_entries(Result(prediction=PREDICTION, dicom=SOURCE), report_id=report_id.replace("-", ""))
    other = result_entries(Result(prediction=PREDICTION), report_id=str(uuid.uuid4()), issued=ISSUED)
    urls = [url for url, _ in first]
    assert urls == [url for url, _ in again] and all(url.startswith("urn:uuid:") for url in urls)
    assert len(set(urls)) == 4
    assert [resource.identifier for _, resource in first[:3]] == [resource.identifier for _, resource in again[:3]]
    # Another report: its own ids, the same Device.
    assert [url for url, _ in other][:2] != urls[:2] and other[2][0] == urls[2] and other[3][0] != urls[3]
    newer = Prediction(**{**PREDICTION.model_dump(), "model_version": "tuned-2"})
    assert result_entries(Result(prediction=newer), report_id=report_id)[2][0] != urls[2]
    # No identifier is an entry's fullUrl: a FHIR server rewrites fullUrls wherever they occur.
    identifiers = texts([identifier.value for _, resource in first[:3] for identifier in resource.identifier])
    assert not any(url in identifiers for url in urls)


def test_a_dicom_study_is_cited_by_identifier_only():
    found = resources(Result(prediction=PREDICTION, dicom=SOURCE))
    study = {
        "type": "ImagingStudy",
        "identifier": {"system": "urn:dicom:uid", "value": f"urn:oid:{SOURCE.study_instance_uid}"},
        "display": f"Study {SOURCE.study_instance_uid}, series {SOURCE.series_instance_uid}, "
        f"instance {SOURCE.sop_instance_uid}",
    }
    assert found["DiagnosticReport"]["imagingStudy"] == [study]
    assert found["Observation"]["derivedFrom"] == [study]
    assert found["Provenance"]["entity"] == [{"role": "source", "what": study}]
    assert "contained" not in texts(found) and "#" not in texts([r.get("result") for r in found.values()])


def test_the_patient_order_and_time_come_from_the_dicom_file():
    found = resources(Result(prediction=PREDICTION, dicom=SOURCE))
    report, observation = found["DiagnosticReport"], found["Observation"]
    subject = {
        "identifier": {"value": "PID-1", "assigner": {"display": "HOSPITAL-A"}},
        "display": "Patient of the referenced DICOM study",
    }
    assert report["subject"] == observation["subject"] == subject
    assert report["basedOn"][0]["identifier"]["value"] == "ACC-1" and "basedOn" not in observation
    assert report["effectiveDateTime"] == observation["effectiveDateTime"] == "2026-11-30T10:15:02+01:00"


def test_the_provenance_says_the_device_authored_the_report():
    report_id = str(uuid.uuid4())
    found = resources(Result(prediction=PREDICTION), report_id)
    provenance = found["Provenance"]
    assert provenance["target"] == [
        {"reference": found["DiagnosticReport"]["fullUrl"]},
        {"reference": found["Observation"]["fullUrl"]},
    ]
    [agent] = provenance["agent"]
    assert agent["type"]["coding"][0] == {
        "system": "http://terminology.hl7.org/CodeSystem/provenance-participant-type",
        "code": "author",
        "display": "Author",
    }
    assert agent["who"]["reference"] == found["Device"]["fullUrl"]
    assert provenance["recorded"] == ISSUED.isoformat().replace("+00:00", "Z")
    assert provenance["meta"]["tag"] == [{"system": "urn:pneumoscan:report", "code": report_id}]
    assert "entity" not in provenance


def test_a_refused_input_is_one_operation_outcome():
    [(url, outcome)] = result_entries(Result(error=errors.BlankImage("Nothing to see.")), report_id="1" * 32)
    assert url.startswith("urn:uuid:") and outcome.get_resource_type() == "OperationOutcome"
    assert outcome.issue[0].details.coding[0].code == "blank_image"


def _entries() -> list:
    """Three uploads of one model version and a refusal: one Device entry in a Bundle."""
    return [
        *result_entries(Result(prediction=PREDICTION, dicom=SOURCE), report_id=str(uuid.uuid4()), issued=ISSUED),
        *result_entries(Result(error=errors.EmptyImage("The file is empty.")), report_id=str(uuid.uuid4())),
        *result_entries(Result(prediction=PREDICTION), report_id=str(uuid.uuid4()), issued=ISSUED),
    ]


def test_a_bundle_holds_one_device_per_model_version_and_nothing_contained():
    bundle = json.loads(collection_bundle(_entries(), bundle_id=str(uuid.uuid4()), issued=ISSUED).json())
    assert [e["resource"]["resourceType"] for e in bundle["entry"]] == [
        "DiagnosticReport",
        "Observation",
        "Device",
        "Provenance",
        "OperationOutcome",
        "DiagnosticReport",
        "Observation",
        "Provenance",
    ]
    urls = [entry["fullUrl"] for entry in bundle["entry"]]
    assert len(set(urls)) == len(urls)
    second_observation = bundle["entry"][6]["resource"]
    assert second_observation["device"]["reference"] == urls[2]
    assert "contained" not in texts(bundle) and '"resourceType": "ImagingStudy"' not in texts(bundle)


@pytest.mark.parametrize("count", [0, 4, 8])
def test_streamed_bundle_is_the_bundle(count):
    entries, bundle_id = _entries()[:count], str(uuid.uuid4())
    streamed = Bundle.model_validate_json("".join(stream_bundle(iter(entries), bundle_id=bundle_id, issued=ISSUED)))
    built = collection_bundle(entries, bundle_id=bundle_id, issued=ISSUED)
    assert streamed.type == "collection" and streamed.identifier == built.identifier
    assert streamed.timestamp == built.timestamp
    assert [e.model_dump(mode="json") for e in streamed.entry or []] == [
        e.model_dump(mode="json") for e in built.entry or []
    ]


def test_the_standalone_form_links_by_type_and_id():
    entries = result_entries(Result(prediction=PREDICTION), report_id=str(uuid.uuid4()), issued=ISSUED)
    report, observation, device, provenance = standalone(entries)
    ids = [url.removeprefix("urn:uuid:") for url, _ in entries]
    assert [r["id"] for r in (report, observation, device, provenance)] == ids
    assert report["result"] == [{"reference": f"Observation/{observation['id']}"}]
    assert observation["device"] == {"reference": f"Device/{device['id']}"}
    assert [t["reference"] for t in provenance["target"]] == [f"DiagnosticReport/{ids[0]}", f"Observation/{ids[1]}"]
    assert provenance["agent"][0]["who"]["reference"] == f"Device/{ids[2]}"
    assert "urn:uuid:" + ids[0] not in texts([report, observation, device, provenance])
    DiagnosticReport.model_validate(report)


def test_a_push_is_four_conditional_creates():
    result = Result(prediction=PREDICTION, dicom=SOURCE)
    report_id = result.report_id
    bundle = transaction(result, ISSUED)
    Bundle.model_validate(bundle)
    requests = {e["resource"]["resourceType"]: e["request"] for e in bundle["entry"]}
    observation = next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Observation")
    assert requests == {
        "DiagnosticReport": {
            "method": "POST",
            "url": "DiagnosticReport",
            "ifNoneExist": f"identifier=urn:ietf:rfc:3986|urn:uuid:{report_id}",
        },
        "Observation": {
            "method": "POST",
            "url": "Observation",
            "ifNoneExist": f"identifier=urn:ietf:rfc:3986|{observation['identifier'][0]['value']}",
        },
        "Device": {"method": "POST", "url": "Device", "ifNoneExist": "identifier=urn:pneumoscan:model|tuned-1"},
        "Provenance": {"method": "POST", "url": "Provenance", "ifNoneExist": f"_tag=urn:pneumoscan:report|{report_id}"},
    }
    assert [e["fullUrl"] for e in bundle["entry"]] == [
        url for url, _ in result_entries(Result(prediction=PREDICTION, dicom=SOURCE), report_id=report_id)
    ]
    assert bundle["entry"][0]["resource"]["issued"].startswith(ISSUED.isoformat()[:19])


def test_the_validator_is_real():
    [(_, report), *_] = result_entries(Result(prediction=PREDICTION), report_id=str(uuid.uuid4()))
    document = report.model_dump(mode="json", exclude_none=True)
    DiagnosticReport.model_validate(document)
    for broken in ({"status": None}, {"issued": "yesterday"}, {"result": "urn:uuid:x"}, {"unknown": 1}):
        with pytest.raises(ValidationError):
            DiagnosticReport.model_validate({**document, **broken})
    without_code = {key: value for key, value in document.items() if key != "code"}
    with pytest.raises(ValidationError):
        DiagnosticReport.model_validate(without_code)


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
