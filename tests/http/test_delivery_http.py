"""Results out of the real service: one HL7 ORU^R01 per image, however the files are named, once
however often it is sent; the outboxes' depth on ``/metrics``."""

from __future__ import annotations

import io

import pydicom
from PIL import Image

from tests.support import wait_until, xray_paths
from tests.support.dicom_files import make_dicom


def _dicom_of(patient_id: str, source: Image.Image) -> bytes:
    dataset = pydicom.dcmread(io.BytesIO(make_dicom(source)))
    dataset.PatientID = patient_id
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def test_two_patients_under_one_file_name_give_two_messages_and_a_resend_none(hl7_server):
    server, listener = hl7_server
    image = Image.open(xray_paths()[0]).convert("L")
    image.thumbnail((512, 512))
    first, second = _dicom_of("PAT-A", image), _dicom_of("PAT-B", image)
    files = [
        ("images", ("scan.dcm", first, "application/dicom")),
        ("images", ("scan.dcm", second, "application/dicom")),
    ]
    with server.client() as client:
        answer = client.post("/predict_batch", files=files)
        assert answer.status_code == 200 and all("label" in item for item in answer.json()["results"])
        wait_until(lambda: len(listener.received) >= 2, 30, "two ORU^R01 expected")
        # The same two images again, and one of them alone: nothing new to send.
        assert client.post("/predict_batch", files=files).status_code == 200
        assert client.post("/predict", content=first, headers={"Content-Type": "application/dicom"}).status_code == 200
        metrics = client.get("/metrics").text
    patients = sorted(str(message.segment("PID")[3]).split("^")[0] for message in listener.received)
    assert patients == ["PAT-A", "PAT-B"], patients
    assert len({str(message.segment("MSH")[10]) for message in listener.received}) == 2
    assert 'pneumoscan_outbox_messages{destination="hl7",state="delivered"} 2.0' in metrics
    assert 'pneumoscan_outbox_messages{destination="hl7",state="pending"} 0.0' in metrics
    assert 'pneumoscan_outbox_messages{destination="dicom",state="failed"} 0.0' in metrics
