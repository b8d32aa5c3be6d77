"""``pneumoscan bench``: ``make bench``, from a checkout (the wheel does not install bench/)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cli.common import EXIT_INPUT_FAILED, EXIT_OK, EXIT_USAGE


def cmd_bench(args: argparse.Namespace) -> int:
    try:
        from bench.run import main as run_bench
    except ModuleNotFoundError:
        print("pneumoscan: bench/ is not installed; run `make bench` from a checkout.", file=sys.stderr)
        return EXIT_USAGE

    report = run_bench(samples=args.samples, seconds=args.seconds)
    return EXIT_OK if all(target["met"] for target in report["targets"].values()) else EXIT_INPUT_FAILED


def add_commands(commands: argparse._SubParsersAction) -> None:
    bench = commands.add_parser("bench", help="benchmark the service, the worker and baselines (make bench)")
    bench.add_argument("--samples", type=Path, default=Path("tests/fixtures/xrays"), help="X-rays to post")
    bench.add_argument("--seconds", type=float, default=20.0, help="Locust run time per load level")
    bench.set_defaults(handler=cmd_bench)
