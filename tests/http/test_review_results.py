"""Results that follow the reader, on the real service and worker with a real MLLP listener and
Medplum's FHIR server: preliminary when scored, final when a reader agrees, corrected when one
does not, under the same filler order number and the same DiagnosticReport identifier."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import pydicom
import pytest
from PIL import Image

from tests.support import API_KEY, fhir_validator, require, run_cli, wait_until, xray_paths
from tests.support.dicom_files import make_dicom
from tests.support.hl7_listener import Listener


@pytest.fixture(scope="module")
def reviewed(tmp_path_factory, serve) -> Iterator[tuple[Any, Listener, Any, dict]]:
    require("PNEUMOSCAN_REQUIRE_FHIR_VALIDATOR", fhir_validator.available())
    tmp = tmp_path_factory.mktemp("reviewed")
    roots = tmp / "input"
    folder = roots / "ward"
    folder.mkdir(parents=True)
    for number, source in enumerate(xray_paths()[:2]):
        image = Image.open(source).convert("L")
        image.thumbnail((512, 512))
        dataset = pydicom.dcmread(io.BytesIO(make_dicom(image)))
        dataset.AccessionNumber = f"ACC-{number}"
        dataset.save_as(folder / f"{number}.dcm", enforce_file_format=True)
    with Listener() as listener, fhir_validator.FhirServer() as fhir:
        env = {
            "PNEUMOSCAN_API_KEY": API_KEY,
            "PNEUMOSCAN_DATA_DIR": str(tmp / "var"),
            "PNEUMOSCAN_INPUT_ROOTS": str(roots),
            "PNEUMOSCAN_HL7_DESTINATION": f"127.0.0.1:{listener.port}",
            "PNEUMOSCAN_FHIR_URL": fhir.url,
        }
        server = serve(tmp / "serve", env)
        yield server, listener, fhir, {**env, "folder": str(folder)}
        server.stop()


def orders(listener: Listener) -> list[tuple[str, str, str]]:
    """(filler order number, OBR-25 status, OBX-5 finding) of each ORU received, in order."""
    return [
        (str(m.segment("OBR")[3]), str(m.segment("OBR")[25]), str(m.segments("OBX")[0][5]).split("^")[0])
        for m in listener.received
    ]


def test_a_review_sends_the_result_again_final_or_corrected(reviewed):
    server, listener, fhir, env = reviewed
    with server.client() as client:
        job_id = client.post("/jobs", json={"folder": env["folder"]}).json()["job_id"]
        worker = run_cli("worker", "--burst", env={k: v for k, v in env.items() if k != "folder"})
        assert worker.returncode == 0, worker.stderr[-2000:]
        wait_until(lambda: len(listener.received) >= 2, 60, "two preliminary ORU^R01 expected")
        rows = {row["path"]: row for row in _rows(client, job_id)}
        assert {status for _, status, _ in orders(listener)} == {"P"}

        agreed = client.post(f"/jobs/{job_id}/reviews", json={"file": "0.dcm", "reader": "Dr Ada", "verdict": "agree"})
        disagreed = {"file": "1.dcm", "reader": "Dr Bea", "verdict": "disagree"}
        assert agreed.status_code == 201 and client.post(f"/jobs/{job_id}/reviews", json=disagreed).status_code == 201
        wait_until(lambda: len(listener.received) >= 4, 60, lambda: f"no F and C ORU: {orders(listener)}")

    received = orders(listener)
    first, second = (rows[name]["accession_number"] for name in ("0.dcm", "1.dcm"))
    flipped = {"PNEUMONIA": "17621005", "NORMAL": "233604007"}[rows["1.dcm"]["label"]]
    assert (first, "F") in {(order, status) for order, status, _ in received}
    assert (second, "C", flipped) in received
    assert [status for order, status, _ in received if order == second] == ["P", "C"]
    reviewers = {str(m.segments("OBX")[0][16]) for m in listener.received if str(m.segment("OBR")[25]) != "P"}
    assert reviewers == {"^Dr Ada", "^Dr Bea"}

    def updated() -> list[dict]:
        found = fhir.search("DiagnosticReport")
        return found if found and all(report["status"] != "preliminary" for report in found) else []

    reports = wait_until(updated, 60, "the DiagnosticReports were not updated")
    assert sorted(report["status"] for report in reports) == ["corrected", "final"]
    assert len(reports) == 2, "updated in place: the same identifiers, no new reports"
    corrected = next(report for report in reports if report["status"] == "corrected")
    assert corrected["resultsInterpreter"] == [{"display": "Dr Bea"}]
    assert corrected["conclusion"].startswith("Corrected by Dr Bea:")


def _rows(client, job_id: str) -> list[dict]:
    import csv

    return list(csv.DictReader(io.StringIO(client.get(f"/jobs/{job_id}/results").text)))


def test_the_fhir_server_keeps_the_preliminary_version_in_history(reviewed):
    _, _, fhir, _ = reviewed
    for report in fhir.search("DiagnosticReport"):
        history = fhir.read(f"DiagnosticReport/{report['id']}/_history")
        statuses = sorted(entry["resource"]["status"] for entry in history["entry"])
        assert statuses == sorted(["preliminary", report["status"]]), statuses
