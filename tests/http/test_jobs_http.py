"""``POST /jobs`` and ``GET /jobs/{id}`` on the real server, scored by the real worker."""

from __future__ import annotations

from tests.conftest import run_cli
from tests.http.conftest import API_KEY
from tests.integration.conftest import make_input_folder


def test_job_over_http_is_scored_by_the_worker(server, job_roots):
    folder, good, bad = make_input_folder(job_roots["allowed"] / "archive")
    with server.client() as client:
        created = client.post("/jobs", json={"folder": str(folder)})
        assert created.status_code == 202, created.text
        job_id = created.json()["job_id"]
        assert created.json()["state"] == "queued"
        queued = client.get(f"/jobs/{job_id}").json()
        assert queued["state"] == "queued" and queued["total"] == good + bad

    worker = run_cli("worker", "--burst", env=server.settings)
    assert worker.returncode == 0, worker.stderr[-2000:]

    with server.client() as client:
        done = client.get(f"/jobs/{job_id}")
        assert done.status_code == 200
        assert done.json()["state"] == "done"
        assert done.json()["done"] == good + bad and done.json()["failed"] == bad
        again = client.post("/jobs", json={"folder": str(folder)})
        assert again.json() == {"job_id": job_id, "state": "done"}


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
        assert client.post("/jobs", json={}).status_code == 400
        unknown = client.get("/jobs/0123456789abcdef")
        assert unknown.status_code == 404 and unknown.json()["error"] == "job_not_found"
        assert client.get("/jobs/..%2F..%2Fetc").status_code in {400, 404}
    with server.client(key=None) as anonymous:
        assert anonymous.post("/jobs", json={"folder": str(outside)}).status_code == 401
    assert API_KEY not in server.log()


def test_jobs_are_refused_without_input_roots(overloaded_server, tmp_path):
    folder, _, _ = make_input_folder(tmp_path)
    with overloaded_server.client(key=None) as client:
        response = client.post("/jobs", json={"folder": str(folder)})
    assert response.status_code == 403
    assert "PNEUMOSCAN_INPUT_ROOTS" in response.json()["detail"]
