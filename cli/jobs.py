"""``pneumoscan submit``, ``status``, ``jobs``, ``results``, ``resume``, ``worker``, ``score``,
``rescore``: batch jobs.

Reading jobs (status, jobs, results) needs only ``pneumoscan.jobs``; the commands that put work
on the queue (submit, resume, worker) import the Huey adapter, ``service.worker.queue``, when they run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cli.common import EXIT_JOB_FAILED, EXIT_OK, EXIT_USAGE
from cli.common import configure_tensorflow_from_settings as _configure_tensorflow
from pneumoscan.settings import get_settings


def _counts(status) -> str:
    """Files done, refused and (when any) unreadable: a job's ``failed`` state is not among them."""
    unreadable = f", {status.unreadable} unreadable" if status.unreadable else ""
    return f"{status.done}/{status.total} done, {status.refused} refused{unreadable}"


def _print_status(status, as_json: bool) -> None:
    if as_json:
        print(status.model_dump_json())
        return
    line = f"{status.job_id}: {status.state}, {_counts(status)}"
    if status.images_per_second:
        line += f", {status.images_per_second:.1f} images/s"
    if status.eta_seconds:
        line += f", about {status.eta_seconds:.0f} s left"
    print(line)
    if status.output:
        print(f"output: {status.output}")
    if status.detail:
        print(status.detail)


def _query(args: argparse.Namespace):
    """The DICOMweb query the source options describe, or None for a folder; ValueError when the
    command names neither or both."""
    if (args.folder is None) == (args.dicomweb is None):
        raise ValueError("name a folder, or a PACS with --dicomweb URL (and --study, --study-date, ...), not both")
    if args.dicomweb is None:
        return None
    from pneumoscan.dicom.query import DicomwebQuery

    chosen = {"studies": args.study or [], "study_date": args.study_date, "body_part": args.body_part}
    return DicomwebQuery(url=args.dicomweb, **chosen, **({"modalities": args.modality} if args.modality else {}))


def _add_source(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "folder", type=Path, nargs="?", default=None, help="folder of JPEG, PNG or DICOM files (subfolders included)"
    )
    pacs = parser.add_argument_group("a PACS's studies instead of a folder (QIDO-RS, then WADO-RS)")
    pacs.add_argument("--dicomweb", default=None, metavar="URL", help="the PACS's DICOMweb base URL")
    pacs.add_argument("--study", action="append", metavar="UID", help="a Study Instance UID (repeat for several)")
    pacs.add_argument("--study-date", default=None, metavar="RANGE", help="YYYYMMDD or YYYYMMDD-YYYYMMDD")
    pacs.add_argument("--modality", action="append", help="a modality to match (default: CR and DX)")
    pacs.add_argument("--body-part", default=None, help="BodyPartExamined to match, e.g. CHEST")


def cmd_submit(args: argparse.Namespace) -> int:
    from service.worker.queue import submit, submit_query

    query = _query(args)
    if query is not None:
        status = submit_query(query, args.output)
    else:
        status = submit(args.folder, args.output, get_settings().allowed_input_roots)
    print(status.job_id)
    print(f"{status.state}: {status.done}/{status.total} done; output {status.output}", file=sys.stderr)
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    from pneumoscan.jobs.folder import find_job
    from pneumoscan.jobs.results import job_status

    job_dir = find_job(get_settings().jobs_root, args.job)
    status = job_status(job_dir)
    if args.follow:
        status = _follow(job_dir, status, args.interval)
    _print_status(status, args.json)
    return EXIT_JOB_FAILED if status.state == "failed" else EXIT_OK


def _follow(job_dir: Path, status, interval: float):
    """A progress bar on stderr until the job is done or failed; the workers do the scoring."""
    import time

    from tqdm import tqdm

    from pneumoscan.jobs.results import job_status

    with tqdm(total=status.total, initial=status.done, desc=status.job_id, unit="img") as bar:
        while status.state not in ("done", "failed"):
            time.sleep(interval)
            status = job_status(job_dir)
            bar.update(status.done - bar.n)
            bar.set_postfix(state=status.state, refused=status.refused, unreadable=status.unreadable, refresh=False)
    return status


def cmd_jobs(args: argparse.Namespace) -> int:
    from pneumoscan.jobs.results import list_jobs

    for status in list_jobs(get_settings().jobs_root):
        if args.json:
            print(status.model_dump_json())
            continue
        created = status.created.strftime("%Y-%m-%d %H:%M") if status.created else "?"
        print(
            f"{status.job_id}  {status.state:<7}  {_counts(status)}  "
            f"{created}  {status.input_folder or status.detail or ''}"
        )
    return EXIT_OK


def cmd_results(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from pneumoscan.errors import JobNotFinished
    from pneumoscan.jobs.export import export, write_ndjson
    from pneumoscan.jobs.folder import find_job
    from pneumoscan.jobs.results import finished_results, job_status

    if args.format == "ndjson" and args.out is None:
        print(
            "pneumoscan results: --format ndjson writes one file per resource type and a manifest.json; "
            "give the folder to write them into with --out DIR",
            file=sys.stderr,
        )
        return EXIT_USAGE
    job_dir = find_job(get_settings().jobs_root, args.job)
    try:
        finished_results(job_dir)
    except JobNotFinished as exc:
        print(f"pneumoscan: {exc.detail}", file=sys.stderr)
        return EXIT_JOB_FAILED
    # Building FHIR reports takes a few ms each: large jobs get a progress bar on stderr.
    with tqdm(total=job_status(job_dir).total, desc="Exporting", unit="row", disable=args.format == "csv") as bar:
        if args.format == "ndjson":
            request = f"pneumoscan results {job_dir.name} --format ndjson --out {args.out}"
            manifest = write_ndjson(job_dir, args.out, request=request, progress=bar.update)
            files = len(manifest["output"]) + len(manifest["error"])
            written = f"{files} NDJSON file(s) and {args.out / 'manifest.json'}"
        elif args.out is None:
            sys.stdout.writelines(export(job_dir, args.format, progress=bar.update))
            return EXIT_OK
        else:
            partial = args.out.with_name(args.out.name + ".partial")
            with partial.open("w", encoding="utf-8", newline="") as handle:
                handle.writelines(export(job_dir, args.format, progress=bar.update))
            partial.replace(args.out)
            written = str(args.out)
    print(f"Wrote {written}", file=sys.stderr)
    return EXIT_OK


def cmd_resume(args: argparse.Namespace) -> int:
    from pneumoscan.jobs.folder import find_job
    from pneumoscan.jobs.leases import reconcile
    from pneumoscan.jobs.results import job_status
    from service.worker.queue import enqueue

    settings = get_settings()
    job_dir = find_job(settings.jobs_root, args.job)
    queued = reconcile(job_dir, enqueue, settings.lease_seconds, force=True)
    print(f"Queued {queued} unfinished shard(s) of {job_dir.name}.", file=sys.stderr)
    _print_status(job_status(job_dir), as_json=False)
    return EXIT_OK


def cmd_worker(args: argparse.Namespace) -> int:
    from service.worker.queue import run_worker

    run_worker(args.concurrency, burst=args.burst)
    return EXIT_OK


def cmd_score(args: argparse.Namespace) -> int:
    from cli.progress import ThroughputBar
    from pneumoscan.dicom.query import job_input
    from pneumoscan.dicom.store import OUTBOX
    from pneumoscan.jobs.folder import RESULTS_FILE, JobSource, check_input_folder, create_job, load_job
    from pneumoscan.jobs.results import job_status
    from pneumoscan.jobs.shards import ShardOptions, score_shard

    _configure_tensorflow()
    from pneumoscan.model.predictor import Predictor
    from service.model_store import serving_model_dir

    settings = get_settings()
    query = _query(args)
    # The version the service and the queue worker serve, so the job could be resumed by a worker.
    model_dir, _ = serving_model_dir(settings.model_tag, settings.model_dir)
    predictor = Predictor.from_dir(model_dir, threshold=settings.threshold, ood_policy=settings.ood_policy)
    predictor.warm_up(settings.predict_batch_size)
    output = Path(args.output).resolve()
    output.mkdir(parents=True, exist_ok=True)
    if query is not None:
        folder, described, files = job_input(query, settings)
        source = JobSource(described, files)
        outbox = settings.dicom_root / OUTBOX
        job_dir = create_job(folder, output, predictor.model_version, settings.shard_size, outbox, source)
    else:
        folder = check_input_folder(args.folder, settings.allowed_input_roots)
        job_dir = create_job(folder, output, predictor.model_version, settings.shard_size)
    spec = load_job(job_dir)
    options = ShardOptions.from_settings(settings)
    with ThroughputBar(spec.total, "Scoring") as bar:
        for index in range(spec.shards):
            score_shard(job_dir, index, predictor, options, progress=bar.update)
        status = job_status(job_dir)
        bar.finish(status.images_per_second)
    _print_status(status, as_json=False)
    print(f"results: {job_dir / RESULTS_FILE}")
    return EXIT_OK


def cmd_rescore(args: argparse.Namespace) -> int:
    from cli.progress import ThroughputBar
    from pneumoscan.delivery.destinations import Delivery
    from pneumoscan.errors import JobNotFinished
    from pneumoscan.jobs.folder import find_job, load_job
    from pneumoscan.jobs.rescore import Sending, rescore

    _configure_tensorflow()
    from pneumoscan.model.predictor import Predictor
    from service.model_store import stored_model_dir

    settings = get_settings()
    job_dir = find_job(settings.jobs_root, args.job)
    model_dir = Path(args.model) if Path(args.model).is_dir() else stored_model_dir(args.model)
    if model_dir is None or not (model_dir / "metadata.json").is_file():
        print(
            f"pneumoscan rescore: {args.model!r} is neither a model in the BentoML store nor a model folder",
            file=sys.stderr,
        )
        return EXIT_USAGE
    predictor = Predictor.from_dir(model_dir, threshold=settings.threshold, ood_policy=settings.ood_policy)
    names = settings.review_destination_names
    delivery = Delivery.from_settings(settings).only(names)
    sending = Sending(delivery, "dicom" in names, settings.review_organization)
    try:
        with ThroughputBar(load_job(job_dir).total, "Rescoring") as bar:
            outcome = rescore(job_dir, predictor, sending, batch_size=settings.predict_batch_size, progress=bar.update)
    except (JobNotFinished, ValueError) as exc:
        print(f"pneumoscan rescore: {getattr(exc, 'detail', exc)}", file=sys.stderr)
        return EXIT_JOB_FAILED
    delivery.deliver()
    for correction in outcome.corrected:
        print(
            f"{correction.file}: {correction.earlier_label} -> {correction.prediction.label} "
            f"(P(pneumonia) {correction.prediction.probability:.3f}), correction {correction.sequence}"
        )
    print(f"{job_dir.name} rescored with {outcome.model_version}: {outcome.summary()}", file=sys.stderr)
    for route in delivery.routes:
        counts = route.outbox.counts()
        print(f"{route.outbox.name}: {counts['pending']} waiting, {counts['failed']} failed", file=sys.stderr)
    return EXIT_OK


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Register the batch-job subcommands on the ``pneumoscan`` parser."""
    submit = commands.add_parser(
        "submit", help="queue a folder of X-rays, or a PACS's studies, for batch scoring; prints the job id"
    )
    _add_source(submit)
    submit.add_argument("--output", type=Path, default=None, help="output root (default: PNEUMOSCAN_JOBS_DIR)")
    submit.set_defaults(handler=cmd_submit)

    status = commands.add_parser("status", help="progress of a batch job")
    status.add_argument("job", help="job id or job folder")
    status.add_argument("--json", action="store_true", help="print one JSON object")
    status.add_argument(
        "--follow",
        action="store_true",
        help="show a progress bar until the job is done or failed, then the status",
    )
    status.add_argument("--interval", type=float, default=1.0, help="seconds between checks with --follow")
    status.set_defaults(handler=cmd_status)

    jobs = commands.add_parser("jobs", help="every known batch job, newest first")
    jobs.add_argument("--json", action="store_true", help="one JSON object per line")
    jobs.set_defaults(handler=cmd_jobs)

    results = commands.add_parser("results", help="a finished job's results as CSV or FHIR")
    results.add_argument("job", help="job id or job folder")
    results.add_argument(
        "--format",
        default="csv",
        choices=["csv", "fhir", "ndjson"],
        help="csv (results.csv), fhir (one FHIR collection Bundle) or ndjson (FHIR Bulk Data files: one "
        "<type>.ndjson per resource type and manifest.json, into the folder --out)",
    )
    results.add_argument(
        "--out",
        type=Path,
        default=None,
        help="file to write (default: standard output); with --format ndjson, the folder to write (required)",
    )
    results.set_defaults(handler=cmd_results)

    resume = commands.add_parser("resume", help="re-queue the unfinished shards of a job")
    resume.add_argument("job", help="job id or job folder")
    resume.set_defaults(handler=cmd_resume)

    worker = commands.add_parser("worker", help="run a queue worker (Huey consumer)")
    worker.add_argument("--concurrency", type=int, default=1, help="worker processes")
    worker.add_argument("--burst", action="store_true", help="run queued tasks in this process, then exit")
    worker.set_defaults(handler=cmd_worker)

    score = commands.add_parser("score", help="score a folder, or a PACS's studies, in this process, without a queue")
    _add_source(score)
    score.add_argument(
        "--output", required=True, type=Path, help="output root: the job folder with results.csv is made in it"
    )
    score.set_defaults(handler=cmd_score)

    again = commands.add_parser(
        "rescore",
        help="score a finished job again with another model version and send corrections for the labels it changes",
    )
    again.add_argument("--job", required=True, help="job id or job folder (a DICOM node's study jobs too)")
    again.add_argument(
        "--model", required=True, metavar="TAG", help="a model tag in the BentoML store, or a model folder"
    )
    again.set_defaults(handler=cmd_rescore)
