"""Batch jobs through the real CLI, the real Huey worker and a real Redis: nothing lost."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pydicom
import pytest
from fhir.resources.R4B.bundle import Bundle
from PIL import Image

from pneumoscan.jobs import export as job_export
from pneumoscan.jobs.folder import Lease
from service.launch import free_port
from tests.support import REPO_ROOT, check_fhir_export, make_input_folder, run_cli


def read_results(job_dir: Path) -> list[dict]:
    with (job_dir / "results.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def status(job: str, env: dict) -> dict:
    result = run_cli("status", job, "--json", env=env)
    return json.loads(result.stdout)


def start_worker(env: dict, log: Path, *args: str) -> subprocess.Popen:
    with log.open("ab") as handle:
        return subprocess.Popen(
            [sys.executable, "-m", "cli", "worker", *args],
            cwd=REPO_ROOT,
            env={**os.environ, **env},
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def wait_for(predicate, timeout: float = 120, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False


def test_score_in_process_writes_a_row_per_file(tmp_path):
    folder, good, bad = make_input_folder(tmp_path)
    result = run_cli("score", str(folder), "--output", str(tmp_path / "out"), env={"PNEUMOSCAN_SHARD_SIZE": "3"})
    assert result.returncode == 0, result.stderr[-2000:]
    job_dir = next((tmp_path / "out").iterdir())
    rows = read_results(job_dir)
    assert len(rows) == good + bad
    assert [row["path"] for row in rows] == sorted(row["path"] for row in rows)
    by_path = {row["path"]: row for row in rows}
    assert by_path["corrupt/not-an-image.png"]["error_code"] == "not_an_image"
    assert by_path["corrupt/empty.jpeg"]["error_code"] == "empty_image"
    assert by_path["corrupt/truncated.jpeg"]["error_code"] == "truncated_image"
    ok = [row for row in rows if row["status"] == "ok"]
    assert len(ok) == good
    for row in ok:
        assert len(row["sha256"]) == 64 and 0 <= float(row["probability"]) <= 1
        assert row["label"] == ("PNEUMONIA" if float(row["probability"]) >= float(row["threshold"]) else "NORMAL")
    summary = json.loads((job_dir / "summary.json").read_text())
    assert summary["total"] == good + bad and summary["refused"] == summary["failed"] == bad
    assert summary["unreadable"] == 0
    assert summary["error_codes"] == {
        "not_an_image": 1,
        "empty_image": 1,
        "truncated_image": 1,
        "unsupported_modality": 1,
        "blank_image": 1,
        "colour_image": 1,
        "not_a_chest_xray": 1,
    }
    refused = ("white.png", "portrait.jpg", "portrait-grey.png")
    assert all(by_path[f"not-xrays/{name}"]["label"] == "" for name in refused)
    assert all(row["out_of_distribution"] == "false" and float(row["ood_score"]) <= 1.0 for row in ok)
    dicom_row = by_path["dicom/chest.dcm"]
    assert dicom_row["status"] == "ok"
    uids = pydicom.dcmread(folder / "dicom" / "chest.dcm", stop_before_pixels=True)
    assert (dicom_row["study_instance_uid"], dicom_row["series_instance_uid"], dicom_row["sop_instance_uid"]) == (
        uids.StudyInstanceUID,
        uids.SeriesInstanceUID,
        uids.SOPInstanceUID,
    )
    assert by_path["corrupt/empty.jpeg"]["sop_instance_uid"] == ""
    assert all(row["sop_instance_uid"] == "" for row in ok if not row["path"].endswith(".dcm"))
    assert sum(summary["labels"].values()) == good
    assert summary["images_per_second"] == pytest.approx(summary["total"] / summary["seconds"], rel=0.01)
    with Image.open(job_dir / "summary.png") as plot:
        assert plot.format == "PNG" and plot.size == (1100, 420)

    exported = run_cli(
        "results",
        job_dir.name,
        "--format",
        "fhir",
        "--out",
        str(tmp_path / "bundle.json"),
        env={"PNEUMOSCAN_JOBS_DIR": str(tmp_path / "out")},
    )
    assert exported.returncode == 0, exported.stderr[-2000:]
    check_fhir_export(Bundle.model_validate_json((tmp_path / "bundle.json").read_text()), rows, folder)
    csv_text = "".join(job_export.export(job_dir, "csv"))
    assert csv_text == (job_dir / "results.csv").read_text()
    again = "".join(job_export.export(job_dir, "fhir"))
    assert again == (tmp_path / "bundle.json").read_text(), "exporting twice gives the same ids"
    check_ndjson_export(job_dir, rows, tmp_path / "ndjson")


def check_ndjson_export(job_dir: Path, rows: list[dict], out: Path) -> None:
    """``pneumoscan results --format ndjson --out DIR``: a file per type, the refusals apart, and a
    manifest that counts them."""
    exported = run_cli("results", str(job_dir), "--format", "ndjson", "--out", str(out))
    assert exported.returncode == 0, exported.stderr[-2000:]
    assert "Exporting" in exported.stderr and f"{out / 'manifest.json'}" in exported.stderr and not exported.stdout
    manifest = json.loads((out / "manifest.json").read_text())
    ok = [row for row in rows if row["status"] == "ok"]
    assert {item["type"]: item["count"] for item in manifest["output"]} == {
        "DiagnosticReport": len(ok),
        "Observation": len(ok),
        "Device": 1,
        "Provenance": len(ok),
    }
    assert [(item["type"], item["count"]) for item in manifest["error"]] == [("OperationOutcome", len(rows) - len(ok))]
    assert manifest["requiresAccessToken"] is False and "--format ndjson" in manifest["request"]
    lines = {
        item["type"]: (out / f"{item['type']}.ndjson").read_text().splitlines()
        for item in manifest["output"] + manifest["error"]
    }
    assert {kind: len(found) for kind, found in lines.items()} == {
        item["type"]: item["count"] for item in manifest["output"] + manifest["error"]
    }
    refused = [(number, row) for number, row in enumerate(rows, start=1) if row["status"] != "ok"]
    assert [json.loads(line)["issue"][0]["diagnostics"] for line in lines["OperationOutcome"]] == [
        f"results.csv row {number} ({row['path']}): {row['error_detail']}" for number, row in refused
    ]


def test_submit_then_worker_then_resubmit(queue_env, tmp_path):
    folder, good, bad = make_input_folder(tmp_path)
    submitted = run_cli("submit", str(folder), env=queue_env)
    assert submitted.returncode == 0, submitted.stderr[-2000:]
    job_id = submitted.stdout.strip()
    before = status(job_id, queue_env)
    assert before["state"] == "queued" and before["total"] == good + bad and before["done"] == 0
    early = run_cli("results", job_id, env=queue_env)
    assert early.returncode == 4 and "queued" in early.stderr and not early.stdout

    follow = subprocess.Popen(
        [sys.executable, "-m", "cli", "status", job_id, "--follow", "--interval", "0.2"],
        cwd=REPO_ROOT,
        env={**os.environ, **queue_env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    worker = run_cli("worker", "--burst", env=queue_env)
    assert worker.returncode == 0, worker.stdout[-2000:] + worker.stderr[-2000:]
    followed, progress = follow.communicate(timeout=120)
    assert follow.returncode == 0, progress[-2000:]
    assert followed.startswith(f"{job_id}: done, {good + bad}/{good + bad} done, {bad} refused")
    assert f"{good + bad}/{good + bad}" in progress  # the progress bar's last state
    after = status(job_id, queue_env)
    assert after["state"] == "done"
    assert after["done"] == good + bad and after["refused"] == bad and after["unreadable"] == 0
    assert after["failed"] == bad, "the old name of the count, kept for a release"
    assert len(read_results(Path(after["output"]))) == good + bad

    again = run_cli("submit", str(folder), env=queue_env)
    assert again.stdout.strip() == job_id
    assert "done" in again.stderr
    human = run_cli("status", job_id, env=queue_env)
    assert f"{good + bad}/{good + bad} done" in human.stdout
    listed = [json.loads(line) for line in run_cli("jobs", "--json", env=queue_env).stdout.splitlines()]
    assert [(job["job_id"], job["state"], job["input_folder"]) for job in listed] == [
        (job_id, "done", str(folder.resolve()))
    ]


def test_sigkill_mid_job_loses_nothing(queue_env, tmp_path):
    env = {**queue_env, "PNEUMOSCAN_LEASE_SECONDS": "2"}
    folder, good, bad = make_input_folder(tmp_path, copies=15)
    job_id = run_cli("submit", str(folder), env=env).stdout.strip()
    job_dir = Path(status(job_id, env)["output"])
    shards = job_dir / "shards"
    worker = start_worker(env, tmp_path / "worker.log")
    try:
        assert wait_for(lambda: len(list(shards.glob("*.csv"))) >= 2), (tmp_path / "worker.log").read_text()[-3000:]
    finally:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(timeout=30)
    done_at_kill = len(list(shards.glob("*.csv")))
    total_shards = json.loads((job_dir / "job.json").read_text())["shards"]
    assert done_at_kill < total_shards, "the worker finished before it could be killed; make the job bigger"
    time.sleep(2.5)  # the killed shard's lease expires

    restarted = run_cli("worker", "--burst", env=env)
    assert restarted.returncode == 0, restarted.stderr[-2000:]
    final = status(job_id, env)
    assert final["state"] == "done", final
    rows = read_results(job_dir)
    paths = [row["path"] for row in rows]
    assert len(paths) == len(set(paths)) == good + bad
    assert not list((job_dir / "leases").glob("*.json"))


def test_two_workers_share_one_job(queue_env, tmp_path):
    folder, good, bad = make_input_folder(tmp_path, copies=20)
    job_id = run_cli("submit", str(folder), env=queue_env).stdout.strip()
    job_dir = Path(status(job_id, queue_env)["output"])
    workers = [start_worker(queue_env, tmp_path / f"worker{i}.log") for i in range(2)]
    try:
        finished = wait_for(lambda: (job_dir / "results.csv").exists(), timeout=300, interval=0.2)
    finally:
        for worker in workers:
            os.killpg(worker.pid, signal.SIGTERM)
        for worker in workers:
            worker.wait(timeout=60)
    assert finished
    paths = [row["path"] for row in read_results(job_dir)]
    assert len(paths) == len(set(paths)) == good + bad
    scorers = {json.loads(meta.read_text())["worker"] for meta in (job_dir / "shards").glob("*.json")}
    assert len(scorers) == 2, "both workers should have scored shards"


def test_input_roots_follow_dotdot_and_symlinks(tmp_path):
    allowed = tmp_path / "allowed"
    outside, _, _ = make_input_folder(tmp_path / "elsewhere")
    inside, _, _ = make_input_folder(allowed)
    (allowed / "link").symlink_to(outside, target_is_directory=True)
    env = {"PNEUMOSCAN_INPUT_ROOTS": f"{allowed}:{tmp_path / 'other'}", "PNEUMOSCAN_DATA_DIR": str(tmp_path / "var")}
    for folder in (outside, allowed / ".." / "elsewhere" / "input", allowed / "link"):
        refused = run_cli("submit", str(folder), env=env)
        assert refused.returncode == 2, folder
        assert "outside the allowed input roots" in refused.stderr
    missing = run_cli("submit", str(allowed / "nope"), env=env)
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    assert run_cli("submit", str(inside), env=env).returncode == 0


def test_vanished_output_is_a_failed_job(tmp_path):
    env = {"PNEUMOSCAN_DATA_DIR": str(tmp_path / "var")}
    folder, _, _ = make_input_folder(tmp_path)
    job_id = run_cli("submit", str(folder), env=env).stdout.strip()
    job_dir = Path(status(job_id, env)["output"])
    (job_dir / "job.json").unlink()
    for target in (job_id, str(job_dir)):
        result = run_cli("status", target, "--json", env=env)
        assert result.returncode == 4
        report = json.loads(result.stdout)
        assert report["state"] == "failed" and "missing" in report["detail"]
    # Workers drop the orphaned shards instead of hanging on them.
    worker = run_cli("worker", "--burst", env=env, timeout=120)
    assert worker.returncode == 0
    assert "Dropping shard 0: the job folder" in worker.stderr


def test_worker_refuses_another_model_version(tmp_path):
    env = {"PNEUMOSCAN_DATA_DIR": str(tmp_path / "var")}
    folder, _, _ = make_input_folder(tmp_path)
    job_id = run_cli("submit", str(folder), env=env).stdout.strip()
    job_file = Path(status(job_id, env)["output"]) / "job.json"
    spec = json.loads(job_file.read_text())
    job_file.write_text(json.dumps({**spec, "model_version": "some-other-model"}))
    worker = run_cli("worker", "--burst", env=env)
    assert "Refusing shard" in worker.stderr and "some-other-model" in worker.stderr
    assert status(job_id, env)["state"] == "queued"


def test_a_file_that_keeps_killing_workers_becomes_an_error_row(tmp_path):
    env = {"PNEUMOSCAN_DATA_DIR": str(tmp_path / "var"), "PNEUMOSCAN_SHARD_SIZE": "100"}
    folder, good, bad = make_input_folder(tmp_path)
    job_id = run_cli("submit", str(folder), env=env).stdout.strip()
    job_dir = Path(status(job_id, env)["output"])
    culprit = "batch00/NORMAL/IM-0441-0001.jpeg"
    # The state two earlier workers left behind: each died while this file was in flight.
    dead = Lease(state="running", expires=0, attempts=2, current=[culprit], crashes={culprit: 1})
    (job_dir / "leases" / "00000.json").write_text(dead.model_dump_json())
    assert run_cli("worker", "--burst", env=env).returncode == 0
    rows = {row["path"]: row for row in read_results(job_dir)}
    assert len(rows) == good + bad
    assert rows[culprit]["status"] == "error" and rows[culprit]["error_code"] == "worker_crashed"
    assert sum(row["status"] == "ok" for row in rows.values()) == good - 1


def test_a_submit_while_the_queue_is_down_is_refused_and_kept_for_the_retry(queue_env, tmp_path):
    folder, _, _ = make_input_folder(tmp_path)
    dead_redis = {**queue_env, "PNEUMOSCAN_QUEUE_URL": f"redis://127.0.0.1:{free_port()}/0"}
    down = run_cli("submit", str(folder), env=dead_redis)
    assert down.returncode == 2 and "job queue cannot be reached" in down.stderr, down.stderr[-2000:]
    [job_dir] = [path for path in (tmp_path / "var" / "jobs").iterdir() if path.is_dir()]
    assert not any((job_dir / "leases").iterdir()), "no shard may look queued when nothing reached the queue"
    again = run_cli("submit", str(folder), env=queue_env)
    assert again.returncode == 0 and again.stdout.strip() == job_dir.name, again.stderr[-2000:]
    worker = run_cli("worker", "--burst", env=queue_env)
    assert worker.returncode == 0, worker.stderr[-2000:]
    assert status(job_dir.name, queue_env)["state"] == "done", "queued at once by the retry, not once a lease expired"
