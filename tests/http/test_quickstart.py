"""The commands of the README's quick start and of Getting started, run as written with the real
``curl`` against the real service: the documents are the source, so a command that stops working,
or a file it names that is not shipped, fails here.

Only what a reader would change is substituted: the service's address for ``localhost:3000``, the
server's input root for ``data/in`` (``make run``'s default), and the test server's API key.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import API_KEY, REPO_ROOT, assert_error

# (document, the section whose bash blocks are the quick start)
QUICK_STARTS = [("README.md", "## A first request"), ("docs/getting-started.md", "## Set-up: two commands")]
QUICK_STARTS += [("docs/getting-started.md", "## Scoring a folder")]
ADDRESS = "localhost:3000"
INPUT_ROOT = "data/in"
STATUS_MARK = "\n--status--"


@dataclass
class Answer:
    status: int
    body: str
    workdir: Path


def section(document: str, heading: str) -> str:
    text = (REPO_ROOT / document).read_text()
    start = text.index(heading + "\n")
    end = text.find("\n## ", start + len(heading))
    return text[start : end if end >= 0 else None]


def code_blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", text, re.DOTALL | re.MULTILINE)


def commands(document: str, heading: str) -> list[str]:
    """The shell lines of the section's bash blocks; `make` lines start the service, which the test has."""
    lines = [line.strip() for block in code_blocks(section(document, heading), "bash") for line in block.splitlines()]
    return [line for line in lines if line and not line.startswith(("#", "make "))]


def readme_prediction() -> dict:
    """The /predict answer that the README shows."""
    (shown,) = code_blocks(section("README.md", "## A first request"), "json")
    return json.loads(shown)


@pytest.fixture()
def workdir(tmp_path) -> Path:
    """A stand-in for the repository root: the files the commands name, and room for what they write."""
    for name in ("tests", "examples"):
        (tmp_path / name).symlink_to(REPO_ROOT / name)
    return tmp_path


def run(command: str, server, input_root: Path, workdir: Path) -> Answer:
    address = server.url.removeprefix("http://")
    command = command.replace(ADDRESS, address).replace(INPUT_ROOT, str(input_root))
    if command.startswith("curl "):
        options = f"--silent --show-error -H {shlex.quote(f'Authorization: Bearer {API_KEY}')}"
        command = f"curl {options} --write-out '{STATUS_MARK}%{{http_code}}' {command.removeprefix('curl ')}"
    done = subprocess.run(["bash", "-c", command], cwd=workdir, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{command}\n{done.stderr}"
    if STATUS_MARK not in done.stdout:
        return Answer(0, done.stdout, workdir)
    body, status = done.stdout.rsplit(STATUS_MARK, 1)
    return Answer(int(status), body, workdir)


def check(command: str, answer: Answer, client) -> None:
    """The answer a command must get, by the endpoint it calls; a command nobody checks fails."""
    if command.startswith("cp "):
        return
    url = command.split()[-1]
    path = url.removeprefix(ADDRESS)
    assert answer.status in (200, 202), f"{command}: {answer.status} {answer.body[:500]}"
    if path == "/predict" and "application/fhir+json" in command:
        bundle = json.loads(answer.body)
        assert bundle["resourceType"] == "Bundle" and bundle["type"] == "collection", command
        kinds = {entry["resource"]["resourceType"] for entry in bundle["entry"]}
        assert {"DiagnosticReport", "Observation", "Device", "Provenance"} <= kinds, command
    elif path == "/predict":
        body = json.loads(answer.body)
        assert answer.status == 200 and set(body) == set(readme_prediction()), command
        assert body["label"] in {"NORMAL", "PNEUMONIA"}
        assert (body["sop_instance_uid"] is not None) == ("application/dicom" in command), command
    elif path == "/predict_batch":
        results = json.loads(answer.body)["results"]
        assert len(results) == command.count("images=@") and all("label" in item for item in results), command
    elif path == "/explain":
        output = answer.workdir / command.split("-o ")[1].split()[0]
        assert answer.status == 200 and output.read_bytes().startswith(b"\x89PNG\r\n\x1a\n"), command
    elif path == "/jobs":
        created = json.loads(answer.body)
        assert answer.status == 202 and set(created) == {"job_id", "state"}, command
        status = client.get(f"/jobs/{created['job_id']}")
        assert status.status_code == 200 and status.json()["total"] > 0, status.text
    else:
        pytest.fail(f"{command}: no check for this command; add one to tests/http/test_quickstart.py")


@pytest.mark.slow
@pytest.mark.parametrize(("document", "heading"), QUICK_STARTS)
def test_quick_start_commands_run_as_written(document, heading, server, job_roots, workdir):
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed (apt-get install curl)")
    found = commands(document, heading)
    assert any(line.startswith("curl ") for line in found), f"{document} {heading!r} has no curl command"
    input_root = job_roots["allowed"] / f"quickstart-{workdir.name}"
    input_root.mkdir()
    with server.client() as client:
        for command in found:
            check(command, run(command, server, input_root, workdir), client)


def test_the_sample_dicom_is_shipped_small_and_regenerates_byte_for_byte(tmp_path):
    shipped = REPO_ROOT / "examples" / "chest.dcm"
    assert shipped.is_file() and shipped.stat().st_size < 100_000
    spec = importlib.util.spec_from_file_location("make_chest_dcm", REPO_ROOT / "examples" / "make_chest_dcm.py")
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    regenerated = tmp_path / "chest.dcm"
    script.chest_dicom(script.SOURCE).save_as(regenerated, enforce_file_format=True)
    assert regenerated.read_bytes() == shipped.read_bytes()


@pytest.mark.slow
def test_a_job_sent_as_a_form_is_told_to_send_json(server, job_roots):
    with server.client() as client:
        form = client.post("/jobs", data={"folder": str(job_roots["allowed"])})
        body = assert_error(form, 415, "unsupported_media_type")
        assert "application/json" in body["detail"] and "application/x-www-form-urlencoded" in body["detail"]
        assert "POST /jobs" in body["detail"]
        text = client.post("/jobs", content=b"{}", headers={"Content-Type": "text/plain"})
        assert "text/plain" in assert_error(text, 415, "unsupported_media_type")["detail"]
        assert_error(client.post("/jobs", json={"folder": ""}), 400, "bad_request")
