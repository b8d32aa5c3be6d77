"""What the soak checks at the end, each check with its counts and its violations.

- **http**: every request answered with 200 or a documented error (4xx with the error body, 503
  with ``Retry-After``); a 500, a 503 without ``Retry-After``, or no answer within the client's
  30 s is a violation. A connection cut by a killed HTTP worker is counted apart (``cut``) when it
  falls within 2 s of that kill; any other is a violation.
- **jobs**: every job ``done``, exactly one ``results.csv`` row per file.
- **node_jobs**: every study the node acknowledged became a job, and every job in the jobs root
  (the node's and the folder jobs) finished.
- **pacs**: every instance the node acknowledged has its results in Orthanc (an SR and, when it
  was scored, a Secondary Capture), once each by SOP Instance UID.
- **hl7** / **fhir**: every result meant for the listener and the FHIR server arrived exactly
  once (by MSH-10, by DiagnosticReport identifier); nothing waits in an outbox or sits in ``failed/``.
- **resources**: RSS and open fds of each role at the end within the bound of its warm-up figure.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from pneumoscan.jobs.folder import RESULTS_FILE, known_job_dirs, load_job

RSS_FACTOR, RSS_SLACK_MB, FD_SLACK = 1.5, 64.0, 64
CUT_WINDOW_S = 2.0
DOCUMENTED = {200, 202, 400, 404, 406, 413, 415, 422, 429}


@dataclass
class Check:
    name: str
    counts: dict = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations

    def as_dict(self) -> dict:
        return {"ok": self.ok, "counts": self.counts, "violations": self.violations[:50]}


def read_requests(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def check_http(requests: list[dict], kills: list[float]) -> Check:
    check = Check("http")
    counts: Counter = Counter()
    for request in requests:
        status = request["status"]
        if status in DOCUMENTED:
            counts["answered" if status in (200, 202) else f"documented {status}"] += 1
        elif status == 503 and request.get("retry_after"):
            counts["503 with Retry-After"] += 1
        elif status == 0 and _cut(request, kills):
            counts["cut by a killed HTTP worker"] += 1
        else:
            counts["violation"] += 1
            check.violations.append(f"{request['name']} at {request['t']}: HTTP {status} {request.get('error') or ''}")
    check.counts = {"requests": len(requests), **counts}
    if not requests:
        check.violations.append("no request was made")
    return check


def _cut(request: dict, kills: list[float]) -> bool:
    """Whether an HTTP worker was killed while the request was in flight (give or take the window)."""
    ended = request["t"]
    began = ended - request["ms"] / 1000
    return any(began - CUT_WINDOW_S <= kill <= ended + CUT_WINDOW_S for kill in kills)


def check_jobs(jobs, state_of, jobs_root: Path) -> Check:
    check = Check("jobs")
    rows_total = 0
    for job in jobs:
        state = state_of(job.job_id)
        results = jobs_root / job.job_id / "results.csv"
        if not results.is_file():
            results = None
        if state != "done" or results is None:
            check.violations.append(
                f"job {job.job_id}: {state}, results.csv {'missing' if results is None else 'kept'}"
            )
            continue
        with results.open(newline="") as handle:
            paths = Counter(row["path"] for row in csv.DictReader(handle))
        rows_total += sum(paths.values())
        expected = {path.name for path in Path(job.folder).iterdir()}
        if set(paths) != expected or any(count != 1 for count in paths.values()):
            missing, twice = expected - set(paths), [path for path, count in paths.items() if count > 1]
            check.violations.append(f"job {job.job_id}: {len(missing)} files without a row, {len(twice)} with two")
    check.counts = {"jobs": len(jobs), "rows": rows_total}
    return check


def node_jobs_under_way(jobs_root: Path, incoming: Path) -> list[str]:
    """What of the node's work is not finished: a job without its ``results.csv``, or a study in
    ``incoming`` no job was made for yet."""
    under_way, folders = [], set()
    for job_dir in known_job_dirs(jobs_root):
        try:
            folders.add(Path(load_job(job_dir).input_folder).name)
        except (OSError, ValueError):
            under_way.append(f"job {job_dir.name}: job.json unreadable")
            continue
        if not (job_dir / RESULTS_FILE).is_file():
            under_way.append(f"job {job_dir.name}: not finished")
    studies = sorted(folder.name for folder in incoming.iterdir() if folder.is_dir()) if incoming.is_dir() else []
    under_way += [f"study {study}: no job" for study in studies if study not in folders]
    return under_way


def check_node_jobs(jobs_root: Path, incoming: Path) -> Check:
    """Every study the node acknowledged became a job, and every job (the node's and the folder
    jobs) finished."""
    check = Check("node_jobs")
    check.violations = node_jobs_under_way(jobs_root, incoming)
    check.counts = {"jobs": len(known_job_dirs(jobs_root)), "under_way": len(check.violations)}
    return check


def check_pacs(orthanc_url: str, incoming: Path) -> Check:
    """Each acknowledged instance (``incoming/<study>/<sop>.dcm``) against what Orthanc holds."""
    check = Check("pacs")
    studies = [folder for folder in sorted(incoming.iterdir()) if folder.is_dir()] if incoming.is_dir() else []
    instances = stored = 0
    for folder in studies:
        sources = sorted(path.stem for path in folder.glob("*.dcm"))
        instances += len(sources)
        found = httpx.post(
            f"{orthanc_url}/tools/find",
            json={"Level": "Instance", "Query": {"StudyInstanceUID": folder.name}},
            timeout=30,
        ).json()
        sops: Counter[str] = Counter()
        for instance in found:
            tags = httpx.get(f"{orthanc_url}/instances/{instance}/simplified-tags", timeout=30).json()
            sops[tags.get("SOPInstanceUID")] += 1
        stored += len(sops)
        if len(sops) < len(sources):
            check.violations.append(f"study {folder.name}: {len(sources)} instances, {len(sops)} results in the PACS")
        if any(count > 1 for count in sops.values()):
            check.violations.append(f"study {folder.name}: a result stored twice")
    check.counts = {"studies": len(studies), "instances": instances, "results_in_pacs": stored}
    return check


def control_id(report_id: str) -> str:
    """MSH-10 of a report's ORU^R01 (``pneumoscan.reports.hl7.control_id``)."""
    return hashlib.sha256(report_id.encode()).hexdigest()[:20].upper()


def check_arrivals(name: str, expected: set[str], arrived: list[str], boxes: dict[str, int]) -> Check:
    check = Check(name)
    counts = Counter(arrived)
    missing = expected - set(counts)
    twice = [key for key, count in counts.items() if count > 1]
    check.counts = {"expected": len(expected), "arrived": len(counts), "missing": len(missing), "twice": len(twice)}
    check.counts.update(boxes)
    if missing:
        check.violations.append(f"{len(missing)} never arrived, e.g. {sorted(missing)[:3]}")
    if twice:
        check.violations.append(f"{len(twice)} arrived more than once, e.g. {twice[:3]}")
    if boxes.get("pending") or boxes.get("failed"):
        check.violations.append(f"left in the outbox: {boxes}")
    return check


def check_resources(samples, warm_up_end: float) -> Check:
    check = Check("resources")
    warm = [sample for sample in samples if sample.t <= warm_up_end]
    if not warm or not samples:
        check.violations.append("no samples")
        return check
    baseline, last = warm[-1], samples[-1]
    for role in sorted(baseline.rss_mb):
        if role not in last.rss_mb:
            continue
        start_rss, end_rss = baseline.rss_mb[role], last.rss_mb[role]
        start_fds, end_fds = baseline.fds[role], last.fds[role]
        check.counts[role] = {"rss_mb": [start_rss, end_rss], "fds": [start_fds, end_fds]}
        if end_rss > start_rss * RSS_FACTOR + RSS_SLACK_MB:
            check.violations.append(f"{role}: RSS {start_rss:.0f} -> {end_rss:.0f} MB")
        if end_fds > start_fds + FD_SLACK:
            check.violations.append(f"{role}: fds {start_fds} -> {end_fds}")
    check.counts["bound"] = f"end <= {RSS_FACTOR} x warm-up + {RSS_SLACK_MB:.0f} MB; fds <= warm-up + {FD_SLACK}"
    return check
