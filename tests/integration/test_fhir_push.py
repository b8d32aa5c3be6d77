"""Reports pushed to a real FHIR server (Medplum's FhirRouter, in memory, run by Node.js): a
folder job's reports arrive once, a re-push creates nothing, and a 4xx is recorded per report."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from pneumoscan.fhir_push import FhirOutbox
from pneumoscan.result import Result
from pneumoscan.schemas import Prediction
from tests.support import fhir_validator, require, run_cli, xray_paths
from tests.support.dicom_files import PATIENT_ID, make_dicom


@pytest.fixture(scope="module")
def server():
    require("PNEUMOSCAN_REQUIRE_FHIR_VALIDATOR", fhir_validator.available())
    with fhir_validator.FhirServer() as server:
        yield server


def test_a_jobs_reports_reach_the_server_once(server, tmp_path):
    folder = tmp_path / "input"
    folder.mkdir()
    for index, path in enumerate(xray_paths()[:3]):
        (folder / f"{index}.dcm").write_bytes(make_dicom(Image.open(path).convert("L")))
    (folder / "lateral.dcm").write_bytes(make_dicom(Image.open(xray_paths()[0]).convert("L"), view_position="LL"))
    env = {"PNEUMOSCAN_DATA_DIR": str(tmp_path / "var"), "PNEUMOSCAN_FHIR_URL": server.url}
    for _ in range(2):
        result = run_cli("score", str(folder), "--output", str(tmp_path / "jobs"), env=env)
        assert result.returncode == 0, result.stderr[-2000:]
    reports = [r for r in server.search("DiagnosticReport") if r.get("subject", {}).get("identifier", {}).get("value") == PATIENT_ID]
    assert len(reports) == 3, "one report per scored image; the refused lateral view has none"
    assert not list((tmp_path / "var" / "fhir" / "outbox").glob("*"))


def test_a_repush_creates_nothing_and_a_4xx_is_recorded_per_report(server, tmp_path):
    prediction = Prediction(label="NORMAL", probability=0.2, threshold=0.66, model_version="v1")
    report_id = "5b0c8a8e-1d5f-4d55-9a3e-0d7f3a1b2c3d"
    first, again = FhirOutbox(tmp_path / "first"), FhirOutbox(tmp_path / "again")
    for outbox in (first, again):
        assert outbox.put_result(Result(prediction=prediction, name="x.png"), report_id)
        assert outbox.deliver(server.url) == {"delivered": 1, "retried": 0, "failed": 0}
    identifier = f"urn:ietf:rfc:3986|urn:uuid:{report_id}"
    assert len(server.search("DiagnosticReport", identifier=identifier)) == 1
    # A server that refuses the transaction (here: no FHIR base at that path) answers 4xx: final,
    # recorded with the report, not retried.
    refused = FhirOutbox(tmp_path / "refused")
    refused.put_result(Result(prediction=prediction, name="y.png"), "6b0c8a8e-1d5f-4d55-9a3e-0d7f3a1b2c3d")
    assert refused.deliver(f"{server.url}/no-such-base") == {"delivered": 0, "retried": 0, "failed": 1}
    [reason] = refused.failed.glob("*.attempts.json")
    assert "HTTP 4" in json.loads(reason.read_text())["last_error"]
    assert list(refused.failed.glob("*.bundle.json"))
