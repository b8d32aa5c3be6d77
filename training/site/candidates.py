"""Recipes compared on a later period: models trained on the training folder alone, scored on a
site's labelled X-rays at their own saved threshold (which was chosen on the training data), so the
figures say whether a recipe's ranking, threshold and gate travel.

    python -m training.site.candidates --site ../shared/data/site_sample --out runs/candidates \\
        tuned=models/pneumonia-cnn travel=runs/cand/travel --chosen travel --attach runs/cand/travel

runs ``pneumoscan validate`` (Grad-CAM included) for each ``NAME=MODEL_DIR``, prints one table and
writes ``OUT/candidates.json`` (after the rows of ``--earlier MODEL_DIR``'s table, measured before);
``--attach`` puts the table into a model's ``metadata.json`` and model
card, naming the ``--chosen`` row. A model fitted on the site's data does not belong in this table:
its figures there are in sample.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pneumoscan.model.predictor import load_metadata, save_metadata
from pneumoscan.schemas import ModelMetadata, SiteEstimate
from training.site.comparison import table

CANDIDATES_FILE = "candidates.json"
NON_XRAY_KINDS = ("synthetic", "photo", "medical")
CHOSEN_BY = (
    "where Grad-CAM looks (its central share and how often its peak lies in the border: what calibration cannot "
    "move), then the site sample's AUC and accuracy at the saved threshold, provided sensitivity stays at least .94 "
    "and the gate refuses every non-X-ray of the check set"
)


def _proportion(estimate: SiteEstimate) -> dict:
    return estimate.model_dump()


def measure(name: str, model_dir: Path, site: Path, out_dir: Path) -> dict:
    """One candidate's row: ``validate`` on the site sample plus the model's own gate and validation figures."""
    from training.site.validate import validate

    report = validate(model_dir, site, out_dir / name, command=f"python -m training.site.candidates {name}={model_dir}")
    metadata = load_metadata(model_dir)
    refusals = metadata.gate.refusals if metadata.gate else {}
    non_xrays = [refusals[kind] for kind in NON_XRAY_KINDS if kind in refusals]
    gradcam = report.gradcam
    return {
        "name": name,
        "version": metadata.version,
        "recipe": metadata.recipe,
        "threshold": metadata.threshold,
        "n": report.n,
        "site_refused": sum(report.refused.values()),
        "auc": report.auc,
        "auc_ci": report.auc_ci,
        "sensitivity": _proportion(report.at_threshold.sensitivity),
        "specificity": _proportion(report.at_threshold.specificity),
        "gradcam_central_share": gradcam.central_share_mean if gradcam else None,
        "gradcam_peak_in_border": _proportion(gradcam.peak_in_border) if gradcam else None,
        "non_xrays_refused": [sum(r.refused for r in non_xrays), sum(r.n for r in non_xrays)],
        "validation_auc": metadata.validation.auc,
        "training_seconds": metadata.training_seconds,
    }


def attach(model_dir: Path, site: Path, rows: list[dict], chosen: str | None) -> ModelMetadata:
    """Put the comparison into ``model_dir``'s metadata and regenerate its model card."""
    from training.model_card import write_model_card
    from training.site.data import data_fingerprint, site_examples

    metadata = load_metadata(model_dir)
    examples = site_examples(site)
    updated = metadata.model_copy(
        update={
            "candidates": {
                "site": site.name,
                "site_fingerprint": data_fingerprint(examples, site),
                "chosen": chosen,
                "chosen_by": CHOSEN_BY,
                "rows": rows,
            }
        }
    )
    save_metadata(model_dir, updated)
    write_model_card(model_dir, updated)
    return updated


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.site.candidates", description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", help="NAME=MODEL_DIR, each trained on the training folder alone")
    parser.add_argument("--site", required=True, type=Path, help="the site's labelled X-rays, DATA/{NORMAL,PNEUMONIA}/")
    parser.add_argument("--out", required=True, type=Path, help="folder for each validation report and the table")
    parser.add_argument("--chosen", default=None, help="the NAME kept (shown in bold)")
    parser.add_argument("--attach", type=Path, default=None, help="model folder to write the table into")
    parser.add_argument(
        "--earlier",
        type=Path,
        default=None,
        help="a model folder whose table's rows (measured before, on the same site) come first",
    )
    args = parser.parse_args(argv)
    from pneumoscan.model.architectures import configure_tensorflow
    from pneumoscan.settings import get_settings

    settings = get_settings()
    configure_tensorflow(settings.tf_intra_op_threads, settings.tf_inter_op_threads)
    pairs = [item.split("=", 1) for item in args.models]
    if any(len(pair) != 2 for pair in pairs):
        parser.error("each model is NAME=MODEL_DIR")
    rows = [measure(name, Path(folder), args.site, args.out) for name, folder in pairs]
    if args.earlier is not None:
        table_before = load_metadata(args.earlier).candidates or {}
        rows = [*table_before.get("rows", []), *rows]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / CANDIDATES_FILE).write_text(json.dumps(rows, indent=2) + "\n")
    print(table(rows, args.chosen))
    if args.attach is not None:
        attach(args.attach, args.site, rows, args.chosen)
        print(f"Attached to {args.attach}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
