"""The ``pneumoscan`` command: parses arguments, calls the core or an adapter, prints.

The composition root, outside the packages it composes: the only package that imports the core,
``training``, ``service`` and ``bench`` together, one module per noun (``model``: train, evaluate,
register; ``score``: predict, explain, bench; ``site``: validate, calibrate, adapt, split;
``drift``: new X-rays against the model's reference; ``jobs``: the batch-job commands; ``dicom``:
the DICOM node; ``outbox``: deliveries waiting or failed; ``access``: client keys and the audit
trail), each importing its adapter when its command runs. Exit codes are listed in
``cli.common``; how much it says on stderr (``--verbose``) is set in ``cli.quiet``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from cli import access, dicom, drift, jobs, model, outbox, quiet, score, site
from cli.common import EXIT_MODEL, EXIT_OK, EXIT_USAGE
from pneumoscan.errors import DataError, ModelError, PneumoscanError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pneumoscan", description="Pneumonia screening on chest X-rays.")
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="also print pneumoscan's INFO log lines and TensorFlow's start-up and log lines on stderr",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for noun in (model, site, drift, score, jobs, dicom, outbox, access):
        noun.add_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    quiet.configure(args.verbose)
    try:
        code = args.handler(args)
        sys.stdout.flush()
        return code
    except KeyboardInterrupt:
        print("pneumoscan: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (``pneumoscan results JOB | head``): stop quietly, as cat does.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except ModelError as exc:
        print(f"pneumoscan: model error: {exc.detail}", file=sys.stderr)
        return EXIT_MODEL
    except (DataError, PneumoscanError, ValueError) as exc:
        print(f"pneumoscan: {getattr(exc, 'detail', exc)}", file=sys.stderr)
        return EXIT_USAGE
