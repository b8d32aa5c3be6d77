"""``POST /jobs``, ``GET /jobs/{id}`` and its results on the real server, scored by the real worker."""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime
from pathlib import Path

from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.operationoutcome import OperationOutcome

from tests.support import API_KEY, check_fhir_export, make_input_folder, run_cli


def test_job_over_http_is_scored_by_the_worker(server, job_roots):
    folder, good, bad = make_input_folder(job_roots["allowed"] / "archive")
    with server.client() as client:
        created = client.post("/jobs", json={"folder": str(folder)})
        assert created.status_code == 202, created.text
        job_id = created.json()["job_id"]
        base = str(client.base_url).rstrip("/")
        assert created.headers["location"] == f"{base}/jobs/{job_id}"
        assert created.headers["content-location"] == f"{base}/jobs/{job_id}/export"
        assert created.json()["state"] == "queued"
        queued = client.get(f"/jobs/{job_id}").json()
        assert queued["state"] == "queued" and queued["total"] == good + bad
        early = client.get(f"/jobs/{job_id}/results")
        assert early.status_code == 409 and early.json()["error"] == "job_not_finished"
        assert f"0 of {good + bad}" in early.json()["detail"]
        assert client.get(f"/jobs/{job_id}/summary.png").status_code == 409
        early_fhir = client.get(f"/jobs/{job_id}/results", headers={"Accept": "application/fhir+json"})
        assert early_fhir.status_code == 409
        assert OperationOutcome.model_validate_json(early_fhir.text).issue[0].code == "conflict"
        # The export's status URL answers as FHIR Bulk Data's does while an export is in progress.
        polled = client.get(f"/jobs/{job_id}/export")
        assert polled.status_code == 202, polled.text
        assert polled.headers["x-progress"] == f"0 of {good + bad} files scored"
        assert 1 <= int(polled.headers["retry-after"]) <= 60 and polled.json()["state"] == "queued"
        early_file = client.get(f"/jobs/{job_id}/export/DiagnosticReport.ndjson")
        assert early_file.status_code == 409 and early_file.json()["error"] == "job_not_finished"

    worker = run_cli("worker", "--burst", env=server.settings)
    assert worker.returncode == 0, worker.stderr[-2000:]

    with server.client() as client:
        done = client.get(f"/jobs/{job_id}")
        assert done.status_code == 200
        assert done.json()["state"] == "done"
        assert done.json()["done"] == good + bad and done.json()["refused"] == done.json()["failed"] == bad
        again = client.post("/jobs", json={"folder": str(folder)})
        assert again.json() == {"job_id": job_id, "state": "done"}
        listed = {job["job_id"]: job for job in client.get("/jobs").json()["jobs"]}
        assert listed[job_id]["state"] == "done" and listed[job_id]["input_folder"] == str(folder.resolve())

        results = client.get(f"/jobs/{job_id}/results")
        assert results.status_code == 200 and results.headers["content-type"].startswith("text/csv")
        rows = list(csv.DictReader(io.StringIO(results.text)))
        assert results.text == (Path(done.json()["output"]) / "results.csv").read_text()
        bundle = client.get(f"/jobs/{job_id}/results", headers={"Accept": "application/fhir+json"})
        assert bundle.status_code == 200 and bundle.headers["content-type"] == "application/fhir+json"
        check_fhir_export(Bundle.model_validate_json(bundle.text), rows, folder)
        # The mixed-type NDJSON is gone: one file per type is at /export.
        not_ndjson = client.get(f"/jobs/{job_id}/results", headers={"Accept": "application/fhir+ndjson"})
        assert not_ndjson.status_code == 406 and not_ndjson.json()["error"] == "not_acceptable"
        assert f"/jobs/{job_id}/export" in not_ndjson.json()["detail"]
        check_bulk_export(client, job_id, Bundle.model_validate_json(bundle.text))
        assert client.get("/jobs/0123456789abcdef/results").status_code == 404
        plot = client.get(f"/jobs/{job_id}/summary.png")
        assert plot.status_code == 200 and plot.headers["content-type"] == "image/png"
        assert plot.content == (Path(done.json()["output"]) / "summary.png").read_bytes()
    with server.client(key=None) as anonymous:
        assert anonymous.get(f"/jobs/{job_id}/results").status_code == 401
        assert anonymous.get(f"/jobs/{job_id}/export").status_code == 401
        assert anonymous.get(f"/jobs/{job_id}/export/DiagnosticReport.ndjson").status_code == 401
        spec = anonymous.get("/docs.json").json()
    content = spec["paths"]["/jobs/{job_id}/results"]["get"]["responses"]["200"]["content"]
    assert set(content) == {"text/csv", "application/fhir+json"}
    exported = spec["paths"]["/jobs/{job_id}/export/{resource_type}.ndjson"]["get"]["responses"]["200"]["content"]
    assert set(exported) == {"application/fhir+ndjson"} and "/jobs/{job_id}/export" in spec["paths"]


def check_bulk_export(client, job_id: str, bundle: Bundle) -> None:
    """``GET /jobs/{id}/export``: a Bulk Data manifest whose absolute URLs each stream one type's
    resources, the same ones the Bundle holds; 404 for a type with no file."""
    response = client.get(f"/jobs/{job_id}/export")
    assert response.status_code == 200, response.text
    manifest = response.json()
    base = str(client.base_url).rstrip("/")
    assert manifest["request"] == f"{base}/jobs/{job_id}/export"
    assert manifest["requiresAccessToken"] is True, "the test server has an API key"
    assert datetime.fromisoformat(manifest["transactionTime"])
    assert [item["type"] for item in manifest["output"]] == ["DiagnosticReport", "Observation", "Device", "Provenance"]
    assert [item["type"] for item in manifest["error"]] == ["OperationOutcome"]
    in_bundle = [entry.fullUrl.removeprefix("urn:uuid:") for entry in bundle.entry]
    for item in manifest["output"] + manifest["error"]:
        assert item["url"] == f"{base}/jobs/{job_id}/export/{item['type']}.ndjson"
        answer = client.get(item["url"])
        assert answer.status_code == 200 and answer.headers["content-type"] == "application/fhir+ndjson"
        lines = [json.loads(line) for line in answer.text.splitlines()]
        assert len(lines) == item["count"] and {line["resourceType"] for line in lines} == {item["type"]}
        assert [line["id"] for line in lines] == [
            id_
            for id_, entry in zip(in_bundle, bundle.entry, strict=False)
            if entry.resource.get_resource_type() == item["type"]
        ]
    for missing in ("Patient", "ImagingStudy"):
        answer = client.get(f"/jobs/{job_id}/export/{missing}.ndjson")
        assert answer.status_code == 404 and answer.json()["error"] == "result_not_found"


def test_job_folders_are_checked(server, job_roots):
    outside, _, _ = make_input_folder(job_roots["forbidden"])
    with server.client() as client:
        refused = client.post("/jobs", json={"folder": str(outside)})
        assert refused.status_code == 403 and refused.json()["error"] == "folder_not_allowed"
        sneaky = client.post("/jobs", json={"folder": f"{job_roots['allowed']}/../forbidden/input"})
        assert sneaky.status_code == 403
        missing = client.post("/jobs", json={"folder": str(job_roots["allowed"] / "missing")})
        assert missing.status_code == 404 and missing.json()["error"] == "folder_not_found"
        output = client.post("/jobs", json={"folder": str(job_roots["allowed"]), "output": "/etc"})
        assert output.status_code == 403
        missing_field = client.post("/jobs", json={})
        assert missing_field.status_code == 400
        assert (
            missing_field.json()["detail"]
            == "body: Value error, name a folder or a dicomweb query, not both and not neither"
        )
        assert client.post("/jobs", json={"folder": ""}).status_code == 400
        (job_roots["allowed"] / "a-file.txt").write_text("not a folder")
        not_a_folder = client.post("/jobs", json={"folder": str(job_roots["allowed"] / "a-file.txt")})
        assert not_a_folder.status_code == 404 and not_a_folder.json()["error"] == "folder_not_found"
        nul = client.post("/jobs", json={"folder": f"{job_roots['allowed']}/\u0000x"})
        assert nul.status_code == 404 and nul.json()["error"] == "folder_not_found"
        nul_output = client.post("/jobs", json={"folder": str(job_roots["allowed"]), "output": "/tmp/\u0000"})
        assert nul_output.status_code == 403 and nul_output.json()["error"] == "folder_not_allowed"
        fhir_refusal = client.post("/jobs", json={}, headers={"Accept": "application/fhir+json"})
        assert fhir_refusal.status_code == 400
        assert OperationOutcome.model_validate_json(fhir_refusal.text).issue[0].details.coding[0].code == "bad_request"
        unknown = client.get("/jobs/0123456789abcdef")
        assert unknown.status_code == 404 and unknown.json()["error"] == "job_not_found"
        for not_an_id in ("nosuchjob", "0123456789ABCDEF", "tmp", "0123456789abcdef0"):
            answer = client.get(f"/jobs/{not_an_id}")
            assert answer.status_code == 404 and answer.json()["error"] == "job_not_found", not_an_id
        # A path in the id is no route at all.
        assert client.get("/jobs/..%2F..%2Fetc").json()["error"] == "not_found"
    with server.client(key=None) as anonymous:
        assert anonymous.post("/jobs", json={"folder": str(outside)}).status_code == 401
    assert API_KEY not in server.log()


def test_jobs_are_refused_without_input_roots(overloaded_server, tmp_path):
    folder, _, _ = make_input_folder(tmp_path)
    with overloaded_server.client(key=None) as client:
        response = client.post("/jobs", json={"folder": str(folder)})
    assert response.status_code == 403
    assert "PNEUMOSCAN_INPUT_ROOTS" in response.json()["detail"]
