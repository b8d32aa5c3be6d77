"""A finished job's FHIR exports, in process on a job folder written as the workers leave it: the
collection Bundle, and the Bulk Data NDJSON files (one per resource type, refusals apart) with
their manifest."""

from __future__ import annotations

import csv
import json
from datetime import datetime

import pytest
from fhir.resources.R4B.bundle import Bundle

from pneumoscan.dicom.decode import DicomSource, PatientContext
from pneumoscan.errors import EmptyImage, NotAChestXray
from pneumoscan.jobs import export as job_export
from pneumoscan.jobs.export import export, kept_ndjson, ndjson_counts, ndjson_lines, write_ndjson
from pneumoscan.result import Result
from pneumoscan.schemas import Prediction
from tests.support import finished_job

DICOM = DicomSource(
    study_instance_uid="1.2.3",
    series_instance_uid="1.2.3.4",
    sop_instance_uid="1.2.3.4.5",
    sop_class_uid="1.2.840.10008.5.1.4.1.1.1.1",
    modality="DX",
    patient=PatientContext(patient_id="PID-1", acquired="20261130"),
)


def prediction(version: str = "v1", label: str = "NORMAL") -> Prediction:
    return Prediction(label=label, probability=0.25, threshold=0.5, model_version=version)


# In results.csv's (sorted) order: a.dcm, b/bad.png, c.png, d.png, e.jpeg.
RESULTS = [
    Result(prediction=prediction(), file="a.dcm", dicom=DICOM),
    Result(error=EmptyImage("The file is empty."), file="b/bad.png"),
    Result(prediction=prediction(label="PNEUMONIA"), file="c.png"),
    # A second model version: its own Device.
    Result(prediction=prediction("v2"), file="d.png"),
    Result(error=NotAChestXray("Unlike the training X-rays."), file="e.jpeg"),
]


@pytest.fixture()
def job_dir(tmp_path):
    return finished_job(tmp_path, RESULTS)


def read_lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_the_ndjson_export_is_one_file_per_type_and_a_manifest(job_dir, tmp_path):
    out = tmp_path / "export" / "nested"
    manifest = write_ndjson(job_dir, out, request="pneumoscan results JOB --format ndjson --out DIR")
    files = {path.name for path in out.iterdir()}
    assert files == {
        "DiagnosticReport.ndjson",
        "Observation.ndjson",
        "Device.ndjson",
        "Provenance.ndjson",
        "OperationOutcome.ndjson",
        "manifest.json",
    }
    assert json.loads((out / "manifest.json").read_text()) == manifest
    summary = json.loads((job_dir / "summary.json").read_text())
    assert manifest["transactionTime"] == summary["finished"]
    assert manifest["request"] == "pneumoscan results JOB --format ndjson --out DIR"
    assert manifest["requiresAccessToken"] is False
    assert [(item["type"], item["count"]) for item in manifest["output"]] == [
        ("DiagnosticReport", 3),
        ("Observation", 3),
        ("Device", 2),
        ("Provenance", 3),
    ]
    assert [(item["type"], item["count"]) for item in manifest["error"]] == [("OperationOutcome", 2)]
    for item in manifest["output"] + manifest["error"]:
        path = out / f"{item['type']}.ndjson"
        assert item["url"] == path.resolve().as_uri()
        lines = read_lines(path)
        assert len(lines) == item["count"] and {line["resourceType"] for line in lines} == {item["type"]}
    assert ndjson_counts(job_dir) == {item["type"]: item["count"] for item in manifest["output"] + manifest["error"]}


def test_the_ndjson_resources_link_by_type_and_id(job_dir, tmp_path):
    write_ndjson(job_dir, tmp_path / "out", request="test")
    by_type = {
        kind: read_lines(tmp_path / "out" / f"{kind}.ndjson")
        for kind in ("DiagnosticReport", "Observation", "Device", "Provenance")
    }
    ids = {kind: {resource["id"] for resource in resources} for kind, resources in by_type.items()}
    assert [device["version"][0]["value"] for device in by_type["Device"]] == ["v1", "v2"]
    for report in by_type["DiagnosticReport"]:
        assert report["result"][0]["reference"].removeprefix("Observation/") in ids["Observation"]
    for observation in by_type["Observation"]:
        assert observation["device"]["reference"].removeprefix("Device/") in ids["Device"]
    for provenance in by_type["Provenance"]:
        report, observation = (target["reference"] for target in provenance["target"])
        assert report.removeprefix("DiagnosticReport/") in ids["DiagnosticReport"]
        assert observation.removeprefix("Observation/") in ids["Observation"]
        assert provenance["agent"][0]["who"]["reference"].removeprefix("Device/") in ids["Device"]
    [dicom_report] = [r for r in by_type["DiagnosticReport"] if "imagingStudy" in r]
    assert dicom_report["imagingStudy"][0]["identifier"]["value"] == "urn:oid:1.2.3"
    assert dicom_report["subject"]["identifier"]["value"] == "PID-1"
    assert "urn:uuid:" + dicom_report["id"] not in (tmp_path / "out" / "Observation.ndjson").read_text()


def test_each_operation_outcome_names_its_row(job_dir, tmp_path):
    write_ndjson(job_dir, tmp_path / "out", request="test")
    issues = [outcome["issue"][0] for outcome in read_lines(tmp_path / "out" / "OperationOutcome.ndjson")]
    assert [issue["diagnostics"] for issue in issues] == [
        "results.csv row 2 (b/bad.png): The file is empty.",
        "results.csv row 5 (e.jpeg): Unlike the training X-rays.",
    ]
    assert [issue["details"]["coding"][0]["code"] for issue in issues] == ["empty_image", "not_a_chest_xray"]
    with (job_dir / "results.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [rows[1]["path"], rows[4]["path"]] == ["b/bad.png", "e.jpeg"]


def test_exports_are_deterministic_and_agree(job_dir, tmp_path):
    write_ndjson(job_dir, tmp_path / "first", request="test")
    write_ndjson(job_dir, tmp_path / "again", request="test")
    for kind in ("DiagnosticReport", "Observation", "Device", "Provenance", "OperationOutcome"):
        text = (tmp_path / "first" / f"{kind}.ndjson").read_text()
        assert text == (tmp_path / "again" / f"{kind}.ndjson").read_text()
        assert "".join(ndjson_lines(job_dir, kind)) == text
    bundle = "".join(export(job_dir, "fhir"))
    assert bundle == "".join(export(job_dir, "fhir"))
    Bundle.model_validate_json(bundle)
    entries = json.loads(bundle)["entry"]
    assert [entry["resource"]["resourceType"] for entry in entries] == [
        "DiagnosticReport",
        "Observation",
        "Device",
        "Provenance",  # a.dcm
        "OperationOutcome",  # b/bad.png
        "DiagnosticReport",
        "Observation",
        "Provenance",  # c.png: the v1 Device is already there
        "DiagnosticReport",
        "Observation",
        "Device",
        "Provenance",  # d.png, scored by v2
        "OperationOutcome",  # e.jpeg
    ]
    # The same resources in both forms: the NDJSON ids are the Bundle's fullUrls.
    for kind in ("DiagnosticReport", "Device", "OperationOutcome"):
        assert [r["id"] for r in read_lines(tmp_path / "first" / f"{kind}.ndjson")] == [
            entry["fullUrl"].removeprefix("urn:uuid:") for entry in entries if entry["resource"]["resourceType"] == kind
        ]
    summary = json.loads((job_dir / "summary.json").read_text())
    assert {
        datetime.fromisoformat(entry["resource"]["issued"].replace("Z", "+00:00"))
        for entry in entries
        if "issued" in entry["resource"]
    } == {datetime.fromisoformat(summary["finished"])}


def test_a_later_export_into_the_same_folder_leaves_no_stale_file(job_dir, tmp_path):
    write_ndjson(job_dir, tmp_path / "out", request="test")
    clean = finished_job(tmp_path / "clean", [Result(prediction=prediction(), file="x.png")])
    manifest = write_ndjson(clean, tmp_path / "out", request="test")
    assert manifest["error"] == [] and [item["count"] for item in manifest["output"]] == [1, 1, 1, 1]
    assert not (tmp_path / "out" / "OperationOutcome.ndjson").exists()
    assert not list((tmp_path / "out").glob(".*"))


def test_ndjson_is_not_a_single_stream_any_more(job_dir):
    with pytest.raises(ValueError, match="Unknown results format"):
        "".join(export(job_dir, "ndjson"))


def test_serving_one_file_keeps_every_file_in_the_job_folder_for_later(job_dir, tmp_path, monkeypatch):
    text = "".join(ndjson_lines(job_dir, "Observation"))
    kept = kept_ndjson(job_dir, "Observation")
    assert kept.read_text() == text and len(text.splitlines()) == 3
    kinds = ("DiagnosticReport", "Observation", "Device", "Provenance", "OperationOutcome")
    # One pass wrote every file of the export, and no partial file is left.
    assert sorted(path.name for path in kept.parent.iterdir()) == sorted(
        kept_ndjson(job_dir, kind).name for kind in kinds
    )
    write_ndjson(job_dir, tmp_path / "cli", request="test")

    def no_rebuild(*args):
        raise AssertionError("rebuilt although the file was kept")

    monkeypatch.setattr(job_export, "_row_entries", no_rebuild)
    for kind in kinds:
        assert "".join(ndjson_lines(job_dir, kind)) == (tmp_path / "cli" / f"{kind}.ndjson").read_text()


def test_an_interrupted_pass_keeps_nothing(job_dir):
    lines = ndjson_lines(job_dir, "DiagnosticReport")
    next(lines)
    lines.close()  # the client went away
    assert list(kept_ndjson(job_dir, "DiagnosticReport").parent.iterdir()) == []
    assert len(list(ndjson_lines(job_dir, "DiagnosticReport"))) == 3


def test_a_folder_that_cannot_keep_the_file_still_serves_it(job_dir, caplog):
    (job_dir / job_export.KEPT_EXPORT).write_text("a file where the export folder would go")
    assert len(list(ndjson_lines(job_dir, "Provenance"))) == 3
    assert "built again on each request" in caplog.text
