"""The ``pneumoscan`` command: parses arguments, calls the core or an adapter, prints.

Model and training commands live here, batch-job commands in ``pneumoscan.job_commands``; exit
codes are listed in ``pneumoscan.cli_common``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from pneumoscan.cli_common import (
    EXIT_INPUT_FAILED,
    EXIT_MODEL,
    EXIT_OK,
    EXIT_USAGE,
    configure_tensorflow_from_settings as _configure_tensorflow,
)
from pneumoscan.errors import DataError, ModelError, PneumoscanError
from pneumoscan.job_commands import add_job_commands
from pneumoscan.settings import get_settings


def cmd_train(args: argparse.Namespace) -> int:
    _configure_tensorflow()
    from training.train import train

    metadata = train(
        args.data, args.out, recipe_name=args.recipe, epochs=args.epochs, seed=args.seed,
        validation_fraction=args.validation_fraction,
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

    settings = get_settings()
    report = evaluate(
        args.model, args.data, out_dir=args.out, batch_size=settings.predict_batch_size,
        threshold=settings.threshold, ood_policy=settings.ood_policy,
    )
    if args.json:
        print(report.model_dump_json())
    else:
        c = report.confusion
        print(
            f"n={report.n}  AUC {report.auc:.4f}  accuracy {report.accuracy:.4f}  "
            f"sensitivity {report.sensitivity:.4f}  specificity {report.specificity:.4f}  "
            f"threshold {report.threshold:.4f}\nconfusion: tp={c.tp} fp={c.fp} tn={c.tn} fn={c.fn}"
        )
        if report.refused:
            print("refused: " + ", ".join(f"{code} {count}" for code, count in report.refused.items()))
        if args.out:
            print(f"Plots and evaluation.json written to {args.out}")
    return EXIT_OK


def cmd_predict(args: argparse.Namespace) -> int:
    _configure_tensorflow()
    from pneumoscan.model import Predictor
    from pneumoscan.predict import predict_files

    settings = get_settings()
    predictor = Predictor.from_dir(
        args.model or settings.model_dir, threshold=settings.threshold, ood_policy=settings.ood_policy
    )
    failed = 0
    for result in predict_files(
        predictor, args.files, batch_size=settings.predict_batch_size, max_pixels=settings.max_image_pixels
    ):
        failed += result.error is not None
        print(result.model_dump_json(exclude_none=True), flush=True)
    return EXIT_INPUT_FAILED if failed else EXIT_OK


def cmd_explain(args: argparse.Namespace) -> int:
    import json

    import numpy as np

    from pneumoscan.imaging import decode_grayscale, to_model_input
    from pneumoscan.predict import read_file
    from pneumoscan.schemas import ErrorInfo, FilePrediction

    settings = get_settings()
    def refuse(exc: PneumoscanError) -> int:
        error = FilePrediction(file=str(args.file), error=ErrorInfo(**exc.to_dict()))
        print(error.model_dump_json(exclude_none=True), flush=True)
        return EXIT_INPUT_FAILED

    # The input is checked before TensorFlow and the model load, so a bad file fails at once.
    try:
        image = decode_grayscale(read_file(args.file), max_pixels=settings.max_image_pixels)
        model_input = to_model_input(image)  # exactly what predict and the service feed the model
    except PneumoscanError as exc:
        return refuse(exc)
    _configure_tensorflow()
    from pneumoscan.explain import GradCam, feature_maps, overlay, save_feature_map_grids
    from pneumoscan.model import Predictor

    predictor = Predictor.from_dir(
        args.model or settings.model_dir, threshold=settings.threshold, ood_policy=settings.ood_policy
    )
    prediction = predictor.judge(predictor.score(model_input[np.newaxis]))[0]
    if isinstance(prediction, PneumoscanError):
        return refuse(prediction)
    _, heatmap = GradCam(predictor.model)(model_input)
    out = args.out / "gradcam.png" if args.feature_maps else args.out
    result = {"file": str(args.file), "label": prediction.label, "probability": prediction.probability,
              "threshold": prediction.threshold, "out_of_distribution": prediction.out_of_distribution,
              "out": str(out)}
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        overlay(image, heatmap).save(out, format="PNG")
        if args.feature_maps:
            written = save_feature_map_grids(feature_maps(predictor.model, model_input), args.out)
            result["feature_maps"] = [str(path) for path in written]
    except OSError as exc:
        print(f"pneumoscan: cannot write {args.out}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_USAGE
    print(json.dumps(result), flush=True)
    return EXIT_OK


def cmd_register(args: argparse.Namespace) -> int:
    # The BentoML store belongs to the service adapter; the core never imports bentoml.
    from service.model_store import register_model

    settings = get_settings()
    tag, created = register_model(args.model or settings.model_dir, name=settings.model_tag.split(":")[0])
    print(f"{'Registered' if created else 'Already registered:'} {tag}")
    return EXIT_OK


def cmd_bench(args: argparse.Namespace) -> int:
    try:
        from bench.run import main as run_bench
    except ModuleNotFoundError:
        print("pneumoscan: bench/ is not installed; run `make bench` from a checkout.", file=sys.stderr)
        return EXIT_USAGE

    report = run_bench(samples=args.samples, seconds=args.seconds)
    return EXIT_OK if all(target["met"] for target in report["targets"].values()) else EXIT_INPUT_FAILED


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

    explain = commands.add_parser("explain", help="Grad-CAM overlay (and feature maps) of one image as PNG")
    explain.add_argument("file", type=Path)
    explain.add_argument("--out", required=True, type=Path, help="PNG to write; a folder with --feature-maps")
    explain.add_argument(
        "--feature-maps", action="store_true",
        help="write OUT/gradcam.png and one grid of the first 16 channels per network stage",
    )
    explain.add_argument("--model", type=Path, default=None, help="model folder (default: PNEUMOSCAN_MODEL_DIR)")
    explain.set_defaults(handler=cmd_explain)

    register = commands.add_parser("register", help="import a model folder into the BentoML model store")
    register.add_argument("--model", type=Path, default=None, help="model folder (default: PNEUMOSCAN_MODEL_DIR)")
    register.set_defaults(handler=cmd_register)

    add_job_commands(commands)

    bench = commands.add_parser("bench", help="benchmark the service, the worker and baselines (make bench)")
    bench.add_argument("--samples", type=Path, default=Path("tests/fixtures/xrays"), help="X-rays to post")
    bench.add_argument("--seconds", type=float, default=20.0, help="Locust run time per load level")
    bench.set_defaults(handler=cmd_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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


if __name__ == "__main__":
    sys.exit(main())
