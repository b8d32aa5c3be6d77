"""``make bench``: the service beside the hardware's ceiling and a naive baseline, in one run.

    .venv/bin/pneumoscan bench [--samples DIR] [--seconds S]

Stages, all on this machine in one run: (1) the in-process ceiling (decode alone in one process
per core, model alone at batch 1/8/32/64, then decoding processes feeding batched predict), (2)
the real service under Locust at 1, 8, 32 and 64 closed-loop users, (3) the service with batching
off, and with the model in one model-service process (the GPU layout) instead of in each HTTP
worker, at 32 users, (4) a naive Starlette app (full-resolution decode, ``model.predict`` per
request) at 32 users, (5) the worker on >= 500 full-size X-rays through ``pneumoscan score`` and
the queue with one and two workers, then the ceiling again. Beside stage 1, the model's CPU cost
per image on one thread at several batch sizes (``bench.model_cost``): what each HTTP worker pays,
and so what batching can save on a CPU. Writes ``bench/report.json``, ``bench/report.md``
(printed too) and ``bench/report.png`` (``bench.plot``); Locust's CSV and HTML reports go to
``bench/out/``.
"""

from __future__ import annotations

import csv
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import psutil

from bench.plot import report_png
from bench.worker_bench import build_folder, queue_run, summary_rate
from service.launch import free_port, register_model, start, start_service, stop

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "bench" / "out"
DEFAULT_SAMPLES = REPO / "tests" / "fixtures" / "xrays"
USERS = (1, 8, 32, 64)
BATCH_SIZES = (1, 8, 32, 64)
TARGETS = {
    "service_32_vs_ceiling": 0.7,
    "service_32_vs_naive": 5.0,
    "batching_on_vs_off_32": 1.3,
    "worker_vs_ceiling": 0.85,
    "two_workers_vs_one": 1.0,
}
P99_AT_8_USERS_MS = 150.0
MEAN_BATCH_AT_32 = 4.0
ONE_THREAD_BATCH_SIZES = (1, 4, 8, 32)


def sample_paths(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in {".jpg", ".jpeg", ".png"})


# --- 1. the in-process ceiling ------------------------------------------------------------------


def _quiet_decoder() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def ceiling_stage(paths: list[Path], seconds: float, batch_sizes: tuple[int, ...] = BATCH_SIZES) -> dict:
    """Decoding in one process per core (no GIL between them), the model in this one."""
    from pneumoscan.imaging.preprocess import load_plane, plane_to_input
    from pneumoscan.model.architectures import INPUT_SHAPE, configure_tensorflow
    from pneumoscan.model.predictor import Predictor
    from pneumoscan.settings import available_cores, get_settings

    cores = available_cores()
    configure_tensorflow(0, 1)
    predictor = Predictor.from_dir(get_settings().model_dir)
    payloads = [p.read_bytes() for p in paths]
    rounds = max(1, 400 // len(payloads))
    work = payloads * rounds

    with ProcessPoolExecutor(cores, initializer=_quiet_decoder) as pool:
        list(pool.map(load_plane, payloads))  # start the processes before timing
        started = time.perf_counter()
        list(pool.map(load_plane, work, chunksize=8))
        decode_rate = len(work) / (time.perf_counter() - started)

        model_rates: dict[int, float] = {}
        for size in batch_sizes:
            batch = np.random.default_rng(0).random((size, *INPUT_SHAPE), dtype=np.float32)
            predictor.predict_proba(batch)
            calls, started = 0, time.perf_counter()
            while time.perf_counter() - started < min(seconds, 3.0):
                predictor.predict_proba(batch)
                calls += 1
            model_rates[size] = calls * size / (time.perf_counter() - started)
        best = max(model_rates, key=lambda size: model_rates[size])

        started = time.perf_counter()
        decoded = pool.map(load_plane, work, chunksize=8)
        for offset in range(0, len(work), best):
            planes = np.stack([next(decoded) for _ in work[offset : offset + best]])
            predictor.predict_proba(plane_to_input(planes))
        pipeline_rate = len(work) / (time.perf_counter() - started)
    return {
        "images": len(work),
        "cores": cores,
        "decode_processes": cores,
        "decode_images_per_s": round(decode_rate, 1),
        "model_images_per_s": {str(k): round(v, 1) for k, v in model_rates.items()},
        "best_batch_size": best,
        "images_per_s": round(pipeline_rate, 1),
    }


def one_thread_model_cost(seconds: float = 2.0) -> dict[str, float]:
    """CPU ms per image of ``Predictor.score`` by batch size with one TensorFlow thread, as in each
    HTTP worker on 2 cores; in a process of its own, since TensorFlow's threads are set once."""
    from pneumoscan.settings import get_settings

    command = [
        sys.executable,
        "-m",
        "bench.model_cost",
        str(get_settings().model_dir),
        "--threads",
        "1",
        "--batch-sizes",
        ",".join(map(str, ONE_THREAD_BATCH_SIZES)),
        "--seconds",
        str(seconds),
    ]
    printed = subprocess.run(
        command, cwd=REPO, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, capture_output=True, text=True, check=True
    ).stdout
    rows = [json.loads(line) for line in printed.splitlines() if line.startswith("{")]
    return {str(row["batch"]): row["cpu_ms_per_image"] for row in rows}


def with_drift(before: dict, after: dict) -> dict:
    """The ceiling measured before and after the other stages: the ratios use their mean, so a
    machine that slows down or speeds up during the run (shared hosts do) biases them less."""
    return {
        **before,
        "images_per_s": round((before["images_per_s"] + after["images_per_s"]) / 2, 1),
        "images_per_s_before": before["images_per_s"],
        "images_per_s_after": after["images_per_s"],
    }


# --- servers and Locust -------------------------------------------------------------------------


def scrape(url: str) -> dict[str, float]:
    """(images, model calls, retries) so far: ``pneumoscan_model_batch_size``'s sum and count and
    ``pneumoscan_model_call_retries_total`` from /metrics, summed over the HTTP workers."""
    names = {
        "pneumoscan_model_batch_size_sum": "images",
        "pneumoscan_model_batch_size_count": "calls",
        "pneumoscan_model_call_retries_total": "retries",
    }
    values = dict.fromkeys(names.values(), 0.0)
    for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
        name = line.split("{")[0].split(" ")[0]
        if name in names:
            values[names[name]] += float(line.rsplit(" ", 1)[1])
    return values


def run_locust(
    url: str, users: int, seconds: float, prefix: Path, samples: Path, spawn_rate: int | None = None
) -> dict:
    """Locust headless, closed loop, reports at ``prefix*``; its CPU time is a child's rusage."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "locust",
            "-f",
            "loadtests/locustfile.py",
            "--headless",
            "--host",
            url,
            "--users",
            str(users),
            "--spawn-rate",
            str(spawn_rate or users),
            "--run-time",
            f"{seconds:g}s",
            "--csv",
            str(prefix),
            "--html",
            f"{prefix}.html",
            "--only-summary",
            "--loglevel",
            "WARNING",
        ],
        cwd=REPO,
        env={**os.environ, "PNEUMOSCAN_LOAD_SAMPLES": str(samples)},
        capture_output=True,
        check=False,
        timeout=seconds + 120,
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {
        "users": users,
        **read_locust_stats(Path(f"{prefix}_stats.csv")),
        "locust_cpu_s": round((after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime), 1),
        "seconds": seconds,
    }


def read_locust_stats(path: Path) -> dict:
    with path.open(newline="") as handle:
        row = next(r for r in csv.DictReader(handle) if r["Name"] == "Aggregated")
    return {
        "requests": int(row["Request Count"]),
        "failures": int(row["Failure Count"]),
        "requests_per_s": round(float(row["Requests/s"]), 1),
        "p50_ms": float(row["50%"]),
        "p95_ms": float(row["95%"]),
        "p99_ms": float(row["99%"]),
    }


def service_processes(server: subprocess.Popen) -> dict[str, list[psutil.Process]]:
    """The server's worker processes by role: "http" (pneumoscan) and "model" (pneumonia_model)."""
    roles: dict[str, list[psutil.Process]] = {"http": [], "model": []}
    for child in psutil.Process(server.pid).children(recursive=True):
        command = " ".join(child.cmdline())
        if "--service-name pneumonia_model" in command:
            roles["model"].append(child)
        elif "--service-name pneumoscan" in command:
            roles["http"].append(child)
    return roles


def cpu_seconds(processes: list[psutil.Process]) -> float:
    return sum(sum(p.cpu_times()[:2]) for p in processes)


def service_stage(
    home: Path,
    samples: Path,
    seconds: float,
    users: tuple[int, ...],
    batching: bool = True,
    placement: str = "in_process",
    settings: dict[str, str] | None = None,
) -> dict:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    settings = {
        "PNEUMOSCAN_ADAPTIVE_BATCHING": str(batching).lower(),
        "PNEUMOSCAN_MODEL_PLACEMENT": placement,
        **(settings or {}),
    }
    process = start_service(home, port, settings, OUT / f"serve-{port}.log")
    roles = service_processes(process)
    name = f"service-{placement}-{'on' if batching else 'off'}"
    try:
        runs = []
        for count in users:
            run = measure(url, roles, count, seconds, OUT / f"{name}-{count}", samples)
            if not balanced(run):
                # The HTTP workers share one listening socket and Locust opens its connections at
                # once, so now and then one worker accepts nearly all of them and the run measures
                # one core. Such a run is repeated once, and both are kept in the report.
                run = {
                    **measure(url, roles, count, seconds, OUT / f"{name}-{count}-again", samples),
                    "unbalanced_run": run,
                }
            runs.append(run)
        return {"adaptive_batching": batching, "placement": placement, "http_workers": len(roles["http"]), "runs": runs}
    finally:
        stop(process)


def measure(
    url: str, roles: dict[str, list[psutil.Process]], users: int, seconds: float, prefix: Path, samples: Path
) -> dict:
    """One Locust run against a started service, with the CPU, batch and retry figures beside it."""
    before = scrape(url)
    cpu_before = {role: cpu_seconds(procs) for role, procs in roles.items()}
    worker_before = [cpu_seconds([proc]) for proc in roles["http"]]
    started = time.perf_counter()
    run = run_locust(url, users, seconds, prefix, samples)
    elapsed = time.perf_counter() - started
    # Share of one core each kind of process used: where the time goes, without a profiler.
    run["cpu_percent"] = {
        role: round(100 * (cpu_seconds(procs) - cpu_before[role]) / elapsed, 1) for role, procs in roles.items()
    }
    run["http_worker_cpu_percent"] = [
        round(100 * (cpu_seconds([proc]) - start) / elapsed, 1)
        for proc, start in zip(roles["http"], worker_before, strict=False)
    ]
    run["cpu_ms_per_request"] = cpu_ms_per_request(run)
    after = scrape(url)
    calls = after["calls"] - before["calls"]
    run["mean_batch_size"] = round((after["images"] - before["images"]) / calls, 2) if calls else None
    run["retries"] = int(after["retries"] - before["retries"])
    return run


def cpu_ms_per_request(run: dict) -> float | None:
    """CPU milliseconds the service's processes spent per answered request (Locust apart)."""
    cpu = run.get("cpu_percent")
    if not cpu or not run["requests_per_s"]:
        return None
    return round(sum(cpu.values()) * 10 / run["requests_per_s"], 2)


def balanced(run: dict) -> bool:
    """False when one HTTP worker used under half the CPU of the busiest (it got few connections)
    although there were at least four users per worker to go round."""
    shares = run.get("http_worker_cpu_percent") or []
    if len(shares) < 2 or run["users"] < 4 * len(shares):
        return True
    return min(shares) >= 0.5 * max(shares)


def naive_stage(samples: Path, seconds: float) -> dict:
    port = free_port()
    process = start(
        [sys.executable, "-m", "uvicorn", "bench.naive_app:app", "--host", "127.0.0.1", "--port", str(port)],
        {"TF_CPP_MIN_LOG_LEVEL": "3"},
        OUT / "naive.log",
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                httpx.get(url, timeout=2)
                break
            except httpx.HTTPError:
                time.sleep(0.5)
        return run_locust(url, 32, seconds, OUT / "naive-32", samples)
    finally:
        stop(process)


# --- 5. the worker ------------------------------------------------------------------------------


def worker_stage(samples: Path, work: Path, minimum: int = 500) -> dict:
    files = len(sample_paths(samples))
    folder = work / "worker-input"
    count = build_folder(samples, -(-minimum // files), folder)
    env = {**os.environ, "PNEUMOSCAN_DATA_DIR": str(work / "var-score")}
    subprocess.run(
        [sys.executable, "-m", "cli", "score", str(folder), "--output", str(work / "score")],
        cwd=REPO,
        env=env,
        check=True,
        capture_output=True,
    )
    return {
        "images": count,
        "score_images_per_s": summary_rate(next((work / "score").iterdir())),
        "queue_1_worker_images_per_s": queue_run(folder, 1, work),
        "queue_2_workers_images_per_s": queue_run(folder, 2, work),
    }


# --- the report ---------------------------------------------------------------------------------


def build_report(
    ceiling: dict, service: dict, batching_off: dict, model_service: dict, naive: dict, worker: dict
) -> dict:
    by_users = {run["users"]: run for run in service["runs"]}
    at_32 = by_users[32]["requests_per_s"]
    ratios = {
        "service_32_vs_ceiling": at_32 / ceiling["images_per_s"],
        "service_32_vs_naive": at_32 / max(naive["requests_per_s"], 1e-9),
        "batching_on_vs_off_32": at_32 / max(batching_off["runs"][0]["requests_per_s"], 1e-9),
        # The slowest of `pneumoscan score` and the queue with one and two workers.
        "worker_vs_ceiling": min(
            worker["score_images_per_s"], worker["queue_1_worker_images_per_s"], worker["queue_2_workers_images_per_s"]
        )
        / ceiling["images_per_s"],
        "two_workers_vs_one": worker["queue_2_workers_images_per_s"] / worker["queue_1_worker_images_per_s"],
    }
    targets = {
        name: {"value": round(value, 3), "goal": f">= {TARGETS[name]}", "met": value >= TARGETS[name]}
        for name, value in ratios.items()
    }
    p99 = by_users[8]["p99_ms"]
    targets["p99_at_8_users_ms"] = {"value": p99, "goal": f"<= {P99_AT_8_USERS_MS}", "met": p99 <= P99_AT_8_USERS_MS}
    mean_batch = by_users[32].get("mean_batch_size") or 0.0
    targets["mean_batch_at_32_users"] = {
        "value": mean_batch,
        "goal": f">= {MEAN_BATCH_AT_32}",
        "met": mean_batch >= MEAN_BATCH_AT_32,
    }
    served = [*service["runs"], *batching_off["runs"], *model_service["runs"]]
    failures = sum(run["failures"] for run in [*served, naive])
    targets["failed_requests"] = {"value": failures, "goal": "== 0", "met": failures == 0}
    retries = sum(run.get("retries", 0) for run in served)
    targets["model_call_retries"] = {"value": retries, "goal": "== 0", "met": retries == 0}
    # Informational: the two-level layout (the GPU default) on this CPU, against the one in use.
    model_service_at_32 = model_service["runs"][0]["requests_per_s"]
    return {
        "machine": {"cores": ceiling["cores"], "platform": sys.platform},
        "ceiling": ceiling,
        "service": service,
        "service_batching_off": batching_off,
        "service_model_service": model_service,
        "model_service_vs_in_process_32": round(model_service_at_32 / max(at_32, 1e-9), 3),
        "naive_baseline": naive,
        "worker": worker,
        "targets": targets,
    }


def cpu_share(run: dict) -> str:
    cpu = run.get("cpu_percent")
    if not cpu:
        return "-"
    http = f"{cpu['http']:g}"
    if len(run.get("http_worker_cpu_percent") or []) > 1:
        http += " (" + " + ".join(f"{share:g}" for share in run["http_worker_cpu_percent"]) + ")"
    if "unbalanced_run" in run:
        http += " †"
    return f"{http} / {cpu['model']:g}" if cpu.get("model") else f"{http} / -"


def markdown(report: dict) -> str:
    ceiling = report["ceiling"]
    lines = [
        f"Ceiling ({ceiling['cores']} cores, {ceiling['images']} images): decode alone in "
        f"{ceiling.get('decode_processes', ceiling['cores'])} processes "
        f"{ceiling['decode_images_per_s']} img/s; model alone "
        + ", ".join(f"batch {k}: {v}" for k, v in ceiling["model_images_per_s"].items())
        + f" img/s; decode + batched predict (batch {ceiling['best_batch_size']}): "
        f"**{ceiling['images_per_s']} img/s**"
        + (
            f" (mean of {ceiling['images_per_s_before']} before the other stages and "
            f"{ceiling['images_per_s_after']} after them)"
            if "images_per_s_after" in ceiling
            else ""
        )
        + ".",
        "",
        "| run | users | req/s | x ceiling | p50 ms | p95 ms | p99 ms | failures | retries | mean batch "
        "| CPU % HTTP / model | CPU ms/req | Locust CPU s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    runs = [("service", run) for run in report["service"]["runs"]]
    runs += [("service, batching off", run) for run in report["service_batching_off"]["runs"]]
    runs += [("service, model in its own process", run) for run in report["service_model_service"]["runs"]]
    runs.append(("naive baseline", report["naive_baseline"]))
    for name, run in runs:
        lines.append(
            f"| {name} | {run['users']} | {run['requests_per_s']} | "
            f"{run['requests_per_s'] / ceiling['images_per_s']:.2f} | {run['p50_ms']:g} | {run['p95_ms']:g} | "
            f"{run['p99_ms']:g} | {run['failures']} | {run.get('retries', '-')} | "
            f"{run.get('mean_batch_size') or '-'} | "
            f"{cpu_share(run)} | {run.get('cpu_ms_per_request') or '-'} | {run['locust_cpu_s']} |"
        )
    if any("unbalanced_run" in run for _, run in runs):
        lines += [
            "",
            "† repeated: in the first run one HTTP worker accepted most of Locust's connections "
            "(under half the CPU of the other); both runs are in report.json.",
        ]
    worker = report["worker"]
    lines += [
        "",
        f"Worker, {worker['images']} full-size X-rays: `pneumoscan score` {worker['score_images_per_s']} img/s, "
        f"queue with 1 worker {worker['queue_1_worker_images_per_s']} img/s, "
        f"with 2 workers {worker['queue_2_workers_images_per_s']} img/s.",
        "",
        "| target | value | goal | met |",
        "|---|---|---|---|",
    ]
    for name, target in report["targets"].items():
        lines.append(f"| {name} | {target['value']} | {target['goal']} | {'yes' if target['met'] else 'NO'} |")
    lines += ["", where_the_time_goes(report)]
    if (batching := what_batching_saves(report)) is not None:
        lines += ["", batching]
    return "\n".join(lines) + "\n"


def what_batching_saves(report: dict) -> str | None:
    """The batching ratio beside the CPU a request costs with and without it, and the model's own
    saving on one thread: on a CPU that is saturated, on vs off cannot exceed the cost ratio."""
    on = next(r for r in report["service"]["runs"] if r["users"] == 32)
    off = report["service_batching_off"]["runs"][0]
    model = report["ceiling"].get("one_thread_cpu_ms_per_image")
    if not (on.get("cpu_ms_per_request") and off.get("cpu_ms_per_request") and model):
        return None
    mean_batch = on.get("mean_batch_size") or 1.0
    at_mean = per_image_at(model, mean_batch)
    model_saving = model["1"] - at_mean
    saving = off["cpu_ms_per_request"] - on["cpu_ms_per_request"]
    return (
        f"Batching at 32 users: {report['targets']['batching_on_vs_off_32']['value']}x the throughput "
        f"without it. A request cost {on['cpu_ms_per_request']:g} CPU ms with batching and "
        f"{off['cpu_ms_per_request']:g} without (all service processes, Locust apart). The model alone, "
        f"on one thread as in each HTTP worker, costs {model['1']:g} CPU ms per image at batch 1 and "
        f"{at_mean:.3g} at the mean batch of {mean_batch:g} (between the sizes timed): batching saves "
        f"{model_saving:.2f} ms "
        f"there and {saving - model_saving:.2f} ms in per-call hand-offs. With the cores saturated, "
        f"on vs off is bounded near the cost ratio, {off['cpu_ms_per_request'] / on['cpu_ms_per_request']:.2f}, "
        f"on this machine."
    )


def per_image_at(cost_by_size: dict[str, float], batch: float) -> float:
    """CPU ms per image at ``batch`` images a call, interpolated between the batch sizes timed."""
    sizes = sorted(int(size) for size in cost_by_size)
    low = max((size for size in sizes if size <= batch), default=sizes[0])
    high = min((size for size in sizes if size >= batch), default=sizes[-1])
    if high == low:
        return cost_by_size[str(low)]
    share = (batch - low) / (high - low)
    return cost_by_size[str(low)] + share * (cost_by_size[str(high)] - cost_by_size[str(low)])


def where_the_time_goes(report: dict) -> str:
    """A one-paragraph reading of the 32-user run: which stage bounds the service."""
    run = next(r for r in report["service"]["runs"] if r["users"] == 32)
    cpu = {"http": 0.0, "model": 0.0, **(run.get("cpu_percent") or {})}
    cores = report["machine"]["cores"] or 1
    locust = 100 * run["locust_cpu_s"] / run["seconds"]
    busy = cpu["http"] + cpu["model"] + locust
    ceiling = report["ceiling"]
    if busy >= 80 * cores:
        verdict = (
            "the cores are (nearly) saturated, Locust's share included: on this machine the service is "
            "bound by CPU, shared between HTTP handling, decoding and the model"
        )
    elif max(cpu.values()) >= 90 * max(report["service"].get("http_workers", 1), 1):
        verdict = "the HTTP workers are saturated: add cores or workers"
    else:
        verdict = (
            "the cores are not saturated: requests wait in per-request handling or the batcher's "
            "scheduling, not on the model"
        )
    model = f" and the model process {cpu['model']:g} %" if cpu["model"] else " (the model runs inside them)"
    return (
        f"At 32 users the HTTP workers used {cpu['http']:g} % of a core{model}, Locust {locust:.0f} %, "
        f"{busy:.0f} % of {100 * cores} % in all; decoding alone could reach {ceiling['decode_images_per_s']} "
        f"img/s and the model {max(ceiling['model_images_per_s'].values())} img/s. Reading: {verdict}."
    )


def main(samples: Path = DEFAULT_SAMPLES, seconds: float = 20.0) -> dict:
    OUT.mkdir(parents=True, exist_ok=True)
    paths = sample_paths(samples)
    if not paths:
        raise SystemExit(f"No X-ray samples under {samples}")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        print("1/5 ceiling", flush=True)
        ceiling = {**ceiling_stage(paths, seconds), "one_thread_cpu_ms_per_image": one_thread_model_cost()}
        home = work / "bentoml"
        register_model(home)
        print("2/5 service", flush=True)
        service = service_stage(home, samples, seconds, users=USERS)
        print("3/5 service without batching, and with the model in its own process", flush=True)
        batching_off = service_stage(home, samples, seconds, users=(32,), batching=False)
        model_service = service_stage(home, samples, seconds, users=(32,), placement="model_service")
        print("4/5 naive baseline", flush=True)
        naive = naive_stage(samples, seconds)
        print("5/5 worker, and the ceiling again", flush=True)
        worker = worker_stage(samples, work)
        ceiling = with_drift(ceiling, ceiling_stage(paths, seconds))
    report = build_report(ceiling, service, batching_off, model_service, naive, worker)
    (REPO / "bench" / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    table = markdown(report)
    (REPO / "bench" / "report.md").write_text(table)
    (REPO / "bench" / "report.png").write_bytes(report_png(report, P99_AT_8_USERS_MS))
    print(table)
    return report
