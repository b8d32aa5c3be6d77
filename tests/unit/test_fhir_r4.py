"""Every kind of FHIR resource pneumoscan emits validates against the R4 definitions with
Medplum's validator (``tests/support/fhir_validator.py``): reports for JPEG and DICOM uploads
(with and without patient context), the batch Bundle with an OperationOutcome, error outcomes,
and a job's export as a Bundle and as NDJSON."""

from __future__ import annotations

import io
import json
from datetime import datetime, timezone

import pydicom
import pytest

from pneumoscan.errors import BlankImage, NotAChestXray
from pneumoscan.imaging import decode
from pneumoscan.fhir import ndjson_lines, outcome_for, report_bundle, result_resource, stream_bundle
from pneumoscan.jobs.results import row_resource
from pneumoscan.result import Result
from pneumoscan.schemas import Prediction
from service.app import create_app
from service.batcher import MicroBatcher
from service.http import ModelInfo
from tests.support import STAND_IN_DECISION, fhir_validator, require, stand_in_heatmap, stand_in_scores
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


def test_the_validator_is_real(validate):
    complaints = validate([{"resourceType": "Observation", "status": "final", "valueQuantity": {"value": "x"}}])
    assert len(complaints) == 1 and "expected number" in complaints[0]["error"]


def test_every_http_answer_in_fhir_is_valid_r4(validate, xray_image, xray_bytes):
    import asyncio

    import httpx

    async def mean_pixel(planes):
        return stand_in_scores(planes)

    app = create_app(get_infer=lambda: MicroBatcher(mean_pixel, max_batch_size=4, latency_budget_s=5.0),
                     get_explain=lambda: stand_in_heatmap, get_info=lambda: INFO)
    dicom = with_context(make_dicom(xray_image))

    async def scenario():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return [
                await client.post("/predict", content=xray_bytes, headers={"Content-Type": "image/jpeg", **FHIR}),
                await client.post("/predict", content=dicom, headers={"Content-Type": "application/dicom", **FHIR}),
                await client.post("/predict", content=make_dicom(xray_image),
                                  headers={"Content-Type": "application/dicom", **FHIR}),
                await client.post("/predict_batch", headers=FHIR, files=[
                    ("images", ("a.dcm", dicom, "application/dicom")),
                    ("images", ("bad.png", b"\x89PNG\r\n\x1a\nbroken", "image/png")),
                ]),
                await client.post("/predict", content=b"", headers={"Content-Type": "image/jpeg", **FHIR}),
            ]

    responses = asyncio.run(scenario())
    resources = [response.json() for response in responses]
    assert [r["resourceType"] for r in resources] == [
        "DiagnosticReport", "DiagnosticReport", "DiagnosticReport", "Bundle", "OperationOutcome"
    ]
    assert resources[1]["subject"]["identifier"]["value"] and resources[1]["effectiveDateTime"]
    assert resources[0]["meta"]["security"][0]["code"] == "AIAST"
    assert validate(resources) == []


def test_a_jobs_export_is_valid_r4(validate, xray_image):
    issued = datetime(2026, 11, 30, 10, 0, tzinfo=timezone.utc)
    prediction = Prediction(label="NORMAL", probability=0.1, threshold=0.66, model_version="v1", ood_score=0.5)
    source = decode(with_context(make_dicom(xray_image))).dicom
    rows = [
        Result(prediction=prediction, name="a.dcm", dicom=source).to_row("v1"),
        Result(prediction=prediction, name="b.png").to_row("v1"),
        Result(error=NotAChestXray("Unlike the training X-rays."), name="c.png").to_row("v1"),
    ]
    entries = [row_resource(row, job_id="job-1", issued=issued) for row in rows]
    bundle = json.loads("".join(stream_bundle(iter(entries), bundle_id="0" * 32, issued=issued)))
    lines = [json.loads(line) for line in ndjson_lines(iter(entries))]
    outcomes = [outcome_for(BlankImage("Nothing to see.")).model_dump(mode="json", exclude_none=True)]
    batch = report_bundle([result_resource(Result(error=BlankImage("x")))], request_id="1" * 32)
    assert validate([bundle, *lines, *outcomes, json.loads(batch.json())]) == []
