"""The ``pneumoscan`` command: parses arguments, calls the core or an adapter, prints.

Exit codes: 0 success, 1 some input failed (``predict``), 2 usage, data or folder error,
3 model error, 4 the job failed (``status``) or has no results yet (``results``).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from pneumoscan.errors import DataError, ModelError, PneumoscanError
from pneumoscan.settings import get_settings

EXIT_OK, EXIT_INPUT_FAILED, EXIT_USAGE, EXIT_MODEL, EXIT_JOB_FAILED = 0, 1, 2, 3, 4


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


def cmd_explain(args: argparse.Namespace) -> int:
    import json

    from pneumoscan.imaging import decode_grayscale, to_model_input
    from pneumoscan.predict import read_file
    from pneumoscan.schemas import ErrorInfo, FilePrediction

    settings = get_settings()
    # The input is checked before TensorFlow and the model load, so a bad file fails at once.
    try:
        image = decode_grayscale(read_file(args.file), max_pixels=settings.max_image_pixels)
    except PneumoscanError as exc:
        error = FilePrediction(file=str(args.file), error=ErrorInfo(**exc.to_dict()))
        print(error.model_dump_json(exclude_none=True), flush=True)
        return EXIT_INPUT_FAILED
    _configure_tensorflow()
    from pneumoscan.explain import GradCam, feature_maps, overlay, save_feature_map_grids
    from pneumoscan.model import Predictor, make_prediction

    predictor = Predictor.from_dir(args.model or settings.model_dir, threshold=settings.threshold)
    model_input = to_model_input(image)  # exactly what predict and the service feed the model
    probability, heatmap = GradCam(predictor.model)(model_input)
    prediction = make_prediction(probability, predictor.threshold, predictor.model_version)
    out = args.out / "gradcam.png" if args.feature_maps else args.out
    result = {"file": str(args.file), "label": prediction.label, "probability": prediction.probability,
              "threshold": prediction.threshold, "out": str(out)}
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


def _print_status(status, as_json: bool) -> None:
    if as_json:
        print(status.model_dump_json())
        return
    line = f"{status.job_id}: {status.state}, {status.done}/{status.total} done, {status.failed} failed"
    if status.images_per_second:
        line += f", {status.images_per_second:.1f} images/s"
    if status.eta_seconds:
        line += f", about {status.eta_seconds:.0f} s left"
    print(line)
    if status.output:
        print(f"output: {status.output}")
    if status.detail:
        print(status.detail)


def cmd_submit(args: argparse.Namespace) -> int:
    from service.worker import submit

    status = submit(args.folder, args.output, get_settings().allowed_input_roots)
    print(status.job_id)
    print(f"{status.state}: {status.done}/{status.total} done; output {status.output}", file=sys.stderr)
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    from service.jobs import job_status
    from service.worker import find_job

    job_dir = find_job(args.job)
    status = job_status(job_dir)
    if args.follow:
        status = _follow(job_dir, status, args.interval)
    _print_status(status, args.json)
    return EXIT_JOB_FAILED if status.state == "failed" else EXIT_OK


def _follow(job_dir: Path, status, interval: float):
    """A progress bar on stderr until the job is done or failed; the workers do the scoring."""
    import time

    from tqdm import tqdm

    from service.jobs import job_status

    with tqdm(total=status.total, initial=status.done, desc=status.job_id, unit="img") as bar:
        while status.state not in ("done", "failed"):
            time.sleep(interval)
            status = job_status(job_dir)
            bar.update(status.done - bar.n)
            bar.set_postfix(state=status.state, failed=status.failed, refresh=False)
    return status


def cmd_jobs(args: argparse.Namespace) -> int:
    from service.worker import list_jobs

    for status in list_jobs():
        if args.json:
            print(status.model_dump_json())
            continue
        created = status.created.strftime("%Y-%m-%d %H:%M") if status.created else "?"
        print(f"{status.job_id}  {status.state:<7}  {status.done}/{status.total} done, {status.failed} failed  "
              f"{created}  {status.input_folder or status.detail or ''}")
    return EXIT_OK


def cmd_results(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from service.job_results import export, finished_results
    from service.jobs import JobNotFinished, job_status
    from service.worker import find_job

    job_dir = find_job(args.job)
    try:
        finished_results(job_dir)
    except JobNotFinished as exc:
        print(f"pneumoscan: {exc.detail}", file=sys.stderr)
        return EXIT_JOB_FAILED
    # Building FHIR reports takes a few ms each: large jobs get a progress bar on stderr.
    with tqdm(total=job_status(job_dir).total, desc="Exporting", unit="report",
              disable=args.format == "csv") as bar:
        if args.out is None:
            sys.stdout.writelines(export(job_dir, args.format, progress=bar.update))
            return EXIT_OK
        partial = args.out.with_name(args.out.name + ".partial")
        with partial.open("w", encoding="utf-8", newline="") as handle:
            handle.writelines(export(job_dir, args.format, progress=bar.update))
        partial.replace(args.out)
    print(f"Wrote {args.out}", file=sys.stderr)
    return EXIT_OK


def cmd_resume(args: argparse.Namespace) -> int:
    from service import jobs
    from service.worker import enqueue, find_job

    job_dir = find_job(args.job)
    queued = jobs.reconcile(job_dir, enqueue, get_settings().lease_seconds, force=True)
    print(f"Queued {queued} unfinished shard(s) of {job_dir.name}.", file=sys.stderr)
    _print_status(jobs.job_status(job_dir), as_json=False)
    return EXIT_OK


def cmd_worker(args: argparse.Namespace) -> int:
    from service.worker import run_worker

    run_worker(args.concurrency, burst=args.burst)
    return EXIT_OK


def cmd_score(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from service import jobs

    _configure_tensorflow()
    from pneumoscan.model import Predictor

    settings = get_settings()
    folder = jobs.check_input_folder(args.folder, settings.allowed_input_roots)
    predictor = Predictor.from_dir(settings.model_dir, threshold=settings.threshold)
    output = Path(args.output).resolve()
    output.mkdir(parents=True, exist_ok=True)
    job_dir = jobs.create_job(folder, output, predictor.model_version, settings.shard_size)
    spec = jobs.load_job(job_dir)
    with tqdm(total=spec.total, desc="Scoring", unit="img") as bar:
        for index in range(spec.shards):
            jobs.score_shard(
                job_dir, index, predictor, batch_size=settings.predict_batch_size,
                max_pixels=settings.max_image_pixels, decode_threads=settings.decode_threads,
                lease_seconds=settings.lease_seconds, max_attempts=settings.max_shard_attempts,
                progress=bar.update,
            )
    status = jobs.job_status(job_dir)
    _print_status(status, as_json=False)
    print(f"results: {job_dir / jobs.RESULTS_FILE}")
    return EXIT_OK


def cmd_bench(args: argparse.Namespace) -> int:
    from bench.run import main as run_bench

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

    submit = commands.add_parser("submit", help="queue a folder of X-rays for batch scoring; prints the job id")
    submit.add_argument("folder", type=Path)
    submit.add_argument("--output", type=Path, default=None, help="output root (default: PNEUMOSCAN_JOBS_DIR)")
    submit.set_defaults(handler=cmd_submit)

    status = commands.add_parser("status", help="progress of a batch job")
    status.add_argument("job", help="job id or job folder")
    status.add_argument("--json", action="store_true", help="print one JSON object")
    status.add_argument(
        "--follow", action="store_true", help="show a progress bar until the job is done or failed, then the status",
    )
    status.add_argument("--interval", type=float, default=1.0, help="seconds between checks with --follow")
    status.set_defaults(handler=cmd_status)

    jobs = commands.add_parser("jobs", help="every known batch job, newest first")
    jobs.add_argument("--json", action="store_true", help="one JSON object per line")
    jobs.set_defaults(handler=cmd_jobs)

    results = commands.add_parser("results", help="a finished job's results as CSV or FHIR")
    results.add_argument("job", help="job id or job folder")
    results.add_argument(
        "--format", default="csv", choices=["csv", "fhir", "ndjson"],
        help="csv (results.csv), fhir (a FHIR Bundle of DiagnosticReports) or ndjson (FHIR NDJSON)",
    )
    results.add_argument("--out", type=Path, default=None, help="file to write (default: standard output)")
    results.set_defaults(handler=cmd_results)

    resume = commands.add_parser("resume", help="re-queue the unfinished shards of a job")
    resume.add_argument("job", help="job id or job folder")
    resume.set_defaults(handler=cmd_resume)

    worker = commands.add_parser("worker", help="run a queue worker (Huey consumer)")
    worker.add_argument("--concurrency", type=int, default=1, help="worker processes")
    worker.add_argument("--burst", action="store_true", help="run queued tasks in this process, then exit")
    worker.set_defaults(handler=cmd_worker)

    score = commands.add_parser("score", help="score a folder in this process, without a queue")
    score.add_argument("folder", type=Path)
    score.add_argument("--output", required=True, type=Path)
    score.set_defaults(handler=cmd_score)

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
