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
