"""Reports pushed to a real FHIR server (Medplum's FhirRouter, in memory, run by Node.js): each
report arrives as its DiagnosticReport, Observation and Provenance with one Device per model
version, linked to each other; a re-push creates nothing, and a 4xx is recorded per report."""

from __future__ import annotations

import csv
import json

import pytest
from PIL import Image

from pneumoscan.delivery.fhir_server import FhirOutbox
from pneumoscan.result import Result
from pneumoscan.schemas import Prediction
from tests.support import METADATA, fhir_validator, require, run_cli, xray_paths
from tests.support.dicom_files import PATIENT_ID, make_dicom

TYPES = ("DiagnosticReport", "Observation", "Device", "Provenance")


@pytest.fixture(scope="module")
def server():
    require("PNEUMOSCAN_REQUIRE_FHIR_VALIDATOR", fhir_validator.available())
    with fhir_validator.FhirServer() as server:
        yield server


def stored(server) -> dict[str, int]:
    """How many resources of each type the server holds."""
    return {kind: len(server.search(kind)) for kind in TYPES}


def check_linked(server, report: dict, device: dict) -> None:
    """The report's Observation and Provenance are stored once each, and point where they must."""
    observation = server.read(report["result"][0]["reference"])
    assert observation["device"]["reference"] == f"Device/{device['id']}"
    [identifier] = [i["value"] for i in report["identifier"] if i["system"] == "urn:ietf:rfc:3986"]
    [provenance] = server.search("Provenance", _tag=f"urn:pneumoscan:report|{identifier.removeprefix('urn:uuid:')}")
    assert [target["reference"] for target in provenance["target"]] == [
        f"DiagnosticReport/{report['id']}",
        f"Observation/{observation['id']}",
    ]
    assert provenance["agent"][0]["who"]["reference"] == f"Device/{device['id']}"
    assert server.read(provenance["agent"][0]["who"]["reference"])["id"] == device["id"]
    assert server.read(provenance["target"][0]["reference"])["id"] == report["id"]
    assert len(server.search("Observation", identifier=observation["identifier"][0]["value"])) == 1


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
    reports = [
        r
        for r in server.search("DiagnosticReport")
        if r.get("subject", {}).get("identifier", {}).get("value") == PATIENT_ID
    ]
    assert len(reports) == 3, "one report per scored image; the refused lateral view has none"
    [device] = server.search("Device", identifier=f"urn:pneumoscan:model|{METADATA.version}")
    job_dir = next((tmp_path / "jobs").iterdir())
    with (job_dir / "results.csv").open(newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if row["status"] == "ok"]
    assert {r["identifier"][0]["value"] for r in reports} == {
        f"urn:uuid:{Result.from_row(row).report_id}" for row in rows
    }
    exported = json.loads(run_cli("results", str(job_dir), "--format", "fhir", env=env).stdout)
    pushed = {r["identifier"][0]["value"]: r["issued"] for r in reports}
    for entry in exported["entry"]:
        if entry["resource"]["resourceType"] == "DiagnosticReport":
            assert pushed[entry["resource"]["identifier"][0]["value"]][:19] == entry["resource"]["issued"][:19], (
                "one issued time whether pushed or exported"
            )
    for report in reports:
        check_linked(server, report, device)
    assert not list((tmp_path / "var" / "fhir" / "outbox").glob("*"))


def test_a_repush_creates_nothing_and_one_device_serves_every_report(server, tmp_path):
    prediction = Prediction(label="NORMAL", probability=0.2, threshold=0.66, model_version="push-test-1")
    images = {"x.png": "5b" * 32, "y.png": "7c" * 32}  # two images (their SHA-256)
    report_ids = [Result(prediction=prediction, sha256=digest).report_id for digest in images.values()]
    before = stored(server)
    first = FhirOutbox(tmp_path / "first")
    assert first.put_result(Result(prediction=prediction, file="x.png", sha256=images["x.png"]))
    assert first.deliver(server.url) == {"delivered": 1, "retried": 0, "failed": 0}
    after_one = stored(server)
    assert {kind: after_one[kind] - before[kind] for kind in TYPES} == dict.fromkeys(TYPES, 1)
    # A second report of the same model: its own report, Observation and Provenance, the same Device.
    assert first.put_result(Result(prediction=prediction, file="y.png", sha256=images["y.png"]))
    assert first.deliver(server.url)["delivered"] == 1
    after_two = stored(server)
    assert {kind: after_two[kind] - before[kind] for kind in TYPES} == {
        "DiagnosticReport": 2,
        "Observation": 2,
        "Device": 1,
        "Provenance": 2,
    }
    again = FhirOutbox(tmp_path / "again")
    for name, digest in images.items():
        assert again.put_result(Result(prediction=prediction, file=name, sha256=digest))
    assert again.deliver(server.url) == {"delivered": 2, "retried": 0, "failed": 0}
    assert stored(server) == after_two, "a re-push creates nothing"
    [device] = server.search("Device", identifier="urn:pneumoscan:model|push-test-1")
    for identifier in report_ids:
        [report] = server.search("DiagnosticReport", identifier=f"urn:ietf:rfc:3986|urn:uuid:{identifier}")
        check_linked(server, report, device)


def test_a_4xx_is_recorded_per_report(server, tmp_path):
    prediction = Prediction(label="NORMAL", probability=0.2, threshold=0.66, model_version="v1")
    # A server that refuses the transaction (here: no FHIR base at that path) answers 4xx: final,
    # recorded with the report, not retried.
    refused = FhirOutbox(tmp_path / "refused")
    refused.put_result(Result(prediction=prediction, file="y.png", sha256="6b" * 32))
    assert refused.deliver(f"{server.url}/no-such-base") == {"delivered": 0, "retried": 0, "failed": 1}
    [reason] = refused.failed.glob("*.attempts.json")
    assert "HTTP 4" in json.loads(reason.read_text())["last_error"]
    assert list(refused.failed.glob("*.bundle.json"))
