"""STOW-RS parsing in process: parts read as the body streams in, each checked and filed, and the
DICOM JSON store response."""

from __future__ import annotations

import copy
import io

import pydicom
import pytest
from PIL import Image
from pydicom.uid import CTImageStorage, generate_uid

from pneumoscan.delivery.dicomweb import multipart_related
from pneumoscan.dicom.store import DicomStore
from pneumoscan.dicom.stow import StowReader, StowRequestError, boundary_of, store_response, store_status
from tests.support import xray_paths
from tests.support.dicom_files import make_dicom


def part10(dataset: pydicom.Dataset) -> bytes:
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def radiograph() -> pydicom.Dataset:
    image = Image.open(xray_paths()[0]).convert("L")
    image.thumbnail((256, 256))
    return pydicom.dcmread(io.BytesIO(make_dicom(image)))


def read(store: DicomStore, body: bytes, study: str | None = None, chunk: int = 7, limit: int = 10**6):
    reader = StowReader(store, b"b0undary", study, limit)
    for start in range(0, len(body), chunk):
        reader.feed(body[start : start + chunk])
    return reader.close()


def test_parts_are_filed_as_they_stream_in_and_bad_ones_get_reasons(tmp_path, radiograph):
    store = DicomStore(tmp_path)
    ct = copy.deepcopy(radiograph)
    ct.SOPClassUID = ct.file_meta.MediaStorageSOPClassUID = CTImageStorage
    compressed = copy.deepcopy(radiograph)
    compressed.file_meta.TransferSyntaxUID = "1.2.3.4"
    elsewhere = copy.deepcopy(radiograph)
    elsewhere.StudyInstanceUID = generate_uid()
    limit = len(part10(radiograph)) + 10
    parts10 = [part10(radiograph), b"text", part10(ct), part10(compressed), part10(elsewhere), b"\0" * (limit + 1)]
    parts = read(store, multipart_related(parts10, "b0undary"), study=radiograph.StudyInstanceUID, limit=limit)
    assert [part.reason for part in parts] == [None, 0xA900, 0x0122, 0xC122, 0xA901, 0xA700]
    assert parts[0].new and parts[0].patient == radiograph.PatientID
    filed = tmp_path / "incoming" / radiograph.StudyInstanceUID / f"{radiograph.SOPInstanceUID}.dcm"
    assert filed.read_bytes() == part10(radiograph)
    assert parts[1].detail == "part 2: it is not a DICOM Part 10 file (InvalidDicomError)"
    assert store_status(parts) == 202
    response = store_response(parts)
    assert response["00081199"]["Value"] == [
        {
            "00081150": {"vr": "UI", "Value": [radiograph.SOPClassUID]},
            "00081155": {"vr": "UI", "Value": [radiograph.SOPInstanceUID]},
        }
    ]
    assert response["00081198"]["Value"][0] == {
        "00081150": {"vr": "UI"},
        "00081155": {"vr": "UI"},
        "00081197": {"vr": "US", "Value": [0xA900]},
    }
    again = read(store, multipart_related([part10(radiograph)], "b0undary"))
    assert again[0].stored and not again[0].new and store_status(again) == 200


def test_requests_that_cannot_be_read_are_refused_whole(tmp_path):
    assert boundary_of('multipart/related; type="application/dicom"; boundary=abc') == b"abc"
    for wrong in ("application/dicom", 'multipart/related; type="application/json"; boundary=x', None):
        with pytest.raises(StowRequestError) as refused:
            boundary_of(wrong)
        assert refused.value.media_type
    with pytest.raises(StowRequestError, match="closing boundary"):
        read(DicomStore(tmp_path), b"--b0undary\r\nContent-Type: application/dicom\r\n\r\nabc")
    with pytest.raises(StowRequestError, match="no part"):
        read(DicomStore(tmp_path), b"--b0undary--\r\n")
