"""The soak's schedule and ledger on hand-made inputs (the soak itself runs in .ci/run)."""

from __future__ import annotations

from bench.soak import ledger
from bench.soak.faults import KINDS, schedule


def test_the_schedule_draws_every_kind_before_any_twice_inside_the_window():
    faults = schedule(duration=600, warm_up=60, quiet=60, seed=3)
    kinds = [fault.kind for fault in faults]
    assert set(kinds[: len(KINDS)]) == set(KINDS)
    assert all(60 <= fault.at <= 540 for fault in faults)
    assert [fault.at for fault in faults] == sorted(fault.at for fault in faults)
    assert schedule(600, 60, 60, seed=3) == faults and schedule(600, 60, 60, seed=4) != faults


def test_a_short_run_still_has_faults():
    faults = schedule(duration=150, warm_up=22.5, quiet=22.5, seed=1)
    assert 3 <= len(faults) <= len(KINDS) and all(22.5 <= fault.at <= 127.5 for fault in faults)


def request(t: float, status: int, ms: float = 100.0, retry_after: str | None = None) -> dict:
    return {"t": t, "name": "/predict (raw)", "status": status, "ms": ms, "retry_after": retry_after, "error": None}


def test_http_answers_are_sorted_into_answered_documented_cut_and_violations():
    requests = [
        request(10.0, 200),
        request(11.0, 415),
        request(12.0, 503, retry_after="1"),
        request(50.2, 0, ms=300.0),  # in flight when the worker at 50.0 was killed
        request(90.0, 0, ms=30000.0, retry_after=None),  # no answer in 30 s, no kill near it
        request(95.0, 503),  # 503 without Retry-After
        request(96.0, 500),
    ]
    check = ledger.check_http(requests, kills=[50.0])
    assert check.counts["answered"] == 1 and check.counts["documented 415"] == 1
    assert check.counts["503 with Retry-After"] == 1 and check.counts["cut by a killed HTTP worker"] == 1
    assert check.counts["violation"] == 3 and not check.ok


def test_arrivals_must_be_each_expected_one_once_with_nothing_left_behind():
    assert ledger.check_arrivals("hl7", {"A", "B"}, ["A", "B"], {"pending": 0, "failed": 0}).ok
    missing = ledger.check_arrivals("hl7", {"A", "B"}, ["A"], {"pending": 0, "failed": 0})
    twice = ledger.check_arrivals("hl7", {"A"}, ["A", "A"], {"pending": 0, "failed": 0})
    stuck = ledger.check_arrivals("fhir", {"A"}, ["A"], {"pending": 0, "failed": 1})
    assert (missing.counts["missing"], twice.counts["twice"]) == (1, 1)
    assert not (missing.ok or twice.ok or stuck.ok)


def test_control_ids_are_the_core_ones():
    from types import SimpleNamespace

    from pneumoscan.reports.hl7 import control_id

    report_id = "0b7f5a4e-9c1d-5b2a-8f3e-1a2b3c4d5e6f"
    stand_in = SimpleNamespace(report_id=report_id)  # control_id reads only the report id
    assert ledger.control_id(report_id) == control_id(stand_in)  # type: ignore[arg-type]


def test_the_node_is_under_way_until_each_study_is_a_finished_job(tmp_path):
    from pneumoscan.jobs.folder import RESULTS_FILE, create_job

    jobs_root, incoming = tmp_path / "jobs", tmp_path / "dicom" / "incoming"
    study = incoming / "1.2.3"
    study.mkdir(parents=True)
    (study / "1.2.3.4.dcm").write_bytes(b"DICM")
    assert ledger.node_jobs_under_way(jobs_root, incoming) == ["study 1.2.3: no job"]
    job_dir = create_job(study, jobs_root, "v1", shard_size=8, dicom_outbox=tmp_path / "dicom" / "outbox")
    assert ledger.node_jobs_under_way(jobs_root, incoming) == [f"job {job_dir.name}: not finished"]
    assert not ledger.check_node_jobs(jobs_root, incoming).ok
    (job_dir / RESULTS_FILE).write_text("path\n1.2.3.4.dcm\n")
    check = ledger.check_node_jobs(jobs_root, incoming)
    assert check.ok and check.counts == {"jobs": 1, "under_way": 0}
