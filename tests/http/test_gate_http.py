"""The input gate through the real service: what is not a chest X-ray gets a coded 422, never a label."""

from __future__ import annotations

import io

import pydicom
import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.operationoutcome import OperationOutcome
from PIL import Image

from pneumoscan.schemas import BatchItemError, BatchItemResult, BatchResponse
from tests.support import assert_error, check_prediction, grey_photo
from tests.support.dicom_files import make_dicom
from training.gate.not_xrays import not_xrays

REFUSALS = {"blank_image", "colour_image", "not_a_chest_xray"}
NOT_XRAYS = not_xrays()


@pytest.fixture(scope="module")
def ct_as_dx() -> bytes:
    """pydicom's CT test slice, re-labelled as a DX radiograph so the modality check lets it in."""
    from pydicom.data import get_testdata_file

    dataset = pydicom.dcmread(get_testdata_file("CT_small.dcm", download=False))
    dataset.Modality, dataset.BodyPartExamined = "DX", "CHEST"
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def test_every_non_xray_is_refused_with_a_code(server):
    with server.client() as client:
        for image in NOT_XRAYS:
            response = client.post("/predict", content=image.data, headers={"Content-Type": "image/png"})
            assert response.status_code == 422, (image.name, response.text)
            assert response.json()["error"] in REFUSALS, (image.name, response.json())


def test_x_rays_still_pass_the_gate(server, xray_files):
    with server.client() as client:
        for path in xray_files:
            response = client.post("/predict", content=path.read_bytes(), headers={"Content-Type": "image/jpeg"})
            prediction = check_prediction(response.json())
            assert not prediction.out_of_distribution and prediction.ood_score < 1.0


def test_dicom_that_is_not_a_chest_xray_or_cannot_be_displayed(server, ct_as_dx, xray_image):
    dicom = {"Content-Type": "application/dicom"}
    with server.client() as client:
        assert_error(client.post("/predict", content=ct_as_dx, headers=dicom), 422, "not_a_chest_xray")
        for window in ((128.0, 0.0), (128.0, -10.0)):
            broken = make_dicom(xray_image, bits=16, window=window)
            assert_error(client.post("/predict", content=broken, headers=dicom), 422, "blank_image")


def test_fhir_clients_get_an_operation_outcome(server):
    photo = next(image for image in NOT_XRAYS if image.name == "astronaut")
    fhir = {"Content-Type": "image/png", "Accept": "application/fhir+json"}
    with server.client() as client:
        codes = []
        for data in (photo.data, grey_photo("astronaut")):
            response = client.post("/predict", content=data, headers=fhir)
            assert response.status_code == 422
            codes.append(OperationOutcome.model_validate_json(response.content).issue[0].details.coding[0].code)
    assert codes == ["colour_image", "not_a_chest_xray"]


def test_batch_refuses_per_image(server, xray_files):
    blank = next(image for image in NOT_XRAYS if image.name == "black")
    photo = next(image for image in NOT_XRAYS if image.name == "camera")
    parts = [
        ("images", ("chest.jpeg", xray_files[0].read_bytes(), "image/jpeg")),
        ("images", ("blank.png", blank.data, "image/png")),
        ("images", ("camera.png", photo.data, "image/png")),
    ]
    with server.client() as client:
        response = client.post("/predict_batch", files=parts)
        fhir = client.post("/predict_batch", files=parts, headers={"Accept": "application/fhir+json"})
    assert response.status_code == 200, response.text
    results = BatchResponse.model_validate(response.json()).results
    assert isinstance(results[0], BatchItemResult)
    assert isinstance(results[1], BatchItemError) and results[1].error.code == "blank_image"
    assert isinstance(results[2], BatchItemError) and results[2].error.code == "not_a_chest_xray"
    bundle = Bundle.model_validate_json(fhir.content)
    kinds = [entry.resource.get_resource_type() for entry in bundle.entry]
    assert kinds == ["DiagnosticReport", "Observation", "Device", "Provenance", "OperationOutcome", "OperationOutcome"]


def test_explain_refuses_what_predict_refuses(server):
    photo = next(image for image in NOT_XRAYS if image.name == "grace_hopper")
    grey = grey_photo("grace_hopper")
    page = Image.new("L", (300, 300), 255)
    buffer = io.BytesIO()
    page.save(buffer, format="PNG")
    with server.client() as client:
        assert_error(
            client.post("/explain", content=photo.data, headers={"Content-Type": "image/jpeg"}), 422, "colour_image"
        )
        png = {"Content-Type": "image/png"}
        assert_error(client.post("/explain", content=grey, headers=png), 422, "not_a_chest_xray")
        assert_error(
            client.post("/explain", content=buffer.getvalue(), headers={"Content-Type": "image/png"}),
            422,
            "blank_image",
        )
