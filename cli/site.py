"""``pneumoscan validate``, ``calibrate``, ``adapt`` and ``split``: a site checks the model on its own
labelled X-rays and sets its own operating point. Exit codes as in ``cli.common``: 2 for a sample too
small for the rule, bad data or an unusable labels file."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from cli.common import EXIT_INPUT_FAILED, EXIT_OK, EXIT_USAGE
from cli.common import configure_tensorflow_from_settings as _configure_tensorflow
from pneumoscan.settings import get_settings

EXAMPLE_LABELS = "a CSV with the columns file,label (NORMAL or PNEUMONIA; files relative to --data)"


def _command_line() -> str:
    return "pneumoscan " + shlex.join(sys.argv[1:])


def _interval(estimate) -> str:
    if estimate is None or estimate.value is None:
        return "n/a"
    return f"{estimate.value:.3f} [{estimate.ci[0]:.3f}, {estimate.ci[1]:.3f}] ({estimate.successes}/{estimate.n})"


def cmd_validate(args: argparse.Namespace) -> int:
    _configure_tensorflow()
    from training.site.validate import validate

    settings = get_settings()
    report = validate(
        args.model,
        args.data,
        args.out,
        labels_csv=args.labels,
        command=_command_line(),
        threshold=settings.threshold,
        ood_policy=settings.ood_policy,
        batch_size=settings.predict_batch_size,
        gradcam=not args.no_gradcam,
        seed=args.seed,
    )
    if args.json:
        print(report.model_dump_json())
        return EXIT_OK
    at = report.at_threshold
    auc = (
        f"{report.auc:.3f} [{report.auc_ci[0]:.3f}, {report.auc_ci[1]:.3f}]"
        if report.auc is not None and report.auc_ci is not None
        else "n/a"
    )
    print(
        f"{report.model.version} on {', '.join(f'{k} {v}' for k, v in report.n.items())}"
        + (f" (refused: {', '.join(f'{k} {v}' for k, v in report.refused.items())})" if report.refused else "")
    )
    print(f"AUC {auc}")
    sensitivity, specificity = _interval(at.sensitivity), _interval(at.specificity)
    print(f"at threshold {at.threshold:.4f}: sensitivity {sensitivity}, specificity {specificity}")
    print(f"  PPV {_interval(at.ppv)}, NPV {_interval(at.npv)}, ECE {report.calibration.ece:.3f}")
    for point in report.operating_points:
        if not point.reachable:
            print(f"  {point.rule}: not reachable on this sample")
            continue
        print(
            f"  {point.rule} at {point.threshold:.4f}: out of sample sensitivity "
            f"{_interval(point.out_of_sample_sensitivity)}, specificity {_interval(point.out_of_sample_specificity)}"
        )
    if report.gradcam is not None and report.gradcam.central_share_mean is not None:
        print(
            f"Grad-CAM mass in the central region: {report.gradcam.central_share_mean:.1%}; "
            f"peak in the border: {_interval(report.gradcam.peak_in_border)}"
        )
    print(f"Wrote {Path(args.out) / 'report.html'} and report.json")
    return EXIT_OK


def cmd_calibrate(args: argparse.Namespace) -> int:
    _configure_tensorflow()
    from training.site.calibrate import calibrate_site

    result = calibrate_site(
        args.model,
        args.data,
        args.out,
        args.rule,
        labels_csv=args.labels,
        extend_gate=args.extend_gate,
        seed=args.seed,
        batch_size=get_settings().predict_batch_size,
    )
    metadata, site = result.metadata, result.metadata.site
    if site is None:
        raise ValueError(f"{metadata.version} was written without its site calibration.")
    if args.json:
        print(site.model_dump_json())
        return EXIT_OK
    print(f"Wrote {metadata.version} to {result.out_dir}")
    print(
        f"threshold {site.previous_threshold:.4f} -> {site.threshold:.4f} ({site.rule}); temperature "
        f"{site.temperature:.3f}{' (refitted)' if site.temperature_refitted else ' (kept)'}"
        + ("; gate extended" if site.gate_extended else "")
    )
    print(
        f"out of sample ({site.folds}-fold): sensitivity {_interval(site.sensitivity)}, "
        f"specificity {_interval(site.specificity)}"
    )
    if result.refused_left:
        print(f"{result.refused_left} image(s) refused by the gate and left out: {site.refused}")
    print(f"Serve it: pneumoscan register {shlex.quote(str(result.out_dir))}")
    return EXIT_OK


def cmd_adapt(args: argparse.Namespace) -> int:
    if args.max_epochs is not None and args.method != "fine-tune":
        print("error: --max-epochs counts fine-tuning epochs: add --method fine-tune or leave it out.", file=sys.stderr)
        return EXIT_USAGE
    _configure_tensorflow()
    from training.adapt.folds import no_gain, steps_of
    from training.adapt.pipeline import MAX_EPOCHS, adapt_site
    from training.adapt.refit_gate import AdaptationRefused

    try:
        result = adapt_site(
            args.model,
            args.data,
            args.out,
            labels_csv=args.labels,
            rule_text=args.rule,
            train_data=args.train_data,
            method=args.method,
            max_epochs=args.max_epochs or MAX_EPOCHS,
            seed=args.seed,
            batch_size=get_settings().predict_batch_size,
            command=_command_line(),
        )
    except AdaptationRefused as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INPUT_FAILED
    metadata = result.metadata
    adaptation, site = metadata.adaptation, metadata.site
    if adaptation is None or site is None:
        raise ValueError(f"{metadata.version} was written without its adaptation.")
    if args.json:
        print(adaptation.model_dump_json())
        return EXIT_OK
    print(f"Wrote {metadata.version} to {result.out_dir}")
    if site.refused:
        print(f"{sum(site.refused.values())} image(s) refused by the gate and left out: {site.refused}")
    how = (
        f"classifier refitted at L2-SP {adaptation.l2_sp:g}"
        if adaptation.method == "classifier"
        else f"{adaptation.epochs} epochs of fine-tuning"
    )
    print(
        f"{how} (chosen out of fold, {adaptation.folds} folds by {adaptation.grouping}); threshold "
        f"{site.previous_threshold:.4f} -> {site.threshold:.4f} ({site.rule}), temperature {site.temperature:.3f}"
    )
    before, after = adaptation.before, adaptation.after
    print(
        f"  before: AUC {before.auc:.3f} [{before.auc_ci[0]:.3f}, {before.auc_ci[1]:.3f}] at {before.threshold:.4f}: "
        f"sensitivity {_interval(before.sensitivity)}, specificity {_interval(before.specificity)}"
    )
    print(
        f"  after, out of fold: AUC {after.auc:.3f} [{after.auc_ci[0]:.3f}, {after.auc_ci[1]:.3f}]; "
        f"{site.rule} out of sample: sensitivity {_interval(after.rule_sensitivity)}, "
        f"specificity {_interval(after.rule_specificity)}"
    )
    if adaptation.validation_before is not None and adaptation.validation_after is not None:
        print(f"  own validation AUC {adaptation.validation_before.auc:.4f} -> {adaptation.validation_after.auc:.4f}")
    warning = no_gain(*steps_of(adaptation))
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"Report: {result.out_dir / 'report.html'}")
    print(f"Serve it: pneumoscan register {shlex.quote(str(result.out_dir))}")
    return EXIT_OK


def cmd_split(args: argparse.Namespace) -> int:
    from training.site.split import split_site

    counts = split_site(args.data, args.out, args.fraction, labels_csv=args.labels, seed=args.seed, copy=args.copy)
    for part, by_class in counts.items():
        print(f"{Path(args.out) / part}: " + ", ".join(f"{name} {count}" for name, count in by_class.items()))
    return EXIT_OK


def add_commands(commands: argparse._SubParsersAction) -> None:
    validate = commands.add_parser(
        "validate", help="validate a model on a site's labelled X-rays: report.json and report.html with 95%% CIs"
    )
    validate.add_argument("--model", required=True, type=Path, help="model folder")
    validate.add_argument(
        "--data", required=True, type=Path, help="DATA/{NORMAL,PNEUMONIA}/, or any folder with --labels"
    )
    validate.add_argument("--labels", type=Path, default=None, help=EXAMPLE_LABELS)
    validate.add_argument("--out", required=True, type=Path, help="folder for report.json, report.html and the plots")
    validate.add_argument("--json", action="store_true", help="print report.json's content instead of a summary")
    validate.add_argument("--no-gradcam", action="store_true", help="skip where Grad-CAM looks (faster)")
    validate.add_argument("--seed", type=int, default=0, help="seed of the bootstrap and the folds")
    validate.set_defaults(handler=cmd_validate)

    calibrate = commands.add_parser(
        "calibrate", help="write a new model version with the site's threshold, chosen on its labelled X-rays"
    )
    calibrate.add_argument("--model", required=True, type=Path, help="model folder to start from")
    calibrate.add_argument(
        "--data", required=True, type=Path, help="DATA/{NORMAL,PNEUMONIA}/, or any folder with --labels"
    )
    calibrate.add_argument("--labels", type=Path, default=None, help=EXAMPLE_LABELS)
    calibrate.add_argument(
        "--rule", required=True, help="youden, sensitivity:X (highest threshold reaching it) or specificity:X"
    )
    calibrate.add_argument("--out", required=True, type=Path, help="new model folder (must not exist or be empty)")
    calibrate.add_argument(
        "--extend-gate", action="store_true", help="admit the site's X-rays just beyond the gate's limit (up to 1.5x)"
    )
    calibrate.add_argument("--json", action="store_true", help="print the site block as JSON")
    calibrate.add_argument("--seed", type=int, default=0, help="seed of the folds and the bootstrap")
    calibrate.set_defaults(handler=cmd_calibrate)

    adapt = commands.add_parser(
        "adapt", help="write a new model version adapted to the site's labelled X-rays, with its own threshold"
    )
    adapt.add_argument("--model", required=True, type=Path, help="model folder to start from")
    adapt.add_argument("--data", required=True, type=Path, help="DATA/{NORMAL,PNEUMONIA}/, or any folder with --labels")
    adapt.add_argument(
        "--labels", type=Path, default=None, help=EXAMPLE_LABELS + "; an optional patient column groups the folds"
    )
    adapt.add_argument("--out", required=True, type=Path, help="new model folder (must not exist or be empty)")
    adapt.add_argument("--rule", default="youden", help="threshold rule, as calibrate's (default youden)")
    adapt.add_argument(
        "--train-data",
        type=Path,
        default=None,
        help="the model's training folder: its validation split scored before and after, and with fine-tune "
        "training X-rays mixed into each epoch",
    )
    adapt.add_argument(
        "--method",
        choices=("classifier", "fine-tune"),
        default="classifier",
        help="classifier (default): refit only the last layer, keeping the features and the input gate; "
        "fine-tune: the later convolutions as well, with the gate refitted",
    )
    adapt.add_argument("--max-epochs", type=int, default=None, help="fine-tune: most epochs tried out of fold (12)")
    adapt.add_argument("--json", action="store_true", help="print the adaptation block as JSON")
    adapt.add_argument("--seed", type=int, default=0, help="seed of the folds, the fine-tuning and the bootstrap")
    adapt.set_defaults(handler=cmd_adapt)

    split = commands.add_parser(
        "split", help="split a labelled folder into calibration/ and held_out/ by patient, stratified by class"
    )
    split.add_argument("--data", required=True, type=Path, help="DATA/{NORMAL,PNEUMONIA}/, or any folder with --labels")
    split.add_argument("--labels", type=Path, default=None, help=EXAMPLE_LABELS)
    split.add_argument("--fraction", type=float, default=0.25, help="share of each class's patients to calibrate on")
    split.add_argument("--out", required=True, type=Path, help="folder for calibration/ and held_out/ (new or empty)")
    split.add_argument("--seed", type=int, default=0, help="seed of the random choice of patients")
    split.add_argument("--copy", action="store_true", help="copy the files instead of linking them")
    split.set_defaults(handler=cmd_split)
