"""``pneumoscan drift``: a model's answers on new X-rays against the reference in its folder.
Exit code 0 whatever the verdict; 2 for a bad folder or job, 3 for a model without a reference."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from cli.common import EXIT_OK
from cli.common import configure_tensorflow_from_settings as _configure_tensorflow
from pneumoscan.settings import get_settings


def cmd_drift(args: argparse.Namespace) -> int:
    from training.drift.report import drift_report, reference_for, summary, write_report

    reference_for(args.model)  # before any scoring: a model without one fails at once
    notes: list[str] = []
    if args.data is not None:
        _configure_tensorflow()
        from training.drift.report import folder_sample

        sample, source = folder_sample(args.model, args.data, batch_size=get_settings().predict_batch_size)
    else:
        from pneumoscan.jobs.folder import find_job
        from pneumoscan.model.predictor import load_metadata
        from training.drift.report import job_sample

        job_dir = find_job(get_settings().jobs_root, args.job)
        sample, source, notes = job_sample(job_dir, load_metadata(args.model).version)
    command = "pneumoscan " + shlex.join(sys.argv[1:])
    report, _ = drift_report(args.model, sample, source, notes, command)
    if args.out is not None:
        write_report(report, args.out)
    if args.json:
        print(report.model_dump_json())
    else:
        print(summary(report))
        if args.out is not None:
            print(f"Wrote {Path(args.out) / 'report.json'} and drift.png")
    return EXIT_OK


def add_commands(commands: argparse._SubParsersAction) -> None:
    drift = commands.add_parser(
        "drift",
        help="compare a model's answers on new X-rays with its reference: PSI, KS, rates and a verdict",
    )
    drift.add_argument("--model", required=True, type=Path, help="model folder (with drift_reference.json)")
    source = drift.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", type=Path, help="a folder of X-rays to score now (any layout)")
    source.add_argument("--job", help="a finished batch job's id or folder: its results.csv")
    drift.add_argument("--json", action="store_true", help="print the report as one JSON object")
    drift.add_argument("--out", type=Path, default=None, help="folder for report.json and drift.png")
    drift.set_defaults(handler=cmd_drift)
