"""``make loadtest``: Locust headless against a running service, then a one-screen summary.

    .venv/bin/python -m loadtests.summary http://localhost:3000 --users 32 --run-time 60s

Writes Locust's CSV and HTML reports to ``bench/out/load*`` and prints requests/s, p50/p95/p99
latency, failures, and the mean images per model call and the model-call retries read from
``/metrics`` before and after.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from bench.run import OUT, run_locust, scrape


def seconds(text: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([smh]?)", text)
    if not match:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 30s, 2m)")
    return float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[match.group(2)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("host")
    parser.add_argument("--users", type=int, default=32)
    parser.add_argument("--spawn-rate", type=int, default=None)
    parser.add_argument("--run-time", type=seconds, default=60.0)
    parser.add_argument("--samples", type=Path, default=Path("tests/fixtures/xrays"))
    parser.add_argument("--out", type=Path, default=OUT, help="report folder (default bench/out)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    before = scrape(args.host)
    run = run_locust(args.host, args.users, args.run_time, args.out / "load", args.samples, args.spawn_rate)
    after = scrape(args.host)
    calls = after["calls"] - before["calls"]
    images = after["images"] - before["images"]
    mean_batch = f"{images / calls:.2f} images over {calls:.0f} model calls" if calls else "no model calls"
    print(
        f"{args.users} users for {args.run_time:g} s against {args.host}\n"
        f"  requests/s      {run['requests_per_s']}\n"
        f"  latency ms      p50 {run['p50_ms']:g}   p95 {run['p95_ms']:g}   p99 {run['p99_ms']:g}\n"
        f"  requests        {run['requests']} ({run['failures']} failed)\n"
        f"  batching        mean {mean_batch}\n"
        f"  retries         {after['retries'] - before['retries']:.0f} model calls retried\n"
        f"  Locust CPU      {run['locust_cpu_s']} s\n"
        f"  reports         {args.out}/load_stats.csv, {args.out}/load.html"
    )
    return 1 if run["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
