"""A folder job of chest DICOMs with PNEUMOSCAN_HL7_DESTINATION set: one ORU^R01 per scored image
with patient context reaches a real MLLP listener, once."""

from __future__ import annotations

import io

import pydicom
from PIL import Image

from tests.support import run_cli, xray_paths
from tests.support.dicom_files import PATIENT_ID, make_dicom
from tests.support.hl7_listener import Listener


def test_each_scored_dicom_sends_one_oru_once(tmp_path):
    folder = tmp_path / "input"
    folder.mkdir()
    accessions = {}
    for index, path in enumerate(xray_paths()[:3]):
        dataset = pydicom.dcmread(io.BytesIO(make_dicom(Image.open(path).convert("L"))))
        dataset.AccessionNumber = accessions[f"{index}.dcm"] = f"ACC-{index}"
        dataset.save_as(folder / f"{index}.dcm", enforce_file_format=True)
    image = Image.open(xray_paths()[0]).convert("L")
    (folder / "lateral.dcm").write_bytes(make_dicom(image, view_position="LL"))  # refused: no message
    image.save(folder / "plain.png")  # scored, but no patient context: no message
    with Listener() as listener:
        env = {"PNEUMOSCAN_DATA_DIR": str(tmp_path / "var"), "PNEUMOSCAN_HL7_DESTINATION": f"127.0.0.1:{listener.port}"}
        for _ in range(2):  # the second run finds the job done and sends nothing again
            result = run_cli("score", str(folder), "--output", str(tmp_path / "jobs"), env=env)
            assert result.returncode == 0, result.stderr[-2000:]
        received = list(listener.received)
    assert len(received) == 3, [str(m.segment("MSH")[10]) for m in received]
    assert len({str(m.segment("MSH")[10]) for m in received}) == 3
    assert {str(m.segment("OBR")[18]) for m in received} == set(accessions.values())
    for message in received:
        assert str(message.segment("PID")[3]).split("^")[0] == PATIENT_ID
        assert str(message.segments("OBX")[0][5]).split("^")[0] in {"233604007", "17621005"}
    assert not list((tmp_path / "var" / "hl7" / "outbox").glob("*.hl7"))


def test_an_operator_lists_retries_and_drops_what_failed(tmp_path):
    import json

    from pneumoscan.delivery.mllp import Hl7Outbox

    outbox = Hl7Outbox(tmp_path / "var" / "hl7", max_attempts=1)
    for message_id in ("AAA", "BBB"):
        outbox.put(message_id, f"MSH|^~\\&|pneumoscan|X|||20261130||ORU^R01^ORU_R01|{message_id}|P|2.5.1")
    env = {"PNEUMOSCAN_DATA_DIR": str(tmp_path / "var")}
    with Listener() as listener:
        listener.answers.extend(["AR", "AR"])
        assert outbox.deliver(f"127.0.0.1:{listener.port}")["failed"] == 2
        listed = [json.loads(line) for line in run_cli("outbox", "list", "--json", env=env).stdout.splitlines()]
        assert [(m["destination"], m["id"], m["state"], m["attempts"]) for m in listed] == [
            ("hl7", "AAA", "failed", 1),
            ("hl7", "BBB", "failed", 1),
        ]
        assert listed[0]["last_error"] == "acknowledgement AR"
        text = run_cli("outbox", "list", "--destination", "hl7", env=env).stdout
        assert "AAA" in text and "acknowledgement AR" in text
        assert run_cli("outbox", "list", "--destination", "dicom", env=env).stdout.startswith("No messages")
        retried = run_cli("outbox", "retry", "--destination", "hl7", "AAA", env=env)
        assert retried.returncode == 0 and retried.stdout.startswith("1 message(s)")
        assert outbox.deliver(f"127.0.0.1:{listener.port}") == {"delivered": 1, "retried": 0, "failed": 0}
    dropped = run_cli("outbox", "drop", "BBB", "NOPE", env=env)
    assert dropped.returncode == 2 and "Dropped 1 message(s)" in dropped.stdout
    assert run_cli("outbox", "list", env=env).stdout.startswith("No messages")
    assert json.loads((tmp_path / "var" / "hl7" / "dropped.log").read_text())["id"] == "BBB"
