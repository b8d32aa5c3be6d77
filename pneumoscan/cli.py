"""The ``pneumoscan`` command: parses arguments, calls the core or an adapter, prints.

Exit codes: 0 success, 1 some input failed (``predict``), 2 usage or data error, 3 model error.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from pneumoscan.errors import DataError, ModelError, PneumoscanError
from pneumoscan.settings import get_settings

EXIT_OK, EXIT_INPUT_FAILED, EXIT_USAGE, EXIT_MODEL = 0, 1, 2, 3


def _configure_tensorflow() -> None:
    from pneumoscan.model import configure_tensorflow

    settings = get_settings()
    configure_tensorflow(settings.tf_intra_op_threads, settings.tf_inter_op_threads)


def cmd_train(args: argparse.Namespace) -> int:
    _configure_tensorflow()
    from training.train import train

    metadata = train(
        args.data, args.out, recipe_name=args.recipe, epochs=args.epochs, seed=args.seed,
        validation_fraction=args.validation_fraction, target_sensitivity=args.target_sensitivity,
    )
    v = metadata.validation
    print(
        f"Saved {metadata.version} to {args.out}: {metadata.epochs_run} epochs "
        f"(best {metadata.best_epoch}), {metadata.training_seconds:.0f} s. Validation (n={v.n}): "
        f"AUC {v.auc:.4f}, accuracy {v.accuracy:.4f}, sensitivity {v.sensitivity:.4f}, "
        f"specificity {v.specificity:.4f} at threshold {metadata.threshold:.4f}."
    )
    return EXIT_OK


def cmd_evaluate(args: argparse.Namespace) -> int:
    _configure_tensorflow()
    from training.evaluate import evaluate

    report = evaluate(args.model, args.data, out_dir=args.out, batch_size=get_settings().predict_batch_size)
    if args.json:
        print(report.model_dump_json())
    else:
        c = report.confusion
        print(
            f"n={report.n}  AUC {report.auc:.4f}  accuracy {report.accuracy:.4f}  "
            f"sensitivity {report.sensitivity:.4f}  specificity {report.specificity:.4f}  "
            f"threshold {report.threshold:.4f}\nconfusion: tp={c.tp} fp={c.fp} tn={c.tn} fn={c.fn}"
        )
        if args.out:
            print(f"Plots and evaluation.json written to {args.out}")
    return EXIT_OK


def cmd_predict(args: argparse.Namespace) -> int:
    _configure_tensorflow()
    from pneumoscan.model import Predictor
    from pneumoscan.predict import predict_files

    settings = get_settings()
    predictor = Predictor.from_dir(args.model or settings.model_dir, threshold=settings.threshold)
    failed = 0
    for result in predict_files(
        predictor, args.files, batch_size=settings.predict_batch_size, max_pixels=settings.max_image_pixels
    ):
        failed += result.error is not None
        print(result.model_dump_json(exclude_none=True), flush=True)
    return EXIT_INPUT_FAILED if failed else EXIT_OK


def cmd_register(args: argparse.Namespace) -> int:
    # The BentoML store belongs to the service adapter; the core never imports bentoml.
    from service.model_store import register_model

    settings = get_settings()
    tag, created = register_model(args.model or settings.model_dir, name=settings.model_tag.split(":")[0])
    print(f"{'Registered' if created else 'Already registered:'} {tag}")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pneumoscan", description="Pneumonia screening on chest X-rays.")
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train a model on DIR/{NORMAL,PNEUMONIA}/")
    train.add_argument("--data", required=True, type=Path, help="labelled training folder")
    train.add_argument("--out", required=True, type=Path, help="output folder for the model")
    train.add_argument("--recipe", default="tuned", choices=["seed", "tuned"])
    train.add_argument("--epochs", type=int, default=None, help="override the recipe's epoch count")
    train.add_argument("--seed", type=int, default=42)
    train.add_argument("--validation-fraction", type=float, default=0.15, help="share of patients held out")
    train.add_argument(
        "--target-sensitivity", type=float, default=0.95,
        help="the saved threshold is the highest reaching this sensitivity on validation",
    )
    train.set_defaults(handler=cmd_train)

    evaluate = commands.add_parser("evaluate", help="metrics of a model on a labelled folder")
    evaluate.add_argument("--model", required=True, type=Path)
    evaluate.add_argument("--data", required=True, type=Path)
    evaluate.add_argument("--json", action="store_true", help="print one JSON object")
    evaluate.add_argument("--out", type=Path, default=None, help="write ROC and confusion-matrix plots here")
    evaluate.set_defaults(handler=cmd_evaluate)

    predict = commands.add_parser("predict", help="score image files, one JSON line each")
    predict.add_argument("files", nargs="+", type=Path)
    predict.add_argument("--model", type=Path, default=None, help="model folder (default: PNEUMOSCAN_MODEL_DIR)")
    predict.set_defaults(handler=cmd_predict)

    register = commands.add_parser("register", help="import a model folder into the BentoML model store")
    register.add_argument("--model", type=Path, default=None, help="model folder (default: PNEUMOSCAN_MODEL_DIR)")
    register.set_defaults(handler=cmd_register)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except ModelError as exc:
        print(f"pneumoscan: model error: {exc.detail}", file=sys.stderr)
        return EXIT_MODEL
    except (DataError, PneumoscanError, ValueError) as exc:
        print(f"pneumoscan: {getattr(exc, 'detail', exc)}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
