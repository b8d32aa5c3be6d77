"""Recipes compared on a later period: models trained on the training folder alone, scored on a
site's labelled X-rays at their own saved threshold (which was chosen on the training data), so the
figures say whether a recipe's ranking, threshold and gate travel.

    python -m training.candidates --site ../shared/data/site_sample --out runs/candidates \\
        tuned=models/pneumonia-cnn travel=runs/cand/travel --chosen travel --attach runs/cand/travel

runs ``pneumoscan validate`` (Grad-CAM included) for each ``NAME=MODEL_DIR``, prints one table and
writes ``OUT/candidates.json``; ``--attach`` puts the table into a model's ``metadata.json`` and model
card, naming the ``--chosen`` row. A model fitted on the site's data does not belong in this table:
its figures there are in sample.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pneumoscan.model import load_metadata, save_metadata
from pneumoscan.schemas import ModelMetadata, SiteEstimate

CANDIDATES_FILE = "candidates.json"
NON_XRAY_KINDS = ("synthetic", "photo", "medical")
CHOSEN_BY = (
    "the site sample's AUC and the specificity at the saved threshold (the figures that fail at a new period), "
    "provided sensitivity stays at least .94 and the gate refuses every non-X-ray of the check set"
)


def _proportion(estimate: SiteEstimate) -> dict:
    return estimate.model_dump()


def measure(name: str, model_dir: Path, site: Path, out_dir: Path) -> dict:
    """One candidate's row: ``validate`` on the site sample plus the model's own gate and validation figures."""
    from training.validate import validate

    report = validate(model_dir, site, out_dir / name, command=f"python -m training.candidates {name}={model_dir}")
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


def _share(estimate: dict | None) -> str:
    if not estimate or estimate["value"] is None:
        return "n/a"
    low, high = estimate["ci"]
    return f"{estimate['value']:.3f} ({low:.3f}-{high:.3f}; {estimate['successes']}/{estimate['n']})"


def table(rows: list[dict], chosen: str | None = None) -> str:
    """The comparison as a Markdown table, the chosen row in bold."""
    lines = [
        "| recipe | threshold | AUC (95% CI) | sensitivity | specificity | Grad-CAM central share / peaks in border "
        "| gate: site refused, non-X-rays refused | validation AUC | minutes |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        name = f"**{row['name']}**" if row["name"] == chosen else row["name"]
        auc = f"{row['auc']:.3f} ({row['auc_ci'][0]:.3f}-{row['auc_ci'][1]:.3f})" if row["auc"] is not None else "n/a"
        share = f"{row['gradcam_central_share']:.2f}" if row["gradcam_central_share"] is not None else "n/a"
        refused, total = row["non_xrays_refused"]
        lines.append(
            f"| {name} | {row['threshold']:.3f} | {auc} | {_share(row['sensitivity'])} | {_share(row['specificity'])} "
            f"| {share} / {_share(row['gradcam_peak_in_border'])} | {row['site_refused']}, {refused}/{total} "
            f"| {row['validation_auc']:.4f} | {row['training_seconds'] / 60:.0f} |"
        )
    return "\n".join(lines)


def card_section(metadata: ModelMetadata) -> str:
    """The "Recipes on a later period" section: the comparison ``training.candidates`` measured."""
    candidates = metadata.candidates
    if not candidates:
        return ""
    return f"""## Recipes on a later period
Each recipe trained on the training folder alone, its temperature, threshold and gate chosen on
the training data alone, then scored on `{candidates["site"]}` (X-rays of a later period, data
fingerprint `{candidates["site_fingerprint"][:12]}`) at its own saved threshold, with Grad-CAM
(`python -m training.candidates`, see its docstring). Proportions: value (95% Wilson interval;
count/n); the gate column counts site X-rays refused and non-X-rays of the check set refused;
minutes: the fit, most of them with two trainings sharing the 2 cores.

{table(candidates["rows"], candidates.get("chosen"))}

Kept: **{candidates.get("chosen") or "none named"}**, chosen by {candidates["chosen_by"]}. This
sample chose the recipe, so its figures for the kept one are optimistic; the held-back half of
the test split measures it at acceptance.

"""


def attach(model_dir: Path, site: Path, rows: list[dict], chosen: str | None) -> ModelMetadata:
    """Put the comparison into ``model_dir``'s metadata and regenerate its model card."""
    from training.model_card import write_model_card
    from training.site_data import data_fingerprint, site_examples

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
    parser = argparse.ArgumentParser(prog="python -m training.candidates", description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", help="NAME=MODEL_DIR, each trained on the training folder alone")
    parser.add_argument("--site", required=True, type=Path, help="the site's labelled X-rays, DATA/{NORMAL,PNEUMONIA}/")
    parser.add_argument("--out", required=True, type=Path, help="folder for each validation report and the table")
    parser.add_argument("--chosen", default=None, help="the NAME kept (shown in bold)")
    parser.add_argument("--attach", type=Path, default=None, help="model folder to write the table into")
    args = parser.parse_args(argv)
    from pneumoscan.cli.common import configure_tensorflow_from_settings

    configure_tensorflow_from_settings()
    pairs = [item.split("=", 1) for item in args.models]
    if any(len(pair) != 2 for pair in pairs):
        parser.error("each model is NAME=MODEL_DIR")
    rows = [measure(name, Path(folder), args.site, args.out) for name, folder in pairs]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / CANDIDATES_FILE).write_text(json.dumps(rows, indent=2) + "\n")
    print(table(rows, args.chosen))
    if args.attach is not None:
        attach(args.attach, args.site, rows, args.chosen)
        print(f"Attached to {args.attach}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
