"""DICOMweb against a real Orthanc with Debian's DICOMweb plugin: Orthanc's STOW-RS client pushes
a study to the real service, the real node and worker score it, and the node sends the SR and the
Secondary Capture back into Orthanc by STOW-RS; a malformed or partly bad STOW-RS request gets its
reasons, never a 500."""

from __future__ import annotations

import csv
import io
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest
from PIL import Image
from pydicom.uid import CTImageStorage, generate_uid

from pneumoscan.delivery.dicomweb import multipart_related
from service.launch import free_port, start, stop
from tests.support import API_KEY, assert_error, require, sr_validator, wait_until, xray_paths
from tests.support.dicom_files import PATIENT_ID, dciodvfy_errors, make_dicom
from tests.support.orthanc import DICOMWEB_PLUGIN, ORTHANC, Orthanc

MISSING = [
    name for name, found in [("Orthanc", ORTHANC), ("orthanc-dicomweb", os.path.exists(DICOMWEB_PLUGIN))] if not found
]
PART_LIMIT = 3 * 1024 * 1024
RELATED = 'multipart/related; type="application/dicom"; boundary=b0undary'


@dataclass
class Site:
    server: Any
    orthanc: Orthanc
    env: dict[str, str]
    folder: Path
    processes: list[subprocess.Popen]

    def logs(self) -> str:
        names = ("node.log", "worker.log")
        return "".join((self.folder / name).read_text(errors="replace") for name in names) + self.server.log()

    def post(self, path: str, body: bytes, content_type: str = RELATED) -> httpx.Response:
        headers = {"Authorization": f"Bearer {API_KEY}", "Content-Type": content_type}
        return httpx.post(f"{self.server.url}{path}", content=body, headers=headers, timeout=60)


@pytest.fixture(scope="module")
def site(tmp_path_factory, serve) -> Iterator[Site]:
    require("PNEUMOSCAN_REQUIRE_DICOM_PEERS", f"{', '.join(MISSING)} not installed" if MISSING else None)
    folder = tmp_path_factory.mktemp("dicomweb")
    orthanc = Orthanc(free_port(), free_port(), folder)
    env = {
        "PNEUMOSCAN_API_KEY": API_KEY,
        "PNEUMOSCAN_DATA_DIR": str(folder / "var"),
        "PNEUMOSCAN_MAX_UPLOAD_BYTES": str(PART_LIMIT),
        "PNEUMOSCAN_DICOM_PORT": str(free_port()),
        "PNEUMOSCAN_DICOM_HOST": "127.0.0.1",
        "PNEUMOSCAN_DICOM_STUDY_QUIET_S": "1",
        "PNEUMOSCAN_DICOM_RETRY_MAX_S": "2",
        "PNEUMOSCAN_DICOMWEB_DESTINATION": f"{orthanc.url}/dicom-web",
        # One instance per shard, and a short lease: a shard of a killed worker is scored again soon.
        "PNEUMOSCAN_SHARD_SIZE": "1",
        "PNEUMOSCAN_LEASE_SECONDS": "4",
        "TF_CPP_MIN_LOG_LEVEL": "3",
    }
    server = serve(folder / "serve", env)
    servers = {"pneumoscan": {"Url": f"{server.url}/dicomweb/", "HttpHeaders": {"Authorization": f"Bearer {API_KEY}"}}}
    orthanc.start(int(env["PNEUMOSCAN_DICOM_PORT"]), dicomweb_servers=servers)
    command = [sys.executable, "-m", "cli"]
    processes = [
        start([*command, "dicom-node"], env, folder / "node.log"),
        start([*command, "worker"], env, folder / "worker.log"),
    ]
    try:
        yield Site(server, orthanc, env, folder, processes)
    finally:
        for process in processes:
            stop(process)
        orthanc.stop()
        server.stop()


def radiograph(study_uid: str, source: Path, study_date: str = "20261115") -> bytes:
    image = Image.open(source).convert("L")
    image.thumbnail((768, 768))
    dataset = pydicom.dcmread(io.BytesIO(make_dicom(image)))
    dataset.StudyInstanceUID = study_uid
    dataset.AccessionNumber = "ACC-STOW"
    dataset.StudyDate = study_date
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def test_orthanc_pushes_a_study_by_stow_and_gets_its_results_back_by_stow(site, tmp_path):
    study_uid = generate_uid()
    pneumonia = next(p for p in xray_paths() if p.parent.name == "PNEUMONIA")
    uploaded = site.orthanc.upload(radiograph(study_uid, pneumonia))
    pushed = site.orthanc.stow_to("pneumoscan", uploaded["ParentStudy"])
    assert pushed.status_code == 200, pushed.text

    datasets = wait_until(
        lambda: site.orthanc.at_least(3, study_uid), 180, lambda: f"no results in the study:\n{site.logs()[-3000:]}"
    )
    srs = [d for d in datasets if d.Modality == "SR"]
    captures = [d for d in datasets if d.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7"]
    assert len(srs) == 1 and len(captures) == 1, [d.Modality for d in datasets]
    for result in (*srs, *captures):
        assert result.StudyInstanceUID == study_uid and result.PatientID == PATIENT_ID
        assert dciodvfy_errors(result, tmp_path) == [], result.Modality
    path = tmp_path / "result.sr.dcm"
    srs[0].save_as(path, enforce_file_format=True)
    assert sr_validator.errors(path) == []

    # Pushing the image again, and resending the results, stores nothing new. (The study itself now
    # holds the results too, which are no radiographs: Orthanc would get 202 with their failures.)
    assert site.orthanc.stow_to("pneumoscan", uploaded["ID"]).status_code == 200
    resent = httpx.post(
        f"{site.orthanc.url}/dicom-web/studies/{study_uid}",
        content=multipart_related([_part10(srs[0])], "b0undary"),
        headers={"Content-Type": RELATED},
        timeout=60,
    )
    assert resent.status_code == 200, resent.text
    time.sleep(6)
    assert len(site.orthanc.instances(study_uid)) == 3


def test_a_review_of_a_pushed_study_sends_a_verified_sr_naming_the_first(site, tmp_path):
    """Runs after the study above came back: a reader disagrees with its result, then another agrees."""
    with httpx.Client(base_url=site.server.url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=60) as client:
        node_jobs = [job for job in client.get("/jobs").json()["jobs"] if "/dicom/incoming/" in job["input_folder"]]
        job = node_jobs[-1]  # the first study pushed, the oldest
        study_uid = Path(job["input_folder"]).name
        [row] = csv.DictReader(io.StringIO(client.get(f"/jobs/{job['job_id']}/results").text))
        review = {"file": row["path"], "reader": "Dr Bea Rowe", "verdict": "disagree"}
        assert client.post(f"/jobs/{job['job_id']}/reviews", json=review).status_code == 201
    datasets = wait_until(lambda: site.orthanc.at_least(4, study_uid), 120, site.logs)
    srs = [d for d in datasets if d.Modality == "SR"]
    verified = next(sr for sr in srs if sr.VerificationFlag == "VERIFIED")
    preliminary = next(sr for sr in srs if sr.VerificationFlag == "UNVERIFIED")
    assert verified.PreliminaryFlag == "FINAL" and preliminary.PreliminaryFlag == "PRELIMINARY"
    assert str(verified.VerifyingObserverSequence[0].VerifyingObserverName) == "Dr Bea Rowe^"
    [predecessor] = verified.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence
    assert predecessor.ReferencedSOPInstanceUID == preliminary.SOPInstanceUID
    flipped = {"PNEUMONIA": "17621005", "NORMAL": "233604007"}[row["label"]]
    values = {str(e.value) for e in verified.iterall() if e.keyword in ("CodeValue", "TextValue") and e.value}
    assert flipped in values and any(value.startswith("Corrected by Dr Bea Rowe") for value in values), values
    assert dciodvfy_errors(verified, tmp_path) == []
    path = tmp_path / "verified.sr.dcm"
    verified.save_as(path, enforce_file_format=True)
    assert sr_validator.errors(path) == []

    # A second reader sides with the model: a replacement SR, whose predecessor is the first review's.
    with httpx.Client(base_url=site.server.url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=60) as client:
        second = {"file": row["path"], "reader": "Dr Cal Ode", "truth": row["label"]}
        assert client.post(f"/jobs/{job['job_id']}/reviews", json=second).status_code == 201
    datasets = wait_until(lambda: site.orthanc.at_least(5, study_uid), 120, site.logs)
    replacement = next(
        d for d in datasets if d.Modality == "SR" and "Dr Cal Ode" in str(d.get("VerifyingObserverSequence", [{}])[0])
    )
    [predecessor] = replacement.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence
    assert predecessor.ReferencedSOPInstanceUID == verified.SOPInstanceUID
    assert replacement.SeriesInstanceUID == verified.SeriesInstanceUID == preliminary.SeriesInstanceUID
    values = {str(e.value) for e in replacement.iterall() if e.keyword in ("CodeValue", "TextValue") and e.value}
    assert any(value.startswith("Verified by Dr Cal Ode") for value in values), values
    assert dciodvfy_errors(replacement, tmp_path) == []
    path = tmp_path / "replacement.sr.dcm"
    replacement.save_as(path, enforce_file_format=True)
    assert sr_validator.errors(path) == []


def _part10(dataset: pydicom.Dataset) -> bytes:
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def test_bad_parts_get_their_reasons_and_the_service_stays_up(site):
    study_uid = generate_uid()
    normal = next(p for p in xray_paths() if p.parent.name == "NORMAL")
    good = radiograph(study_uid, normal)
    ct = pydicom.dcmread(io.BytesIO(good))
    ct.SOPClassUID = ct.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ct.SOPInstanceUID = generate_uid()
    other_study = pydicom.dcmread(io.BytesIO(good))
    other_study.StudyInstanceUID, other_study.SOPInstanceUID = generate_uid(), generate_uid()
    parts = [good, b"not a DICOM file at all", _part10(ct), b"\0" * (PART_LIMIT + 1), _part10(other_study)]
    answer = site.post(f"/dicomweb/studies/{study_uid}", multipart_related(parts, "b0undary"))
    assert answer.status_code == 202, answer.text
    assert answer.headers["content-type"].startswith("application/dicom+json")
    failed = answer.json()["00081198"]["Value"]
    assert [item["00081197"]["Value"][0] for item in failed] == [0xA900, 0x0122, 0xA700, 0xA901]
    stored = answer.json()["00081199"]["Value"]
    assert [item["00081155"]["Value"][0] for item in stored] == [pydicom.dcmread(io.BytesIO(good)).SOPInstanceUID]
    warnings = answer.headers.get_list("warning")
    assert len(warnings) == 4 and "part 2: it is not a DICOM Part 10 file" in warnings[0]

    nothing = site.post("/dicomweb/studies", multipart_related([b"junk"], "b0undary"))
    assert nothing.status_code == 409 and nothing.json()["00081198"]["Value"][0]["00081197"]["Value"] == [0xA900]
    assert_error(site.post("/dicomweb/studies", good, "application/dicom"), 415, "unsupported_media_type")
    assert_error(
        site.post("/dicomweb/studies", b"--b0undary\r\nContent-Type: application/dicom\r\n\r\nabc"), 400, "bad_request"
    )
    assert_error(site.post("/dicomweb/studies/not-a-uid", multipart_related([good], "b0undary")), 400, "bad_request")
    refused = httpx.post(f"{site.server.url}/dicomweb/studies", content=b"", headers={"Content-Type": RELATED})
    assert_error(refused, 401, "unauthorized")
    assert httpx.get(f"{site.server.url}/readyz", timeout=10).status_code == 200
    assert "Traceback" not in site.server.log()


def test_a_job_over_a_qido_query_scores_each_instance_once_across_a_killed_worker(site):
    first, second = generate_uid(), generate_uid()
    sources = xray_paths()
    # A date of its own: the other tests' studies in this Orthanc are of 20261115.
    wanted = [radiograph(first, sources[0], "20261120"), radiograph(first, sources[1], "20261120")]
    wanted.append(radiograph(second, sources[2], "20261121"))
    earlier = radiograph(generate_uid(), sources[3], study_date="20250101")
    ct = pydicom.dcmread(io.BytesIO(radiograph(second, sources[4], "20261121")))
    ct.Modality, ct.SOPInstanceUID = "CT", generate_uid()
    ct.SOPClassUID = ct.file_meta.MediaStorageSOPClassUID = CTImageStorage
    for data in (*wanted, earlier, _part10(ct)):
        site.orthanc.upload(data)
    stop(site.processes[1])  # the job waits in the queue until a worker is started below
    query = {"url": f"{site.orthanc.url}/dicom-web", "study_date": "20261119-20261122"}
    with httpx.Client(base_url=site.server.url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=120) as client:
        created = client.post("/jobs", json={"dicomweb": query})
        assert created.status_code == 202, created.text
        job_id = created.json()["job_id"]
        assert client.get(f"/jobs/{job_id}").json()["total"] == 3
        again = client.post("/jobs", json={"dicomweb": query})
        assert again.json()["job_id"] == job_id
        refused = client.post("/jobs", json={"dicomweb": {**query, "url": "http://127.0.0.1:9/dicom-web"}})
        assert_error(refused, 403, "source_not_allowed")
        neither = client.post("/jobs", json={"output": None})
        assert_error(neither, 400, "bad_request")

        worker = start([sys.executable, "-m", "cli", "worker"], site.env, site.folder / "worker-killed.log")
        wait_until(lambda: client.get(f"/jobs/{job_id}").json()["done"] >= 1, 120, lambda: site.logs()[-3000:])
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()
        time.sleep(5)  # past the lease of the shard it was scoring
        site.processes[1] = start([sys.executable, "-m", "cli", "worker"], site.env, site.folder / "worker.log")
        done = wait_until(
            lambda: (status := client.get(f"/jobs/{job_id}").json())["state"] == "done" and status,
            180,
            lambda: site.logs()[-3000:],
        )
        assert done["done"] == 3 and done["failed"] == 0, done
        rows = list(csv.DictReader(io.StringIO(client.get(f"/jobs/{job_id}/results").text)))
    expected = {pydicom.dcmread(io.BytesIO(data)).SOPInstanceUID for data in wanted}
    assert sorted(row["sop_instance_uid"] for row in rows) == sorted(expected)
    assert all(row["status"] == "ok" for row in rows), rows
    # Each scored instance's SR and Secondary Capture come back into its study.
    for study, count, reports in ((first, 6, 2), (second, 4, 1)):
        datasets = wait_until(lambda study=study, count=count: site.orthanc.at_least(count, study), 120, site.logs)
        assert len([d for d in datasets if d.Modality == "SR"]) == reports, study
