"""Where a request's CPU time goes in the service, by thread, under Locust.

    .venv/bin/python -m bench.cpu_per_request [--users 32] [--seconds 20] [--samples DIR] [NAME=VALUE ...]

Starts the service (``NAME=VALUE`` pairs are extra ``PNEUMOSCAN_*`` settings, e.g.
``PNEUMOSCAN_ADAPTIVE_BATCHING=false``), runs Locust against it, and reads each HTTP worker's
threads from ``/proc/<pid>/task/*/stat`` before and after. It prints CPU milliseconds per
request for the event loop (the worker's main thread), the decoding threads with the thread the
model calls run in, and TensorFlow's compute threads, summed over the workers. Linux only.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from bench.run import DEFAULT_SAMPLES, OUT, run_locust, scrape, service_processes
from service.launch import free_port, register_model, start_service, stop

TICK = os.sysconf("SC_CLK_TCK")


def kind(pid: int, thread_id: str, name: str) -> str:
    """The event loop (a worker's main thread), TensorFlow's threads, or the others (decoding
    threads and the thread the model calls run in)."""
    if thread_id == str(pid):
        return "event loop"
    return "TensorFlow" if name.startswith("tf_") else "decode+call"


def thread_cpu(pids: list[int]) -> dict[tuple[int, str, str], float]:
    """CPU seconds so far of every thread of ``pids``, by (pid, thread id, kind)."""
    seconds: dict[tuple[int, str, str], float] = {}
    for pid in pids:
        for task in Path(f"/proc/{pid}/task").iterdir():
            try:
                stat = (task / "stat").read_text()
            except FileNotFoundError:  # the thread ended
                continue
            fields = stat[stat.rindex(")") + 2 :].split()
            seconds[(pid, task.name, kind(pid, task.name, stat[stat.index("(") + 1 : stat.rindex(")")]))] = (
                int(fields[11]) + int(fields[12])
            ) / TICK
    return seconds


def measure(users: int, seconds: float, samples: Path, settings: dict[str, str]) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "bentoml"
        register_model(home)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        OUT.mkdir(parents=True, exist_ok=True)
        process = start_service(home, port, settings, OUT / "cpu-per-request-serve.log")
        try:
            pids = [proc.pid for proc in service_processes(process)["http"]]
            metrics, before = scrape(url), thread_cpu(pids)
            run = run_locust(url, users, seconds, OUT / f"cpu-per-request-{users}", samples)
            after, metrics_after = thread_cpu(pids), scrape(url)
        finally:
            stop(process)
    per_kind: dict[str, float] = defaultdict(float)
    for key, total in after.items():
        per_kind[key[2]] += total - before.get(key, 0.0)
    requests = max(run["requests"], 1)
    calls = metrics_after["calls"] - metrics["calls"]
    return {
        "users": users,
        "requests_per_s": run["requests_per_s"],
        "mean_batch": round((metrics_after["images"] - metrics["images"]) / calls, 2) if calls else None,
        "cpu_ms_per_request": {
            kind: round(1000 * total / requests, 2) for kind, total in sorted(per_kind.items()) if total >= 0.05
        },
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--samples", type=Path, default=DEFAULT_SAMPLES)
    parser.add_argument("settings", nargs="*", help="NAME=VALUE settings for the service")
    args = parser.parse_args(argv)
    settings = dict(pair.split("=", 1) for pair in args.settings)
    started = time.perf_counter()
    result = measure(args.users, args.seconds, args.samples, settings)
    print(
        f"{result['users']} users: {result['requests_per_s']} req/s, mean batch {result['mean_batch']} "
        f"({time.perf_counter() - started:.0f} s)"
    )
    for kind, value in result["cpu_ms_per_request"].items():
        print(f"  {kind:<12} {value:6.2f} CPU ms per request")
    print(f"  {'all':<12} {sum(result['cpu_ms_per_request'].values()):6.2f} CPU ms per request")


if __name__ == "__main__":
    main()
