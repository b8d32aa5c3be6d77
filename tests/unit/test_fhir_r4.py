"""Every kind of FHIR resource pneumoscan emits validates against the R4 definitions with
Medplum's validator (``tests/support/fhir_validator.py``): the Bundles ``/predict`` answers for
JPEG and DICOM uploads (with and without patient context), the batch Bundle with an
OperationOutcome, error outcomes, a job's export as a Bundle and every resource of each of its
NDJSON files (the manifest is not FHIR), and the transaction Bundle pushed to a FHIR server."""

from __future__ import annotations

import io
import json

import pydicom
import pytest

from pneumoscan.delivery.fhir_server import transaction
from pneumoscan.errors import BlankImage, NotAChestXray
from pneumoscan.imaging.preprocess import decode
from pneumoscan.jobs.export import export, write_ndjson
from pneumoscan.reports.fhir import collection_bundle, outcome_for, result_entries
from pneumoscan.result import Result
from pneumoscan.schemas import Prediction
from service.http.app import create_app
from service.http.batcher import MicroBatcher
from service.http.context import ModelInfo
from tests.support import (
    STAND_IN_DECISION,
    fhir_validator,
    finished_job,
    require,
    stand_in_heatmap,
    stand_in_scores,
)
from tests.support.dicom_files import make_dicom

FHIR = {"Accept": "application/fhir+json"}
INFO = ModelInfo(decision=STAND_IN_DECISION, max_pixels=50_000_000, max_batch_items=4, timeout_s=5.0)


@pytest.fixture(scope="module")
def validate():
    require("PNEUMOSCAN_REQUIRE_FHIR_VALIDATOR", fhir_validator.available())
    return fhir_validator.validate


def with_context(data: bytes) -> bytes:
    dataset = pydicom.dcmread(io.BytesIO(data))
    dataset.IssuerOfPatientID, dataset.AccessionNumber = "HOSPITAL-A", "ACC-1"
    dataset.AcquisitionDate, dataset.AcquisitionTime, dataset.TimezoneOffsetFromUTC = "20261130", "101502", "+0100"
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def without_context(data: bytes) -> bytes:
    """The file without a patient ID: a report filed under no patient."""
    dataset = pydicom.dcmread(io.BytesIO(data))
    del dataset.PatientID
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def test_the_validator_is_real(validate):
    complaints = validate([{"resourceType": "Observation", "status": "final", "valueQuantity": {"value": "x"}}])
    assert len(complaints) == 1 and "expected number" in complaints[0]["error"]


def test_every_http_answer_in_fhir_is_valid_r4(validate, xray_image, xray_bytes):
    import asyncio

    import httpx

    async def mean_pixel(planes):
        return stand_in_scores(planes)

    app = create_app(
        get_infer=lambda: MicroBatcher(mean_pixel, max_batch_size=4, latency_budget_s=5.0),
        get_explain=lambda: stand_in_heatmap,
        get_info=lambda: INFO,
    )
    dicom = with_context(make_dicom(xray_image))

    async def scenario():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return [
                await client.post("/predict", content=xray_bytes, headers={"Content-Type": "image/jpeg", **FHIR}),
                await client.post("/predict", content=dicom, headers={"Content-Type": "application/dicom", **FHIR}),
                await client.post(
                    "/predict",
                    content=without_context(make_dicom(xray_image)),
                    headers={"Content-Type": "application/dicom", **FHIR},
                ),
                await client.post(
                    "/predict_batch",
                    headers=FHIR,
                    files=[
                        ("images", ("a.dcm", dicom, "application/dicom")),
                        ("images", ("bad.png", b"\x89PNG\r\n\x1a\nbroken", "image/png")),
                    ],
                ),
                await client.post("/predict", content=b"", headers={"Content-Type": "image/jpeg", **FHIR}),
            ]

    responses = asyncio.run(scenario())
    resources = [response.json() for response in responses]
    assert [r["resourceType"] for r in resources] == ["Bundle", "Bundle", "Bundle", "Bundle", "OperationOutcome"]
    types = [[entry["resource"]["resourceType"] for entry in bundle["entry"]] for bundle in resources[:4]]
    assert types[:3] == [["DiagnosticReport", "Observation", "Device", "Provenance"]] * 3
    assert types[3] == ["DiagnosticReport", "Observation", "Device", "Provenance", "OperationOutcome"]
    with_patient = resources[1]["entry"][0]["resource"]
    assert with_patient["subject"]["identifier"]["value"] and with_patient["effectiveDateTime"]
    assert (
        "subject" not in resources[2]["entry"][0]["resource"] and resources[2]["entry"][0]["resource"]["imagingStudy"]
    )
    assert resources[0]["entry"][0]["resource"]["meta"]["security"][0]["code"] == "AIAST"
    assert validate(resources) == []
    # Each entry on its own too: a resource a Bundle would hide from a check of the Bundle alone.
    assert validate([entry["resource"] for bundle in resources[:4] for entry in bundle["entry"]]) == []


def test_a_jobs_exports_and_pushes_are_valid_r4(validate, xray_image, tmp_path):
    prediction = Prediction(label="NORMAL", probability=0.1, threshold=0.66, model_version="v1", ood_score=0.5)
    source = decode(with_context(make_dicom(xray_image))).dicom
    job_dir = finished_job(
        tmp_path,
        [
            Result(prediction=prediction, file="a.dcm", dicom=source),
            Result(prediction=prediction, file="b.png"),
            Result(error=NotAChestXray("Unlike the training X-rays."), file="c.png"),
        ],
    )
    bundle = json.loads("".join(export(job_dir, "fhir")))
    manifest = write_ndjson(job_dir, tmp_path / "ndjson", request="test")
    lines = [
        json.loads(line)
        for item in manifest["output"] + manifest["error"]
        for line in (tmp_path / "ndjson" / f"{item['type']}.ndjson").read_text().splitlines()
    ]
    assert {line["resourceType"] for line in lines} == {
        "DiagnosticReport",
        "Observation",
        "Device",
        "Provenance",
        "OperationOutcome",
    }
    outcomes = [outcome_for(BlankImage("Nothing to see.")).model_dump(mode="json", exclude_none=True)]
    refused = result_entries(Result(error=BlankImage("x")), report_id="1" * 32)
    batch = json.loads(collection_bundle(refused, bundle_id="1" * 32).json())
    pushes = [
        transaction(Result(prediction=prediction, dicom=source)),
        transaction(Result(prediction=prediction, sha256="3" * 64)),
    ]
    assert validate([bundle, *lines, *outcomes, batch, *pushes]) == []
