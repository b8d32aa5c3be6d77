"""The DICOM node against a real PACS: Orthanc sends a study, results come back into it as DICOM.

Orthanc (Debian's ``orthanc``) runs as a plain process on loopback with its own storage; dcmtk's
``storescu``/``echoscu`` are a second, independent sender; dicom3tools' ``dciodvfy`` checks the
results. The node and the worker are the real ``pneumoscan dicom-node`` and ``pneumoscan worker``.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest
from PIL import Image
from pydicom.uid import DigitalXRayImageStorageForPresentation, generate_uid

from service.launch import free_port, start, stop
from tests.support import require, run_cli, sr_validator, wait_until, xray_paths
from tests.support.dicom_files import PATIENT_ID, PATIENT_NAME, dciodvfy_errors, make_dicom
from tests.support.orthanc import Orthanc

ORTHANC = shutil.which("Orthanc")
TOOLS = ("storescu", "echoscu", "dciodvfy")
MISSING = [
    name for name, path in [("Orthanc", ORTHANC), *((tool, shutil.which(tool)) for tool in TOOLS)] if path is None
]
PNEUMONIA_CODE = "233604007"
ACCESSION = "ACC-4711"


@dataclass
class Site:
    orthanc: Orthanc
    node_port: int
    env: dict[str, str]
    folder: Path
    node: subprocess.Popen
    worker: subprocess.Popen

    def logs(self) -> str:
        return "".join((self.folder / name).read_text(errors="replace") for name in ("node.log", "worker.log"))


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Iterator[Site]:
    require(
        "PNEUMOSCAN_REQUIRE_DICOM_PEERS",
        f"{', '.join(MISSING)} not installed (apt-get install orthanc dcmtk dicom3tools)" if MISSING else None,
    )
    folder = tmp_path_factory.mktemp("dicom-site")
    orthanc = Orthanc(free_port(), free_port(), folder)
    node_port = free_port()
    orthanc.start(node_port)
    env = {
        "PNEUMOSCAN_DATA_DIR": str(folder / "var"),
        "PNEUMOSCAN_DICOM_PORT": str(node_port),
        "PNEUMOSCAN_DICOM_HOST": "127.0.0.1",
        "PNEUMOSCAN_DICOM_ALLOWED_AES": "ORTHANC,STORESCU,ECHOSCU",
        "PNEUMOSCAN_DICOM_DESTINATION": f"ORTHANC@127.0.0.1:{orthanc.dicom_port}",
        "PNEUMOSCAN_DICOM_STUDY_QUIET_S": "1",
        "PNEUMOSCAN_DICOM_RETRY_MAX_S": "2",
        "TF_CPP_MIN_LOG_LEVEL": "3",
    }
    command = [sys.executable, "-m", "cli"]
    node = start([*command, "dicom-node"], env, folder / "node.log")
    worker = start([*command, "worker"], env, folder / "worker.log")
    site = Site(orthanc, node_port, env, folder, node, worker)
    try:
        wait_until(lambda: echo("ECHOSCU", node_port).returncode == 0 or node.poll() is not None, 60, "node down")
        assert node.poll() is None, site.logs()[-3000:]
        yield site
    finally:
        for process in (node, worker):
            stop(process)
        orthanc.stop()


def echo(calling: str, port: int) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["echoscu", "-aet", calling, "-aec", "PNEUMOSCAN", "127.0.0.1", str(port)],
        capture_output=True,
        text=True,
        timeout=30,
    )


def storescu(port: int, *paths: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["storescu", "-aet", "STORESCU", "-aec", "PNEUMOSCAN", "127.0.0.1", str(port), *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def study_file(image_path: Path, study_uid: str, **options) -> bytes:
    """A DX chest radiograph of ``image_path`` in study ``study_uid``, with patient and order context."""
    dataset = pydicom.dcmread(io.BytesIO(make_dicom(Image.open(image_path).convert("L"), **options)))
    dataset.StudyInstanceUID = study_uid
    dataset.AccessionNumber = ACCESSION
    dataset.IssuerOfPatientID = "HOSPITAL-A"
    dataset.StudyDate, dataset.StudyTime = "20261130", "101500"
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def results_of(datasets: list[pydicom.Dataset]) -> tuple[list[pydicom.Dataset], list[pydicom.Dataset]]:
    srs = [d for d in datasets if d.Modality == "SR"]
    captures = [d for d in datasets if d.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7"]
    return srs, captures


def content_items(dataset: pydicom.Dataset) -> Iterator[pydicom.Dataset]:
    """Every item of an SR's content tree, depth first."""
    for item in dataset.get("ContentSequence", []):
        yield item
        yield from content_items(item)


def codes_in(dataset: pydicom.Dataset) -> set[str]:
    """Every code value and text value anywhere in an SR's content tree."""
    found: set[str] = set()
    for element in dataset.iterall():
        if element.keyword in ("CodeValue", "TextValue") and element.value:
            found.add(str(element.value))
    return found


def test_echo_only_from_allowed_calling_aes(site):
    assert echo("ECHOSCU", site.node_port).returncode == 0
    refused = echo("INTRUDER", site.node_port)
    assert refused.returncode != 0
    assert (
        "Association Rejected" in refused.stdout + refused.stderr
        or "rejected" in (refused.stdout + refused.stderr).lower()
    )


def test_a_study_from_the_pacs_comes_back_with_an_sr_and_a_secondary_capture(site, tmp_path):
    study_uid = generate_uid()
    pneumonia = next(p for p in xray_paths() if p.parent.name == "PNEUMONIA")
    frontal = study_file(pneumonia, study_uid)
    lateral = study_file(pneumonia, study_uid, view_position="LL")
    sources = [pydicom.dcmread(io.BytesIO(data)) for data in (frontal, lateral)]
    uploaded = [site.orthanc.upload(data) for data in (frontal, lateral)]
    site.orthanc.send_to_node(uploaded[0]["ParentStudy"])

    datasets = wait_until(
        lambda: site.orthanc.at_least(5, study_uid), 180, lambda: f"no results in the study:\n{site.logs()[-3000:]}"
    )
    srs, captures = results_of(datasets)
    assert len(srs) == 2 and len(captures) == 1, [d.Modality for d in datasets]
    for result in [*srs, *captures]:
        assert result.StudyInstanceUID == study_uid
        assert result.PatientID == PATIENT_ID and str(result.PatientName) == PATIENT_NAME
        assert result.AccessionNumber == ACCESSION
        assert dciodvfy_errors(result, tmp_path) == [], result.Modality
    for sr in srs:  # the SR templates, checked on each SR as the PACS stored and sent it back
        path = tmp_path / f"{sr.SOPInstanceUID}.sr.dcm"
        sr.save_as(path, enforce_file_format=True)
        assert sr_validator.errors(path) == [], sr.SOPInstanceUID
    # Each SR cites its source image.
    frontal_sr = next(sr for sr in srs if sources[0].SOPInstanceUID in str(sr))
    lateral_sr = next(sr for sr in srs if sources[1].SOPInstanceUID in str(sr))
    # The frontal view is scored: a coded finding and a probability that agree with the worker's
    # own record of the job.
    rows = [
        row for path in (Path(site.env["PNEUMOSCAN_DATA_DIR"]) / "jobs").glob("*/results.csv") for row in _csv(path)
    ]
    row = next(r for r in rows if r["sop_instance_uid"] == sources[0].SOPInstanceUID)
    values = [
        float(item.MeasuredValueSequence[0].NumericValue)
        for item in content_items(frontal_sr)
        if item.get("MeasuredValueSequence")
    ]
    assert any(abs(value - float(row["probability"])) < 1e-4 for value in values), values
    assert (PNEUMONIA_CODE in codes_in(frontal_sr)) == (row["label"] == "PNEUMONIA")
    # The lateral view is not analysed, and says why.
    assert PNEUMONIA_CODE not in codes_in(lateral_sr)
    assert any("unsupported_view" in text for text in codes_in(lateral_sr))
    capture = captures[0]
    assert capture.BurnedInAnnotation == "YES" and capture.PhotometricInterpretation == "RGB"

    # Sending the same images again creates no new instance.
    site.orthanc.send_to_node(*(instance["ID"] for instance in uploaded))
    time.sleep(8)
    assert len(site.orthanc.instances(study_uid)) == 5
    logs = site.logs()
    assert PATIENT_ID not in logs and PATIENT_NAME.split("^")[0] not in logs and ACCESSION not in logs


def _csv(path: Path) -> list[dict]:
    import csv

    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_results_wait_in_the_outbox_while_the_pacs_is_down(site, tmp_path):
    site.orthanc.stop()
    study_uid = generate_uid()
    normal = next(p for p in xray_paths() if p.parent.name == "NORMAL")
    path = tmp_path / "frontal.dcm"
    path.write_bytes(study_file(normal, study_uid))
    ct = pydicom.dcmread(pydicom.data.get_testdata_file("CT_small.dcm", download=False))
    ct_path = tmp_path / "ct.dcm"
    ct.save_as(ct_path, enforce_file_format=True)
    relabelled = pydicom.dcmread(ct_path)
    relabelled.Modality, relabelled.BodyPartExamined, relabelled.ViewPosition = "DX", "CHEST", "PA"
    relabelled.SOPClassUID = relabelled.file_meta.MediaStorageSOPClassUID = DigitalXRayImageStorageForPresentation
    relabelled.StudyInstanceUID = study_uid
    relabelled_path = tmp_path / "ct-as-dx.dcm"
    relabelled.save_as(relabelled_path, enforce_file_format=True)

    # dcmtk's storescu as a second sender; a CT slice is not a storage class the node accepts.
    assert storescu(site.node_port, path, relabelled_path).returncode == 0
    refused = storescu(site.node_port, ct_path)
    assert "no presentation context" in (refused.stdout + refused.stderr).lower() or refused.returncode != 0
    outbox = Path(site.env["PNEUMOSCAN_DATA_DIR"]) / "dicom" / "outbox"
    wait_until(
        lambda: len(list(outbox.glob("*.dcm"))) >= 3, 180, lambda: f"nothing in the outbox:\n{site.logs()[-3000:]}"
    )
    time.sleep(3)  # at least one failed delivery
    assert len(list(outbox.glob("*.dcm"))) >= 3
    assert "The dicom destination is unreachable" in site.logs()
    waiting = [
        json.loads(line)
        for line in run_cli("outbox", "list", "--destination", "dicom", "--json", env=site.env).stdout.splitlines()
    ]
    assert len(waiting) >= 3 and {m["state"] for m in waiting} == {"pending"}
    assert all(m["attempts"] == 0 for m in waiting), "an unreachable PACS costs no result an attempt"

    site.orthanc.start(site.node_port)
    datasets = wait_until(
        lambda: site.orthanc.at_least(3, study_uid),
        120,
        lambda: f"the outbox was not delivered:\n{site.logs()[-3000:]}",
    )
    wait_until(lambda: not list(outbox.glob("*.dcm")), 30, "the outbox kept delivered results")
    srs, captures = results_of(datasets)
    assert len(srs) == 2 and len(captures) == 1
    ct_sr = next(sr for sr in srs if relabelled.SOPInstanceUID in str(sr))
    assert PNEUMONIA_CODE not in codes_in(ct_sr)
    assert not any(relabelled.SOPInstanceUID in str(capture) for capture in captures)
