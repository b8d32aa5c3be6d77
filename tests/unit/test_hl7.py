"""HL7 v2.5.1 ORU^R01: built and validated with hl7apy, re-parsed field by field with python-hl7,
and delivered through the outbox to a real MLLP listener answering AA, AE and AR."""

from __future__ import annotations

import pytest

from pneumoscan.delivery.mllp import Hl7Outbox, send_mllp
from pneumoscan.dicom.decode import DicomSource, PatientContext
from pneumoscan.errors import BlankImage
from pneumoscan.reports.hl7 import control_id, oru_r01
from pneumoscan.result import Result
from pneumoscan.schemas import Prediction
from tests.support.hl7_listener import Listener

PREDICTION = Prediction(label="PNEUMONIA", probability=0.8125, threshold=0.6659, model_version="tuned-1")
PATIENT = PatientContext(
    patient_id="PID-7788991",
    patient_id_issuer="HOSPITAL-A",
    accession_number="ACC-4711",
    placer_order_number="PL-1",
    filler_order_number="FI-2",
    acquired="20261130101502+0100",
)
DICOM = DicomSource("1.2.3", "1.2.3.4", "1.2.3.4.5", "1.2.840.10008.5.1.4.1.1.1.1", "DX", patient=PATIENT)


def result(label: str = "PNEUMONIA", patient: PatientContext = PATIENT, sop: str = "1.2.3.4.5") -> Result:
    prediction = PREDICTION.model_copy(update={"label": label})
    return Result(
        prediction=prediction, dicom=DicomSource("1.2.3", "1.2.3.4", sop, "1.2", "DX", patient=patient), file="a.dcm"
    )


def message(label: str = "PNEUMONIA", patient: PatientContext = PATIENT) -> str:
    return oru_r01(result(label, patient), control_id(result(label, patient)))


def test_the_message_reparsed_by_another_library_carries_every_field():
    with Listener() as listener:
        assert send_mllp("127.0.0.1", listener.port, message()) == "AA"
    parsed = listener.received[0]
    assert str(parsed.segment("MSH")[9]) == "ORU^R01^ORU_R01" and str(parsed.segment("MSH")[12]) == "2.5.1"
    assert str(parsed.segment("MSH")[10]) == control_id(result())
    pid = parsed.segment("PID")
    assert str(pid[3][0][0]) == "PID-7788991" and str(pid[3][0][3]) == "HOSPITAL-A"
    assert "Testpatient" not in str(parsed)
    assert str(parsed.segment("ORC")[2]) == "PL-1" and str(parsed.segment("ORC")[3]) == "FI-2"
    obr = parsed.segment("OBR")
    assert str(obr[2]) == "PL-1" and str(obr[3]) == "FI-2" and str(obr[18]) == "ACC-4711"
    assert str(obr[7]) == "20261130101502+0100"
    finding, probability = parsed.segments("OBX")
    assert str(finding[2]) == "CWE" and str(finding[5]) == "233604007^Pneumonia^SCT"
    assert str(probability[2]) == "NM" and float(str(probability[5])) == pytest.approx(0.8125)
    assert str(probability[6]) == "1^no units^UCUM"
    assert str(finding[11]) == str(probability[11]) == "P"
    assert str(finding[18]) == str(probability[18]) == "tuned-1"
    assert str(parsed.segment("NTE")[3]) == "AI result, not for diagnostic use"


def test_normal_and_escaped_values():
    text = message("NORMAL", PatientContext(patient_id="A|B^C", patient_id_issuer="X&Y"))
    assert "17621005^Normal^SCT" in text
    assert "A\\F\\B\\S\\C^^^X\\T\\Y" in text


def test_no_message_without_a_patient_identifier_or_a_prediction():
    with pytest.raises(ValueError):
        message(patient=PatientContext(accession_number="ACC-1"))
    with pytest.raises(ValueError):
        oru_r01(Result(error=BlankImage("x"), dicom=DICOM), "ID")


def test_the_outbox_keeps_a_message_until_it_is_acknowledged(tmp_path):
    outbox = Hl7Outbox(tmp_path, max_attempts=3, max_wait_s=0.0)
    assert outbox.put("M1", message()) and not outbox.put("M1", message()), "a message is queued once"
    with Listener() as listener:
        destination = f"127.0.0.1:{listener.port}"
        listener.answers.extend(["AE"])
        assert outbox.deliver(destination) == {"delivered": 0, "retried": 1, "failed": 0}
        assert outbox.pending() and "acknowledgement AE" in (outbox.outbox / "M1.attempts.json").read_text()
        assert outbox.deliver(destination) == {"delivered": 1, "retried": 0, "failed": 0}
        assert outbox.pending() == [] and not outbox.put("M1", message()), "delivered: never sent twice"
        # AR every time: set aside after max_attempts with the reason, never dropped.
        outbox.put("M2", message())
        listener.answers.extend(["AR"] * 3)
        for _ in range(3):
            outbox.deliver(destination)
        assert outbox.pending() == [] and (outbox.failed / "M2.hl7").exists()
        assert "acknowledgement AR" in (outbox.failed / "M2.attempts.json").read_text()
        assert len(listener.received) == 5


def test_an_unreachable_listener_costs_no_message_an_attempt(tmp_path):
    from service.launch import free_port

    outbox = Hl7Outbox(tmp_path, max_attempts=3, max_wait_s=60.0)
    outbox.put("M1", message())
    nobody = f"127.0.0.1:{free_port()}"
    for moment in (1000.0, 1001.0, 1002.0, 1004.0, 1008.0, 1016.0):
        assert outbox.deliver(nobody, now=moment) == {"delivered": 0, "retried": 0, "failed": 0}
    assert outbox.pending() and not (outbox.outbox / "M1.attempts.json").exists(), "no attempt counted"
    waiting = (tmp_path / ".destination.json").read_text()
    assert "ConnectionRefusedError" in waiting or "refused" in waiting.lower()
    with Listener() as listener:
        assert outbox.deliver(f"127.0.0.1:{listener.port}", now=1016.0) == {
            "delivered": 0,
            "retried": 0,
            "failed": 0,
        }, "the outbox waits for the destination's backoff"
        assert outbox.deliver(f"127.0.0.1:{listener.port}", now=2000.0)["delivered"] == 1
    assert not (tmp_path / ".destination.json").exists()


def test_message_ids_come_from_the_image_not_the_file_name():
    first, second = result(sop="1.2.3.4.5"), result(sop="1.2.3.4.6")
    assert first.file == second.file and control_id(first) != control_id(second), "two images, one file name"
    assert control_id(first) == control_id(result(sop="1.2.3.4.5")), "the same image: the same message"
    other_threshold = Result(prediction=PREDICTION.model_copy(update={"threshold": 0.5}), dicom=first.dicom)
    assert control_id(other_threshold) != control_id(first), "labelled another way: another message"
    assert len(control_id(first)) == 20


def test_an_upload_with_patient_context_sends_one_message(tmp_path, xray_image, xray_bytes):
    import asyncio
    import io

    import httpx
    import pydicom

    from pneumoscan.delivery.destinations import Delivery, Route
    from pneumoscan.delivery.mllp import MllpSender
    from service.http.app import create_app
    from service.http.batcher import MicroBatcher
    from service.http.context import ModelInfo
    from tests.support import STAND_IN_DECISION, stand_in_heatmap, stand_in_scores
    from tests.support.dicom_files import PATIENT_ID, make_dicom

    async def mean_pixel(planes):
        return stand_in_scores(planes)

    dataset = pydicom.dcmread(io.BytesIO(make_dicom(xray_image)))
    dataset.AccessionNumber = "ACC-9"
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    with Listener() as listener:
        info = ModelInfo(
            decision=STAND_IN_DECISION,
            max_pixels=50_000_000,
            max_batch_items=4,
            timeout_s=5.0,
            delivery=Delivery((Route(Hl7Outbox(tmp_path), MllpSender.to(f"127.0.0.1:{listener.port}")),)),
        )
        batcher = MicroBatcher(mean_pixel, max_batch_size=4, latency_budget_s=5.0)
        app = create_app(get_infer=lambda: batcher, get_explain=lambda: stand_in_heatmap, get_info=lambda: info)

        async def scenario():
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
                dicom = await client.post(
                    "/predict", content=buffer.getvalue(), headers={"Content-Type": "application/dicom"}
                )
                jpeg = await client.post("/predict", content=xray_bytes, headers={"Content-Type": "image/jpeg"})
                return dicom, jpeg

        dicom, jpeg = asyncio.run(scenario())
        received = list(listener.received)
    assert dicom.status_code == jpeg.status_code == 200
    assert len(received) == 1, "the JPEG carries no patient context: no message"
    assert str(received[0].segment("PID")[3]).split("^")[0] == PATIENT_ID
    assert str(received[0].segment("OBR")[18]) == "ACC-9"
    assert Hl7Outbox(tmp_path).pending() == []


def test_a_review_sends_the_result_again_final_or_corrected_under_the_same_order():
    from datetime import UTC, datetime

    import hl7

    from pneumoscan.reports.verification import Verification

    at = datetime(2026, 12, 7, 9, 30, tzinfo=UTC)
    agreed = Verification.of(result(), "agree", "PNEUMONIA", "Dr Ada Lovelace", at, 1)
    corrected = Verification.of(result(), "disagree", "NORMAL", "Dr Ada Lovelace", at, 2)
    unseen = Verification.of(result(), "disagree", "not_a_chest_xray", "Dr Ada Lovelace", at, 3)
    assert agreed is not None and corrected is not None and unseen is not None
    messages = [
        hl7.parse(oru_r01(result(), f"ID{n}", verification=v)) for n, v in enumerate((agreed, corrected, unseen))
    ]
    for parsed, status in zip(messages, "FCC", strict=True):
        assert str(parsed.segment("OBR")[25]) == status and str(parsed.segment("OBR")[3]) == "FI-2"
        for obx in parsed.segments("OBX"):
            assert str(obx[11]) == status and str(obx[16]) == "^Dr Ada Lovelace"
    assert str(messages[0].segments("OBX")[0][5]) == "233604007^Pneumonia^SCT"
    assert str(messages[1].segments("OBX")[0][5]) == "17621005^Normal^SCT"
    assert str(messages[2].segments("OBX")[0][5]) == "not-a-chest-xray^Not a chest radiograph^99PNEUMOSCAN"
    assert "Corrected by Dr Ada Lovelace: NORMAL (the model said PNEUMONIA)." in str(messages[1].segments("NTE")[1])
    refused = Result(error=BlankImage("x"), dicom=DICOM)
    assert Verification.of(refused, "agree", None, "Dr A", at, 1) is None
