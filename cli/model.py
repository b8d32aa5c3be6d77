"""``pneumoscan train``, ``evaluate`` and ``register``: a model's life before it serves."""

from __future__ import annotations

import argparse
from pathlib import Path

from cli.common import EXIT_OK
from cli.common import configure_tensorflow_from_settings as _configure_tensorflow
from pneumoscan.settings import get_settings
from training.recipes import RECIPES as RECIPE_NAMES


def cmd_train(args: argparse.Namespace) -> int:
    _configure_tensorflow()
    from training.train import train

    metadata = train(
        args.data,
        args.out,
        recipe_name=args.recipe,
        epochs=args.epochs,
        seed=args.seed,
        validation_fraction=args.validation_fraction,
        split_seed=args.split_seed,
        members=args.members,
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
        args.model,
        args.data,
        out_dir=args.out,
        batch_size=settings.predict_batch_size,
        threshold=settings.threshold,
        ood_policy=settings.ood_policy,
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


def cmd_register(args: argparse.Namespace) -> int:
    # The BentoML store belongs to the service adapter; the core never imports bentoml.
    from service.model_store import register_model

    settings = get_settings()
    tag, created = register_model(
        args.model_dir or args.model or settings.model_dir, name=settings.model_tag.split(":")[0]
    )
    print(f"{'Registered' if created else 'Already registered:'} {tag}")
    return EXIT_OK


def add_commands(commands: argparse._SubParsersAction) -> None:
    train = commands.add_parser("train", help="train a model on DIR/{NORMAL,PNEUMONIA}/")
    train.add_argument("--data", required=True, type=Path, help="labelled training folder")
    train.add_argument("--out", required=True, type=Path, help="output folder for the model")
    train.add_argument(
        "--recipe",
        default="framed",
        choices=sorted(RECIPE_NAMES),
        help="a recipe of training/recipes.py: seed (the course CNN), framed (the default), "
        "framed-swap-distilled (the bundled model's, make train), tuned, ...",
    )
    train.add_argument("--epochs", type=int, default=None, help="override the recipe's epoch count")
    train.add_argument("--seed", type=int, default=42, help="random seed: the same seed trains the same model")
    train.add_argument("--validation-fraction", type=float, default=0.15, help="share of patients held out")
    train.add_argument(
        "--split-seed",
        type=int,
        default=None,
        help="seed of the validation split (default: --seed), shared by an ensemble",
    )
    train.add_argument(
        "--members",
        nargs="+",
        type=Path,
        default=None,
        metavar="DIR",
        help="for an ensemble recipe: its members, already trained (one folder per member seed, in order), "
        "folded instead of trained",
    )
    train.set_defaults(handler=cmd_train)

    evaluate = commands.add_parser("evaluate", help="metrics of a model on a labelled folder")
    evaluate.add_argument("--model", required=True, type=Path, help="model folder")
    evaluate.add_argument("--data", required=True, type=Path, help="labelled folder, DATA/{NORMAL,PNEUMONIA}/")
    evaluate.add_argument("--json", action="store_true", help="print one JSON object")
    evaluate.add_argument("--out", type=Path, default=None, help="write ROC and confusion-matrix plots here")
    evaluate.set_defaults(handler=cmd_evaluate)

    register = commands.add_parser("register", help="import a model folder into the BentoML model store")
    register.add_argument(
        "model_dir", nargs="?", type=Path, default=None, help="model folder (default: PNEUMOSCAN_MODEL_DIR)"
    )
    register.add_argument("--model", type=Path, default=None, help=argparse.SUPPRESS)
    register.set_defaults(handler=cmd_register)
