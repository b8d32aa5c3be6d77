"""``pneumoscan predict`` and ``explain``: score files here, one JSON line each; ``bench``: the
service's scoring under load (``make bench``, from a checkout: the wheel does not install bench/)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from cli.common import EXIT_INPUT_FAILED, EXIT_OK, EXIT_USAGE
from cli.common import configure_tensorflow_from_settings as _configure_tensorflow
from pneumoscan.errors import PneumoscanError
from pneumoscan.settings import get_settings

log = logging.getLogger("pneumoscan.cli")


def cmd_predict(args: argparse.Namespace) -> int:
    _configure_tensorflow()
    from pneumoscan.model.predictor import Predictor
    from pneumoscan.model.scoring import predict_files

    settings = get_settings()
    model_dir = args.model or settings.model_dir
    predictor = Predictor.from_dir(model_dir, threshold=settings.threshold, ood_policy=settings.ood_policy)
    log.info("Scoring %d file(s) with model %s from %s", len(args.files), predictor.model_version, model_dir)
    failed = 0
    for result in predict_files(
        predictor, args.files, batch_size=settings.predict_batch_size, max_pixels=settings.max_image_pixels
    ):
        failed += result.error is not None
        print(result.model_dump_json(exclude_none=True), flush=True)
    return EXIT_INPUT_FAILED if failed else EXIT_OK


def cmd_explain(args: argparse.Namespace) -> int:
    import hashlib
    import json

    import numpy as np

    from pneumoscan.imaging.preprocess import decode, plane_to_input, resize_plane
    from pneumoscan.model.scoring import read_file
    from pneumoscan.result import Result

    settings = get_settings()

    def refuse(exc: PneumoscanError) -> int:
        print(Result(error=exc, file=str(args.file)).file_line().model_dump_json(exclude_none=True), flush=True)
        return EXIT_INPUT_FAILED

    # The input is checked before TensorFlow and the model load, so a bad file fails at once.
    try:
        data = read_file(args.file)
        decoded = decode(data, max_pixels=settings.max_image_pixels)
        model_input = plane_to_input(resize_plane(decoded.image))  # exactly what predict and the service feed the model
    except PneumoscanError as exc:
        return refuse(exc)
    _configure_tensorflow()
    from pneumoscan.model.gradcam import feature_maps, save_feature_map_grids
    from pneumoscan.model.legend import explained
    from pneumoscan.model.predictor import Predictor

    model_dir = args.model or settings.model_dir
    predictor = Predictor.from_dir(model_dir, threshold=settings.threshold, ood_policy=settings.ood_policy)
    log.info("Explaining %s with model %s from %s", args.file, predictor.model_version, model_dir)
    prediction = predictor.judge(predictor.score(model_input[np.newaxis]))[0]
    if isinstance(prediction, PneumoscanError):
        return refuse(prediction)
    result = Result(
        prediction=prediction, file=str(args.file), sha256=hashlib.sha256(data).hexdigest(), dicom=decoded.dicom
    )
    out = args.out / "gradcam.png" if args.feature_maps else args.out
    # The line ``predict`` prints for this file, and where its picture went.
    line = {**result.file_line().model_dump(mode="json", exclude_none=True), "out": str(out)}
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        explained(decoded.image, predictor.heatmap(model_input), result).save(out, format="PNG")
        if args.feature_maps:
            written = save_feature_map_grids(feature_maps(predictor.model, model_input), args.out)
            line["feature_maps"] = [str(path) for path in written]
    except OSError as exc:
        print(f"pneumoscan: cannot write {args.out}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_USAGE
    print(json.dumps(line), flush=True)
    return EXIT_OK


def cmd_bench(args: argparse.Namespace) -> int:
    try:
        from bench.run import main as run_bench
    except ModuleNotFoundError:
        print("pneumoscan: bench/ is not installed; run `make bench` from a checkout.", file=sys.stderr)
        return EXIT_USAGE

    report = run_bench(samples=args.samples, seconds=args.seconds)
    return EXIT_OK if all(target["met"] for target in report["targets"].values()) else EXIT_INPUT_FAILED


def add_commands(commands: argparse._SubParsersAction) -> None:
    predict = commands.add_parser("predict", help="score image files, one JSON line each")
    predict.add_argument("files", nargs="+", type=Path, help="JPEG, PNG or DICOM files")
    predict.add_argument("--model", type=Path, default=None, help="model folder (default: PNEUMOSCAN_MODEL_DIR)")
    predict.set_defaults(handler=cmd_predict)

    explain = commands.add_parser(
        "explain", help="Grad-CAM overlay with its legend (and feature maps) of one image as PNG"
    )
    explain.add_argument("file", type=Path, help="a JPEG, PNG or DICOM file")
    explain.add_argument("--out", required=True, type=Path, help="PNG to write; a folder with --feature-maps")
    explain.add_argument(
        "--feature-maps",
        action="store_true",
        help="write OUT/gradcam.png and one grid of the first 16 channels per network stage",
    )
    explain.add_argument("--model", type=Path, default=None, help="model folder (default: PNEUMOSCAN_MODEL_DIR)")
    explain.set_defaults(handler=cmd_explain)

    bench = commands.add_parser("bench", help="benchmark the service, the worker and baselines (make bench)")
    bench.add_argument("--samples", type=Path, default=Path("tests/fixtures/xrays"), help="X-rays to post")
    bench.add_argument("--seconds", type=float, default=20.0, help="Locust run time per load level")
    bench.set_defaults(handler=cmd_bench)
