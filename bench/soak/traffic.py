"""The soak's work: Locust's HTTP users (a process of their own), folder jobs one after another,
and studies sent to the DICOM node with dcmtk's ``storescu``. Each keeps what the ledger checks:
the jobs it submitted, the studies the node acknowledged."""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pydicom
from PIL import Image
from pydicom.uid import generate_uid

from service.launch import REPO, start
from tests.support import xray_paths
from tests.support.dicom_files import make_dicom

LOCUSTFILE = Path(__file__).with_name("locustfile.py")


def dicom_of(image: Image.Image, patient_id: str, study_uid: str | None = None) -> bytes:
    """A DX chest radiograph of ``image`` for ``patient_id``, with fresh UIDs."""
    dataset = pydicom.dcmread(io.BytesIO(make_dicom(image)))
    dataset.PatientID = patient_id
    dataset.StudyInstanceUID = study_uid or generate_uid()
    dataset.SeriesInstanceUID = generate_uid()
    dataset.SOPInstanceUID = dataset.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def small_xrays(side: int = 768) -> list[Image.Image]:
    images = []
    for path in xray_paths():
        image = Image.open(path).convert("L")
        image.thumbnail((side, side))
        images.append(image)
    return images


def make_pool(folder: Path, dicoms: int = 12) -> Path:
    """What the HTTP users post: the fixture X-rays as they are, and ``dicoms`` DICOM files of them,
    each for a patient of its own."""
    folder.mkdir(parents=True, exist_ok=True)
    for path in xray_paths():
        shutil.copyfile(path, folder / path.name)
    images = small_xrays()
    for index in range(dicoms):
        (folder / f"patient-{index:03d}.dcm").write_bytes(dicom_of(images[index % len(images)], f"SOAK-{index:03d}"))
    return folder


def start_locust(url: str, pool: Path, users: int, seconds: int, out: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--host", url]
    command += ["--users", str(users), "--spawn-rate", str(users), "--run-time", f"{seconds}s", "--stop-timeout", "35"]
    command += ["--only-summary", "--loglevel", "WARNING"]
    env = {"SOAK_POOL": str(pool), "SOAK_REQUESTS": str(out / "requests.jsonl")}
    return start(command, env, out / "locust.log")


@dataclass
class Job:
    job_id: str
    folder: Path
    files: int
    submitted: float


@dataclass
class JobRunner:
    """Folder jobs of ``files`` X-rays each through ``POST /jobs``, one after another."""

    url: str
    input_root: Path
    files: int
    jobs: list[Job] = field(default_factory=list)
    requests: list[dict] = field(default_factory=list)  # each POST /jobs, as the Locust users record theirs
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        sources = xray_paths()
        index = 0
        while not self.stop.is_set():
            folder = self.input_root / f"job-{index:03d}"
            folder.mkdir(parents=True, exist_ok=True)
            for n in range(self.files):
                source = sources[n % len(sources)]
                shutil.copyfile(source, folder / f"{n:04d}{source.suffix}")
            job_id = self._submit(folder)
            if job_id is None:
                break
            self.jobs.append(Job(job_id, folder, self.files, time.time()))
            self.wait(job_id, until=lambda: self.stop.is_set())
            index += 1

    def _submit(self, folder: Path) -> str | None:
        while not self.stop.is_set():
            began = time.time()
            record = {"name": "POST /jobs", "status": 0, "retry_after": None, "error": None}
            try:
                response = httpx.post(f"{self.url}/jobs", json={"folder": str(folder)}, timeout=30)
                record.update(status=response.status_code, retry_after=response.headers.get("Retry-After"))
                if response.status_code != 202:
                    record["error"] = response.text[:200]
            except httpx.HTTPError as exc:
                record["error"] = f"{type(exc).__name__}: {exc}"[:300]
            self.requests.append({"t": round(time.time(), 3), "ms": round((time.time() - began) * 1000, 1), **record})
            if record["status"] == 202:
                return response.json()["job_id"]
            time.sleep(2)
        return None

    def state(self, job_id: str) -> str | None:
        try:
            return httpx.get(f"{self.url}/jobs/{job_id}", timeout=10).json().get("state")
        except (httpx.HTTPError, ValueError):
            return None

    def wait(self, job_id: str, until, timeout: float = 900) -> str | None:
        deadline = time.monotonic() + timeout
        state = None
        while time.monotonic() < deadline and not until():
            state = self.state(job_id)
            if state in ("done", "failed"):
                return state
            time.sleep(1)
        return state


@dataclass
class StudySender:
    """A study of ``instances`` X-rays every ``every_s`` seconds, sent to the node with storescu
    until the node acknowledges all of it (it may be down)."""

    node_port: int
    folder: Path
    every_s: float = 8.0
    instances: int = 2
    acknowledged: dict[str, list[str]] = field(default_factory=dict)  # study UID -> SOP instance UIDs
    attempts: int = 0
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        images = small_xrays(512)
        index = 0
        while not self.stop.is_set():
            study_uid = generate_uid()
            folder = self.folder / f"study-{index:04d}"
            folder.mkdir(parents=True, exist_ok=True)
            sops = []
            for n in range(self.instances):
                data = dicom_of(images[(index + n) % len(images)], f"STUDY-{index:04d}", study_uid)
                path = folder / f"{n}.dcm"
                path.write_bytes(data)
                sops.append(str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID))
            while not self.stop.is_set():
                if self._send(folder):
                    self.acknowledged[study_uid] = sops
                    break
                time.sleep(2)
            index += 1
            self.stop.wait(self.every_s)

    def _send(self, folder: Path) -> bool:
        self.attempts += 1
        paths = sorted(str(path) for path in folder.glob("*.dcm"))
        command = ["storescu", "-aet", "STORESCU", "-aec", "PNEUMOSCAN", "127.0.0.1", str(self.node_port), *paths]
        try:
            return subprocess.run(command, capture_output=True, timeout=60, cwd=REPO).returncode == 0
        except subprocess.TimeoutExpired:
            return False
