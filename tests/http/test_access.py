"""Clients, scopes, rate limits and the audit trail on the real server, with keys made by the real
``pneumoscan keys`` and the trail read back by the real ``pneumoscan audit``."""

from __future__ import annotations

import io
import json
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest
from PIL import Image

from pneumoscan.access.audit import read_records
from tests.support import API_KEY, assert_error, run_cli, xray_paths
from tests.support.dicom_files import PATIENT_ID, make_dicom

SCOPES = ("score", "jobs", "review", "admin")
OTHER_PATIENT = "PID-0000001"
# Path parameters for walking the specification: well-formed, naming nothing that exists.
PATH_VALUES = {"job_id": "0123456789abcdef", "file": "x.jpeg", "resource_type": "DiagnosticReport"}


@dataclass
class Site:
    server: Any
    env: dict[str, str]
    keys: dict[str, str]
    audit_dir: Path
    input_root: Path
    sent: list[tuple[str, str, int, str | None]] = field(default_factory=list)

    def client(self, name: str | None, **options) -> httpx.Client:
        """A client sending ``name``'s key (None: no key), recording every request it makes."""

        def record(response: httpx.Response) -> None:
            request = response.request
            self.sent.append((request.method, request.url.path, response.status_code, name))

        headers = {"Authorization": f"Bearer {self.keys[name]}"} if name else {}
        return httpx.Client(
            base_url=self.server.url, headers=headers, timeout=60, event_hooks={"response": [record]}, **options
        )

    def cli(self, *args: str):
        return run_cli(*args, env=self.env)


def add_key(env: dict[str, str], name: str, scopes: str, *extra: str) -> str:
    made = run_cli("keys", "add", name, "--scopes", scopes, *extra, env=env)
    assert made.returncode == 0, made.stderr
    assert "shown only now" in made.stderr
    return made.stdout.strip()


@pytest.fixture(scope="module")
def site(tmp_path_factory, serve) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp("access")
    input_root = tmp / "input"
    input_root.mkdir()
    env = {
        "PNEUMOSCAN_DATA_DIR": str(tmp / "var"),
        "PNEUMOSCAN_KEYS_FILE": str(tmp / "keys.json"),
        "PNEUMOSCAN_AUDIT_DIR": str(tmp / "audit"),
        "PNEUMOSCAN_INPUT_ROOTS": str(input_root),
        "PNEUMOSCAN_PROTECT_METRICS": "true",
        "PNEUMOSCAN_API_KEY": API_KEY,
        # One HTTP worker, so that one bucket holds a client's rate.
        "PNEUMOSCAN_HTTP_WORKERS": "1",
    }
    keys = {"all": add_key(env, "all", "all"), "limited": add_key(env, "limited", "all", "--rate", "0.5")}
    for scope in SCOPES:
        keys[f"no-{scope}"] = add_key(env, f"no-{scope}", ",".join(other for other in SCOPES if other != scope))
    keys["engine"] = add_key(env, "engine", "score")
    keys["reader"] = add_key(env, "reader", "jobs,review")
    keys["bystander"] = add_key(env, "bystander", "jobs")
    keys["shared"] = API_KEY
    server = serve(tmp / "serve", env)
    yield Site(server, env, keys, tmp / "audit", input_root)
    server.stop()


def operations(spec: dict) -> Iterator[tuple[str, str, str]]:
    """(method, a concrete path, scope) of every operation that declares a scope."""
    for template, methods in spec["paths"].items():
        path = template
        for name, value in PATH_VALUES.items():
            path = path.replace(f"{{{name}}}", value)
        for method, operation in methods.items():
            if "x-scope" in operation:
                yield method.upper(), path, operation["x-scope"]


def test_every_operation_refuses_no_key_and_a_key_without_its_scope(site):
    with site.client(None) as anonymous:
        spec = anonymous.get("/docs.json").json()
    walked = [*operations(spec), ("GET", "/metrics", "admin")]
    assert {scope for _, _, scope in walked} == {*SCOPES, "any"}
    assert len(walked) >= 18
    with site.client(None) as anonymous:
        for method, path, _ in walked:
            refused = assert_error(anonymous.request(method, path), 401, "unauthorized")
            assert "Authorization: Bearer" in refused["detail"], (method, path)
    with site.client("all") as wrong:
        wrong.headers["Authorization"] = "Bearer psk_000000000000_" + "x" * 43
        assert_error(wrong.get("/client"), 401, "unauthorized")
    for method, path, scope in walked:
        if scope == "any":
            continue
        with site.client(f"no-{scope}") as lacking:
            refused = assert_error(lacking.request(method, path), 403, "forbidden")
            assert f"'{scope}' scope" in refused["detail"] and f"no-{scope}" in refused["detail"]
        with site.client("all") as holder:
            assert holder.request(method, path).status_code not in (401, 403), (method, path)
    # Open paths stay open.
    with site.client(None) as anonymous:
        for path in ("/livez", "/readyz", "/version", "/docs.json", "/ui/"):
            assert anonymous.get(path).status_code == 200, path


def test_the_client_endpoint_says_what_a_key_may_do(site):
    with site.client("reader") as reader:
        me = reader.get("/client").json()
    assert me["name"] == "reader" and me["scopes"] == ["jobs", "review"]
    assert me["may"] == {"score": False, "jobs": True, "review": True, "admin": False}
    with site.client("shared") as shared:
        assert shared.get("/client").json()["scopes"] == sorted(SCOPES)


def test_a_key_added_or_revoked_takes_effect_without_a_restart(site):
    site.keys["late"] = add_key(site.env, "late", "score")
    with site.client("late") as late:
        assert late.get("/client").status_code == 200
        revoked = site.cli("keys", "revoke", "late")
        assert revoked.returncode == 0, revoked.stderr
        assert_error(late.get("/client"), 401, "unauthorized")
    listed = site.cli("keys", "list", "--all")
    assert "late" in listed.stdout and "revoked" in listed.stdout
    assert site.keys["late"] not in (site.server.settings or {}).values()
    keys_file = json.loads(Path(site.env["PNEUMOSCAN_KEYS_FILE"]).read_text())
    assert site.keys["late"] not in json.dumps(keys_file), "the file holds hashes, never keys"


def test_a_client_over_its_rate_gets_429_while_another_is_served(site):
    with site.client("limited") as limited, site.client("all") as other:
        answers = [limited.get("/client") for _ in range(4)]
        served = other.get("/client")
    assert [answer.status_code for answer in answers[:1]] == [200]
    refused = [answer for answer in answers if answer.status_code == 429]
    assert refused, [answer.status_code for answer in answers]
    assert_error(refused[0], 429, "rate_limited")
    assert int(refused[0].headers["retry-after"]) >= 1
    assert served.status_code == 200
    time.sleep(int(refused[0].headers["retry-after"]))
    with site.client("limited") as limited:
        assert limited.get("/client").status_code == 200


def dicom_of(patient: str, source: Path) -> bytes:
    image = Image.open(source).convert("L")
    image.thumbnail((512, 512))
    dataset = pydicom.dcmread(io.BytesIO(make_dicom(image)))
    dataset.PatientID = patient
    buffer = io.BytesIO()
    dataset.save_as(buffer)
    return buffer.getvalue()


def test_the_trail_answers_who_saw_a_patient(site):
    sources = xray_paths()
    mine, theirs = site.input_root / "mine", site.input_root / "theirs"
    for folder, patient in ((mine, PATIENT_ID), (theirs, OTHER_PATIENT)):
        folder.mkdir()
        for number, source in enumerate(sources[:2]):
            (folder / f"{number}.dcm").write_bytes(dicom_of(patient, source))
    with site.client("engine") as engine:
        scored = engine.post(
            "/predict", content=dicom_of(PATIENT_ID, sources[2]), headers={"Content-Type": "application/dicom"}
        )
        assert scored.status_code == 200, scored.text
    with site.client("reader") as reader:
        job_mine = reader.post("/jobs", json={"folder": str(mine)}).json()["job_id"]
        job_theirs = reader.post("/jobs", json={"folder": str(theirs)}).json()["job_id"]
    worker = run_cli("worker", "--burst", env=site.env)
    assert worker.returncode == 0, worker.stderr[-2000:]
    with site.client("reader") as reader:
        assert reader.get(f"/jobs/{job_mine}/results").status_code == 200
        assert reader.get(f"/jobs/{job_mine}/images/0.dcm").status_code == 200
        review = {"file": "1.dcm", "reader": "Dr Who", "verdict": "agree"}
        assert reader.post(f"/jobs/{job_mine}/reviews", json=review).status_code == 201
    with site.client("bystander") as bystander:
        assert bystander.get(f"/jobs/{job_theirs}/results").status_code == 200
        assert bystander.get(f"/jobs/{job_mine}").status_code == 200  # progress only: no patient data

    answered = site.cli("audit", "--patient", PATIENT_ID, "--json")
    assert answered.returncode == 0, answered.stderr
    seen = [json.loads(line) for line in answered.stdout.splitlines()]
    who = {(record["client"], record["action"]) for record in seen}
    assert who == {
        ("engine", "predict"),
        ("reader", "job.results"),
        ("reader", "image.read"),
        ("reader", "review.write"),
    }, who
    predict = next(record for record in seen if record["action"] == "predict")
    assert predict["patients"] == [PATIENT_ID] and predict["studies"] and predict["instances"]
    assert predict["address"] == "127.0.0.1" and predict["outcome"] == "success"
    assert "probability" not in answered.stdout and "label" not in json.dumps(predict)
    theirs_seen = site.cli("audit", "--patient", OTHER_PATIENT, "--json").stdout
    assert {json.loads(line)["client"] for line in theirs_seen.splitlines()} == {"bystander"}
    readable = site.cli("audit", "--client", "reader", "--since", "1h")
    assert "image.read" in readable.stdout and f"job {job_mine}" in readable.stdout


def test_every_request_made_has_its_audit_record(site):
    """Runs after the others in this module: each request they sent to an audited path (not an
    open one) is in the trail, in order, with its client and status."""
    open_paths = ("/livez", "/readyz", "/version", "/docs.json", "/ui/")
    audited = [entry for entry in site.sent if entry[1] not in open_paths]
    assert len(audited) > 60
    trail = [(record.method, record.path, record.status) for record in read_records(site.audit_dir)]
    position = 0
    for method, path, status, _ in audited:
        position = trail.index((method, path, status), position) + 1
    by_client = {}
    for record in read_records(site.audit_dir):
        by_client.setdefault(record.client, 0)
        by_client[record.client] += 1
    assert by_client.get(None), "refusals of requests without a key are audited too"
    assert by_client["no-admin"] >= 3 and by_client["engine"] >= 1


def test_a_trail_that_cannot_be_written_refuses_and_serves_nothing(site):
    current = site.audit_dir / "audit.jsonl"
    kept = site.audit_dir.parent / "audit.kept"
    shutil.move(current, kept)
    current.mkdir()  # a folder where the file must be: every append fails
    try:
        with site.client("engine") as engine:
            answer = engine.post(
                "/predict", content=xray_paths()[0].read_bytes(), headers={"Content-Type": "image/jpeg"}
            )
        body = assert_error(answer, 503, "audit_unavailable")
        assert "audit" in body["detail"] and "probability" not in answer.text
        assert answer.headers["retry-after"]
    finally:
        current.rmdir()
        shutil.move(kept, current)
    with site.client("engine") as engine:
        assert engine.get("/client").status_code == 200


def test_an_answer_whose_record_fails_is_replaced_by_503(site):
    """The trail passes the check before the request, and fails as the answer starts (its lock is
    a folder): the scored answer is never sent."""
    lock = site.audit_dir / ".audit.lock"
    lock.unlink()
    lock.mkdir()
    try:
        with site.client("engine") as engine:
            answer = engine.post(
                "/predict", content=xray_paths()[0].read_bytes(), headers={"Content-Type": "image/jpeg"}
            )
        assert_error(answer, 503, "audit_unavailable")
        assert "probability" not in answer.text and "label" not in answer.text
    finally:
        lock.rmdir()
    with site.client("engine") as engine:
        assert engine.get("/client").status_code == 200


def test_an_operator_lists_retries_and_drops_outbox_messages_over_http(site):
    from pneumoscan.delivery.mllp import Hl7Outbox

    outbox = Hl7Outbox(Path(site.env["PNEUMOSCAN_DATA_DIR"]) / "hl7")
    for name in ("waiting-1", "waiting-2"):
        assert outbox.put(name, b"MSH|...")
    with site.client("all") as admin:
        listed = admin.get("/outbox", params={"destination": "hl7"}).json()["messages"]
        assert [(m["id"], m["state"], m["attempts"]) for m in listed] == [
            ("waiting-1", "pending", 0),
            ("waiting-2", "pending", 0),
        ]
        assert admin.post("/outbox/retry", json={"destination": "hl7", "all": True}).json() == {"count": 0}
        assert_error(admin.post("/outbox/retry", json={}), 400, "bad_request")
        dropped = admin.post("/outbox/drop", json={"destination": "hl7", "ids": ["waiting-1", "no-such"]})
        assert dropped.json() == {"count": 1}
        assert [m["id"] for m in admin.get("/outbox").json()["messages"]] == ["waiting-2"]
    log = json.loads((Path(site.env["PNEUMOSCAN_DATA_DIR"]) / "hl7" / "dropped.log").read_text().splitlines()[-1])
    assert log["id"] == "waiting-1" and log["reason"] == "dropped over HTTP by the client 'all'"
    drop = [r for r in read_records(site.audit_dir) if r.action == "outbox.drop" and r.status == 200][-1]
    assert drop.client == "all" and drop.messages == ["waiting-1", "no-such"]
