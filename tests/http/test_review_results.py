"""Results that follow the reader, on the real service and worker with a real MLLP listener and
Medplum's FHIR server: preliminary when scored, final when a reader agrees, corrected when one
does not, under the same filler order number and the same DiagnosticReport identifier."""

from __future__ import annotations

import io
import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from PIL import Image

from tests.support import API_KEY, fhir_validator, require, run_cli, wait_until, xray_paths
from tests.support.dicom_files import make_dicom
from tests.support.hl7_listener import Listener


def _dicom_folder(folder: Path, sources: list[Path], accession: str) -> Path:
    """``folder`` with ``<n>.dcm`` chest DICOMs made from ``sources``, accession numbers ``<accession>-<n>``."""
    folder.mkdir(parents=True)
    for number, source in enumerate(sources):
        image = Image.open(source).convert("L")
        image.thumbnail((512, 512))
        dataset = pydicom.dcmread(io.BytesIO(make_dicom(image)))
        dataset.AccessionNumber = f"{accession}-{number}"
        dataset.save_as(folder / f"{number}.dcm", enforce_file_format=True)
    return folder


@pytest.fixture(scope="module")
def reviewed(tmp_path_factory, serve) -> Iterator[tuple[Any, Listener, Any, dict]]:
    require("PNEUMOSCAN_REQUIRE_FHIR_VALIDATOR", fhir_validator.available())
    tmp = tmp_path_factory.mktemp("reviewed")
    roots = tmp / "input"
    folder = _dicom_folder(roots / "ward", xray_paths()[:2], "ACC")
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


def _new_version(folder, threshold: float) -> str:
    """A copy of the bundled model under another version, labelling at ``threshold``."""
    import json
    import shutil

    from pneumoscan.settings import BUNDLED_MODEL_DIR

    shutil.copytree(BUNDLED_MODEL_DIR, folder)
    metadata = json.loads((folder / "metadata.json").read_text())
    metadata.update(version=f"{metadata['version']}-rethresholded", threshold=threshold)
    (folder / "metadata.json").write_text(json.dumps(metadata))
    return metadata["version"]


def _flipping_threshold(probabilities: list[float], threshold: float) -> float:
    """A threshold that changes the label of at least two of the files and leaves at least one."""
    edges = sorted({0.0, 1.0, *probabilities})
    for low, high in itertools.pairwise(edges):
        candidate = (low + high) / 2
        flips = sum((p >= threshold) != (p >= candidate) for p in probabilities)
        if 2 <= flips < len(probabilities):
            return candidate
    raise AssertionError(f"no threshold flips 2 to n-1 of {probabilities}")


def test_rescore_sends_corrections_for_exactly_the_changed_labels(reviewed, tmp_path):
    server, listener, fhir, env = reviewed
    cli_env = {k: v for k, v in env.items() if k != "folder"}
    folder = _dicom_folder(Path(env["folder"]).parent / "clinic", xray_paths()[2:8], "RES")
    before = len(listener.received)
    with server.client() as client:
        job_id = client.post("/jobs", json={"folder": str(folder)}).json()["job_id"]
        worker = run_cli("worker", "--burst", env=cli_env)
        assert worker.returncode == 0, worker.stderr[-2000:]
        wait_until(lambda: len(listener.received) >= before + 6, 60, "six preliminary ORU^R01 expected")
        rows = {row["path"]: row for row in _rows(client, job_id)}
        threshold = float(next(iter(rows.values()))["threshold"])
        new_threshold = _flipping_threshold([float(row["probability"]) for row in rows.values()], threshold)
        flipped = sorted(
            name
            for name, row in rows.items()
            if (float(row["probability"]) >= new_threshold) != (row["label"] == "PNEUMONIA")
        )
        # A reader's review stands: the first file that would flip is reviewed, and not corrected.
        kept, corrected = flipped[0], flipped[1:]
        review = {"file": kept, "reader": "Dr Cy", "verdict": "agree"}
        assert client.post(f"/jobs/{job_id}/reviews", json=review).status_code == 201
        wait_until(lambda: len(listener.received) >= before + 7, 60, "the review's F ORU^R01 expected")

    version = _new_version(tmp_path / "model", new_threshold)
    sent = len(listener.received)
    result = run_cli("rescore", "--job", job_id, "--model", str(tmp_path / "model"), env=cli_env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert [line.split(":")[0] for line in result.stdout.splitlines()] == corrected
    assert f"{len(corrected)} corrected, {len(rows) - len(flipped)} unchanged, 1 kept" in result.stderr
    new = listener.received[sent:]
    by_order = {str(m.segment("OBR")[3]): m for m in new}
    assert sorted(by_order) == sorted(rows[name]["accession_number"] for name in corrected), orders(listener)
    for name in corrected:
        message = by_order[rows[name]["accession_number"]]
        label = "NORMAL" if rows[name]["label"] == "PNEUMONIA" else "PNEUMONIA"
        assert str(message.segment("OBR")[25]) == "C"
        assert (
            str(message.segments("OBX")[0][5]).split("^")[0] == {"PNEUMONIA": "233604007", "NORMAL": "17621005"}[label]
        )
        assert str(message.segments("OBX")[0][18]) == version
        assert str(message.segments("OBX")[0][16]) == "", "no reader: the model corrected it"

    again = run_cli("rescore", "--job", job_id, "--model", str(tmp_path / "model"), env=cli_env)
    assert again.returncode == 0, again.stderr[-2000:]
    assert len(listener.received) == sent + len(corrected), "a second rescore sends nothing again"

    reports = [r for r in fhir.search("DiagnosticReport") if r["conclusion"].startswith("Corrected on rescoring")]
    assert len(reports) == len(corrected) and {r["status"] for r in reports} == {"corrected"}
    assert len(fhir.search("DiagnosticReport")) == 2 + 6, "corrections update the reports, they add none"


def _control_id(message) -> str:
    return str(message.segment("MSH")[10])


def test_nothing_acknowledged_is_sent_again_across_a_service_killed_mid_delivery(serve, tmp_path):
    import collections
    import os
    import signal

    roots = tmp_path / "input"
    folder = _dicom_folder(roots / "ward", xray_paths()[:4], "KILL")
    with Listener() as listener:
        env = {
            "PNEUMOSCAN_API_KEY": API_KEY,
            "PNEUMOSCAN_DATA_DIR": str(tmp_path / "var"),
            "PNEUMOSCAN_INPUT_ROOTS": str(roots),
            "PNEUMOSCAN_HL7_DESTINATION": f"127.0.0.1:{listener.port}",
        }
        first = serve(tmp_path / "first", env)
        with first.client() as client:
            job_id = client.post("/jobs", json={"folder": str(folder)}).json()["job_id"]
            worker = run_cli("worker", "--burst", env=env)
            assert worker.returncode == 0, worker.stderr[-2000:]
            wait_until(lambda: len(listener.acknowledged) >= 4, 60, "four preliminary ORU^R01 expected")
            # The listener now answers slowly: the service is killed while it waits for an answer.
            listener.delay = 3.0
            for number in range(4):
                review = {"file": f"{number}.dcm", "reader": "Dr Di", "verdict": "agree"}
                assert client.post(f"/jobs/{job_id}/reviews", json=review).status_code == 201
        wait_until(lambda: len(listener.received) >= 6, 60, "the reviews' delivery did not start")
        os.killpg(first.process.pid, signal.SIGKILL)
        first.process.wait(30)
        in_flight = _control_id(listener.received[-1])
        listener.delay = 0.0

        second = serve(tmp_path / "second", env)
        try:
            wait_until(lambda: len(listener.acknowledged) >= 8, 60, lambda: f"{len(listener.acknowledged)} answered")
        finally:
            second.stop()

    answered = collections.Counter(_control_id(message) for message in listener.acknowledged)
    assert len(answered) == 8 and set(answered.values()) == {1}, answered
    assert sorted(str(m.segment("OBR")[25]) for m in listener.acknowledged) == ["F"] * 4 + ["P"] * 4
    received = collections.Counter(_control_id(message) for message in listener.received)
    again = {control for control, count in received.items() if count > 1}
    assert again <= {in_flight}, "only the message the service was waiting on when killed is sent again"
