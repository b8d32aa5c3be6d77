"""``python -m bench.soak``: start the stack, run the work and the fault schedule for
``--duration`` seconds, let the peers catch up, check the ledger, write it and the plot."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

from bench.soak import ledger
from bench.soak.faults import Nemesis, schedule
from bench.soak.plot import plot
from bench.soak.stack import Stack
from bench.soak.traffic import JobRunner, StudySender, make_pool, start_locust
from pneumoscan.delivery.destinations import Outboxes
from pneumoscan.settings import Settings
from service.launch import REPO

DRAIN_S = 240.0
SETTLE_S = 10.0  # how long nothing may be under way before the checks run
SAMPLE_EVERY_S = 5.0


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__)
    parser.add_argument("--duration", type=int, default=600, help="seconds of load and faults (default 600)")
    parser.add_argument("--users", type=int, default=16, help="Locust users posting X-rays (default 16)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the fault schedule (default 1)")
    parser.add_argument("--job-files", type=int, default=200, help="files per folder job (default 200)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "out" / "soak")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "requests.jsonl").unlink(missing_ok=True)
    warm_up = min(60.0, args.duration * 0.15)
    quiet = min(60.0, args.duration * 0.15)
    faults = schedule(args.duration, warm_up, quiet, args.seed)
    with tempfile.TemporaryDirectory(prefix="pneumoscan-soak-") as scratch:
        stack = Stack(Path(scratch))
        print(f"Starting the stack in {scratch} ...", flush=True)
        try:
            stack.up()
            return _soak(args, stack, faults, warm_up)
        finally:
            stack.down()


def _soak(args: argparse.Namespace, stack: Stack, faults, warm_up: float) -> int:
    pool = make_pool(stack.folder / "pool")
    started = time.time()
    locust = start_locust(stack.url, pool, args.users, args.duration, args.out)
    jobs = JobRunner(stack.url, stack.input_root, args.job_files)
    studies = StudySender(stack.node_port, stack.folder / "studies")
    threads = [threading.Thread(target=work.run, daemon=True) for work in (jobs, studies)]
    for thread in threads:
        thread.start()
    nemesis = Nemesis(stack, faults, started)
    nemesis.thread.start()
    print(f"Soaking for {args.duration} s: {args.users} users, {len(faults)} faults (seed {args.seed}).", flush=True)
    while time.time() - started < args.duration:
        stack.sample()
        time.sleep(SAMPLE_EVERY_S)
    nemesis.finish()
    jobs.stop.set()
    studies.stop.set()
    for thread in threads:
        thread.join(120)
    locust.wait(120)
    print("Load and faults over; waiting for the jobs and the outboxes to drain ...", flush=True)
    checks = _drain_and_check(stack, jobs, faults, started, warm_up, args)
    report = {
        "duration_s": args.duration,
        "users": args.users,
        "seed": args.seed,
        "faults": [fault.as_dict() for fault in faults],
        "restarts": {name: process.restarts for name, process in stack.supervised.items()},
        "studies_sent": len(studies.acknowledged),
        "checks": {check.name: check.as_dict() for check in checks},
        "ok": all(check.ok for check in checks),
    }
    (args.out / "ledger.json").write_text(json.dumps(report, indent=2) + "\n")
    requests = ledger.read_requests(args.out / "requests.jsonl")
    plot(args.out / "soak.png", requests, stack.samples, faults, started)
    for check in checks:
        print(f"{'ok  ' if check.ok else 'FAIL'} {check.name:10} {json.dumps(check.counts)}")
        for violation in check.violations[:10]:
            print(f"       {violation}")
    print(f"Ledger: {args.out / 'ledger.json'}; plot: {args.out / 'soak.png'}")
    return 0 if report["ok"] else 1


def _drain_and_check(stack: Stack, jobs: JobRunner, faults, started: float, warm_up: float, args) -> list:
    settings = Settings(data_dir=stack.folder / "var")
    boxes = Outboxes.from_settings(settings)
    for job in jobs.jobs:
        jobs.wait(job.job_id, until=lambda: False, timeout=DRAIN_S)
    _settle(settings, boxes)
    stack.sample()
    report_ids = _report_ids(stack, jobs, settings)
    kills = [fault.started for fault in faults if fault.kind == "kill_http_worker" and fault.started]
    requests = ledger.read_requests(args.out / "requests.jsonl") + jobs.requests

    def residue(box) -> dict[str, int]:
        return {"pending": len(box.pending()), "failed": len(box.failed_messages())}

    fhir = stack.fhir
    assert fhir is not None
    return [
        ledger.check_http(requests, kills),
        ledger.check_jobs(jobs.jobs, jobs.state, settings.jobs_root),
        ledger.check_node_jobs(settings.jobs_root, settings.dicom_root / "incoming"),
        ledger.check_pacs(stack.orthanc.orthanc.url, settings.dicom_root / "incoming"),
        ledger.check_arrivals(
            "hl7", {ledger.control_id(r) for r in report_ids["hl7"]}, stack.mllp.control_ids(), residue(boxes.hl7)
        ),
        ledger.check_arrivals(
            "fhir", {f"urn:uuid:{r}" for r in report_ids["fhir"]}, fhir.report_identifiers(), residue(boxes.fhir)
        ),
        ledger.check_resources(stack.samples, started + warm_up),
        _dicom_outbox(boxes.dicom, residue),
    ]


def _settle(settings: Settings, boxes: Outboxes) -> None:
    """Wait (up to ``DRAIN_S``) until nothing has been under way for ``SETTLE_S``: every job
    finished, every study the node holds made a job, every outbox empty. A study the node
    acknowledged at the end becomes a job only once it is quiet, and its results reach the
    outboxes only once a worker scored it, so empty outboxes alone do not mean drained."""
    incoming = settings.dicom_root / "incoming"
    deadline = time.monotonic() + DRAIN_S
    settled_since: float | None = None
    while time.monotonic() < deadline:
        busy = ledger.node_jobs_under_way(settings.jobs_root, incoming) or any(
            box.pending() for box in boxes.by_name().values()
        )
        if busy:
            settled_since = None
        elif settled_since is None:
            settled_since = time.monotonic()
        elif time.monotonic() - settled_since >= SETTLE_S:
            return
        time.sleep(1)


def _dicom_outbox(box, residue) -> ledger.Check:
    check = ledger.Check("dicom_out", counts=residue(box))
    if check.counts["pending"] or check.counts["failed"]:
        check.violations.append(f"left in the DICOM outbox: {check.counts}")
    return check


def _report_ids(stack: Stack, jobs: JobRunner, settings: Settings) -> dict[str, set[str]]:
    """The report ids results went out under: the HTTP pool's (asked of the service, which keeps
    one per image), and every scored row of the folder jobs and the node's jobs."""
    from pneumoscan.result import Result

    hl7: set[str] = set()
    fhir: set[str] = set()
    pool = sorted((stack.folder / "pool").iterdir())
    with httpx.Client(base_url=stack.url, timeout=60) as client:
        for path in pool:
            kind = (
                "application/dicom" if path.suffix == ".dcm" else "image/jpeg" if path.suffix != ".png" else "image/png"
            )
            answer = client.post("/predict", content=path.read_bytes(), headers={"Content-Type": kind})
            if answer.status_code != 200:
                continue
            bundle = client.post(
                "/predict",
                content=path.read_bytes(),
                headers={"Content-Type": kind, "Accept": "application/fhir+json"},
            ).json()
            for entry in bundle.get("entry", []):
                resource = entry["resource"]
                if resource["resourceType"] == "DiagnosticReport":
                    report_id = resource["identifier"][0]["value"].removeprefix("urn:uuid:")
                    fhir.add(report_id)
                    if path.suffix == ".dcm":
                        hl7.add(report_id)
    import csv

    for results in settings.jobs_root.glob("*/results.csv"):
        with results.open(newline="") as handle:
            for row in csv.DictReader(handle):
                result = Result.from_row(row)
                if result.prediction is None:
                    continue
                fhir.add(result.report_id)
                if result.dicom is not None and result.dicom.patient is not None and result.dicom.patient.patient_id:
                    hl7.add(result.report_id)
    return {"hl7": hl7, "fhir": fhir}


if __name__ == "__main__":
    sys.exit(main())
