"""A real PACS for the DICOM tests and the soak: Debian's Orthanc as a plain process on loopback,
with its own storage folder (kept across restarts) and the node as its one modality."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import httpx
import pydicom

from service.launch import start, stop
from tests.support import wait_until

ORTHANC = shutil.which("Orthanc")
DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"


@dataclass
class Orthanc:
    http_port: int
    dicom_port: int
    folder: Path
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self, node_port: int, dicomweb_servers: dict[str, dict] | None = None) -> None:
        """Orthanc with the node as its modality; with ``dicomweb_servers``, also Debian's DICOMweb
        plugin (its server at ``/dicom-web/``, and those servers for its STOW-RS client)."""
        config = {
            "Name": "pneumoscan-test",
            "StorageDirectory": str(self.folder / "storage"),
            "IndexDirectory": str(self.folder / "storage"),
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": "ORTHANC",
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomModalities": {"pneumoscan": ["PNEUMOSCAN", "127.0.0.1", node_port]},
            "Plugins": [],
            "StableAge": 1,
        }
        if dicomweb_servers is not None:
            config["Plugins"] = [DICOMWEB_PLUGIN]
            config["DicomWeb"] = {"Enable": True, "Root": "/dicom-web/", "Servers": dicomweb_servers}
        (self.folder / "orthanc.json").write_text(json.dumps(config))
        assert ORTHANC is not None, "Orthanc is not installed"
        self.process = start([ORTHANC, str(self.folder / "orthanc.json")], {}, self.folder / "orthanc.log")
        wait_until(lambda: answers(f"{self.url}/system"), 30, "Orthanc did not start")

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process)
            self.process = None

    def upload(self, data: bytes) -> dict:
        response = httpx.post(f"{self.url}/instances", content=data, timeout=30)
        response.raise_for_status()
        return response.json()

    def send_to_node(self, *resources: str) -> None:
        response = httpx.post(
            f"{self.url}/modalities/pneumoscan/store",
            json={"Resources": list(resources), "Synchronous": True},
            timeout=60,
        )
        response.raise_for_status()

    def stow_to(self, server: str, *resources: str) -> httpx.Response:
        """Orthanc's DICOMweb client pushes ``resources`` to ``server`` by STOW-RS."""
        return httpx.post(
            f"{self.url}/dicom-web/servers/{server}/stow",
            json={"Resources": list(resources), "Synchronous": True},
            timeout=120,
        )

    def at_least(self, count: int, study_uid: str) -> list[pydicom.Dataset] | None:
        """The study's instances once there are ``count`` of them; None before (or while down)."""
        try:
            datasets = self.instances(study_uid)
        except httpx.HTTPError:
            return None
        return datasets if len(datasets) >= count else None

    def instances(self, study_uid: str) -> list[pydicom.Dataset]:
        found = httpx.post(
            f"{self.url}/tools/find", json={"Level": "Study", "Query": {"StudyInstanceUID": study_uid}}, timeout=30
        ).json()
        datasets: list[pydicom.Dataset] = []
        for study in found:
            for instance in httpx.get(f"{self.url}/studies/{study}/instances", timeout=30).json():
                data = httpx.get(f"{self.url}/instances/{instance['ID']}/file", timeout=30).content
                datasets.append(pydicom.dcmread(io.BytesIO(data)))
        return datasets


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
