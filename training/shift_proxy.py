"""The shift proxy: how a recipe holds up on an acquisition series it never saw.

The held-back test data come from a later period; the training folder cannot show that, but it
holds two acquisition series of normal X-rays (``NORMAL2-IM-*`` and ``IM-*``). The proxy trains
the recipe with every ``NORMAL2-`` file left out of training *and* validation (a folder of links
to the rest), lets ``finalize`` choose temperature, threshold and gate as usual, and then scores:

- the held-out series at the saved threshold (specificity, gate refusals), against the
  validation ``IM-`` normals; the validation pneumonia (sensitivity); the AUC of each normal
  series against the validation pneumonia;
- other threshold rules chosen on the same stressed validation copies, on the same images;
- the full-size originals of ``fullres/`` at the saved threshold;
- where Grad-CAM looks: the share of the heatmap inside the central region (the image without
  its outer 15%) and how often its peak lies in that border.

    python -m training.shift_proxy --data ../shared/data/chest_xray_224/train \\
        --fullres ../shared/data/fullres --out runs/shift-proxy --recipe tuned-shortcuts
    python -m training.shift_proxy --data ../shared/data/chest_xray_224/train \\
        --fullres ../shared/data/fullres --out runs/shift-proxy --recipe tuned \\
        --compare tuned-shortcuts=runs/shift-proxy/tuned-shortcuts --attach runs/tuned

trains each recipe without the series (``--measure-only`` reuses a trained one), writes
``OUT/RECIPE/shift_proxy.json``, and with ``--attach`` puts the figures into a model trained on
everything (``make train``), into its ``metadata.json`` and model card.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score
from tqdm import tqdm

from pneumoscan.imaging.preprocess import load_plane, plane_to_input
from pneumoscan.intervals import wilson_interval
from pneumoscan.model.predictor import Predictor, load_metadata, save_metadata
from training.data import find_examples, load_planes, split_by_patient

HELD_OUT_PREFIX = "NORMAL2-"
PROXY_FILE = "shift_proxy.json"
THRESHOLD_TARGETS = (0.93, 0.95, 0.97)  # sensitivity targets judged beside Youden's J
GRAD_CAM_IMAGES = 150  # per set; Grad-CAM runs one image at a time


def held_out(name: str) -> bool:
    return name.upper().startswith(HELD_OUT_PREFIX)


def proxy_view(data_dir: str | Path, view_dir: str | Path) -> Path:
    """A ``NORMAL/``, ``PNEUMONIA/`` folder of links to every image of ``data_dir`` outside the
    held-out series; file names are kept, so patients and the split are the same as in training."""
    view = Path(view_dir)
    for example in find_examples(data_dir):
        if held_out(example.path.name):
            continue
        link = view / example.path.parent.name / example.path.name
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.exists():
            os.symlink(example.path.resolve(), link)
    return view


def wilson(successes: int, n: int) -> dict:
    """A proportion with its 95% Wilson interval (``training.stats``) and counts."""
    interval = wilson_interval(int(successes), int(n))
    return {
        "value": successes / n if n else None,
        "ci": list(interval) if interval else None,
        "successes": int(successes) if n else 0,
        "n": int(n),
    }


def _auc(normal: np.ndarray, pneumonia: np.ndarray) -> float | None:
    if len(normal) == 0 or len(pneumonia) == 0:
        return None
    labels = np.r_[np.zeros(len(normal)), np.ones(len(pneumonia))]
    return float(roc_auc_score(labels, np.r_[normal, pneumonia]))


def grad_cam_location(predictor: Predictor, inputs: np.ndarray, limit: int, seed: int) -> dict:
    """Mean central share of the heatmap mass and the share of peaks in the border."""
    from pneumoscan.model.gradcam import heatmap_location

    order = np.random.default_rng(seed).permutation(len(inputs))[:limit]
    shares, border = [], []
    for index in tqdm(order, desc="Grad-CAM", unit="img", leave=False):
        share, in_border = heatmap_location(predictor.heatmap(inputs[index]))
        if not np.isnan(share):
            shares.append(share)
            border.append(in_border)
    return {
        "n": len(shares),
        "central_share": float(np.mean(shares)) if shares else None,
        "peak_in_border": wilson(int(np.sum(border)), len(border)),
    }


def _fullres(predictor: Predictor, fullres_dir: Path, threshold: float, limit: float) -> dict:
    examples = find_examples(fullres_dir)
    inputs = plane_to_input(np.stack([load_plane(e.path.read_bytes()) for e in examples]))
    scores = predictor.score(inputs)
    labels = np.array([e.label for e in examples])
    flagged = scores[:, 0] >= threshold
    refused = scores[:, 1] > limit
    series = np.array([held_out(e.path.name) for e in examples])
    return {
        "sensitivity": wilson(int(np.sum(flagged & (labels == 1))), int(np.sum(labels == 1))),
        "specificity": wilson(int(np.sum(~flagged & (labels == 0))), int(np.sum(labels == 0))),
        "specificity_held_out_series": wilson(
            int(np.sum(~flagged & (labels == 0) & series)), int(np.sum((labels == 0) & series))
        ),
        "refused": int(np.sum(refused)),
        "auc": _auc(scores[labels == 0, 0], scores[labels == 1, 0]),
        "grad_cam": grad_cam_location(predictor, inputs, len(inputs), seed=0),
    }


def measure(
    model_dir: str | Path,
    data_dir: str | Path,
    fullres_dir: str | Path | None = None,
    grad_cam_images: int = GRAD_CAM_IMAGES,
    threshold_rule: str | None = None,
) -> dict:
    """The proxy figures of a model trained on ``proxy_view(data_dir)`` with the default split;
    at its saved threshold, or at ``threshold_rule`` (a key of ``threshold_rules``) if given."""
    from training.augment import stressed_inputs
    from training.calibration import sensitivity_threshold, youden_threshold
    from training.data import DEFAULT_VALIDATION_FRACTION
    from training.train import STRESS_SEED, STRESSED_COPIES

    metadata = load_metadata(model_dir)
    predictor = Predictor.from_dir(model_dir)
    threshold, limit = metadata.threshold, predictor.gate.threshold if predictor.gate else np.inf
    examples = find_examples(data_dir)
    kept = [e for e in examples if not held_out(e.path.name)]
    _, validation = split_by_patient(kept, DEFAULT_VALIDATION_FRACTION, metadata.seed)
    series = [e for e in examples if held_out(e.path.name)]

    series_planes, _ = load_planes(series, "Loading the held-out series")
    validation_planes, validation_labels = load_planes(validation, "Loading validation images")
    series_inputs, validation_inputs = plane_to_input(series_planes), plane_to_input(validation_planes)
    series_scores, validation_scores = predictor.score(series_inputs), predictor.score(validation_inputs)
    stressed = np.concatenate([stressed_inputs(validation_planes, STRESS_SEED + c) for c in range(STRESSED_COPIES)])
    stressed_scores = predictor.predict_proba(stressed)
    stressed_labels = np.tile(validation_labels, STRESSED_COPIES)

    normal2 = series_scores[:, 0]
    im_normal = validation_scores[validation_labels == 0, 0]
    pneumonia = validation_scores[validation_labels == 1, 0]

    def at(cut: float) -> dict:
        return {
            "threshold": float(cut),
            "specificity_held_out_series": wilson(int(np.sum(normal2 < cut)), len(normal2)),
            "specificity_validation_series": wilson(int(np.sum(im_normal < cut)), len(im_normal)),
            "sensitivity_validation": wilson(int(np.sum(pneumonia >= cut)), len(pneumonia)),
        }

    rules = {"youden": youden_threshold(stressed_labels, stressed_scores)}
    rules.update(
        {
            f"sensitivity:{target:.2f}": sensitivity_threshold(stressed_labels, stressed_scores, target)
            for target in THRESHOLD_TARGETS
        }
    )
    if threshold_rule is not None and threshold_rule not in rules:
        raise ValueError(f"Unknown threshold rule {threshold_rule!r}; choose one of {sorted(rules)}.")
    if threshold_rule is not None:
        threshold = rules[threshold_rule]
        saved_rule: str | None = f"{threshold_rule} on the stressed validation copies"
    else:
        saved_rule = metadata.threshold_rule
    pneumonia_inputs = validation_inputs[validation_labels == 1]
    return {
        "model_version": metadata.version,
        "recipe": metadata.recipe,
        "held_out": f"every normal file named {HELD_OUT_PREFIX}* (left out of training and validation)",
        "saved_threshold": {**at(threshold), "rule": saved_rule},
        "auc_held_out_series": _auc(normal2, pneumonia),
        "auc_validation_series": _auc(im_normal, pneumonia),
        "gate_refusals_held_out_series": wilson(int(np.sum(series_scores[:, 1] > limit)), len(normal2)),
        "threshold_rules": {name: at(cut) for name, cut in rules.items()},
        "grad_cam": {
            "held_out_series": grad_cam_location(predictor, series_inputs, grad_cam_images, seed=1),
            "validation_pneumonia": grad_cam_location(predictor, pneumonia_inputs, grad_cam_images, seed=2),
        },
        "fullres": _fullres(predictor, Path(fullres_dir), threshold, limit) if fullres_dir else None,
    }


def run(
    data_dir: str | Path,
    out_dir: str | Path,
    recipe_name: str,
    fullres_dir: str | Path | None,
    epochs: int | None = None,
    seed: int = 42,
    retrain: bool = True,
    threshold_rule: str | None = None,
) -> dict:
    """Train ``recipe_name`` without the held-out series (unless a model is there and not
    ``retrain``), measure it, and write ``out_dir/<recipe>/shift_proxy.json``."""
    from training.train import train

    out = Path(out_dir)
    view = proxy_view(data_dir, out / "data")
    model_dir = out / recipe_name
    if retrain or not (model_dir / "metadata.json").is_file():
        train(view, model_dir, recipe_name=recipe_name, epochs=epochs, seed=seed, verbose=2)
    figures = measure(model_dir, data_dir, fullres_dir, threshold_rule=threshold_rule)
    (model_dir / PROXY_FILE).write_text(json.dumps(figures, indent=2) + "\n")
    return figures


def attach(model_dir: str | Path, figures: dict, variants: dict[str, dict] | None = None) -> None:
    """Put the proxy figures (and those of the variants it was compared with) into a model's
    metadata and rewrite its model card."""
    from training.model_card import write_model_card

    metadata = load_metadata(model_dir)
    metadata = metadata.model_copy(update={"shift_proxy": {**figures, "variants": variants or {}}})
    save_metadata(model_dir, metadata)
    write_model_card(model_dir, metadata)


def _variant(text: str) -> tuple[str, dict]:
    name, _, folder = text.partition("=")
    if not folder:
        raise argparse.ArgumentTypeError(f"expected NAME=DIR, got {text!r}")
    return name, json.loads((Path(folder) / PROXY_FILE).read_text())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m training.shift_proxy", description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, help="the labelled training folder")
    parser.add_argument("--fullres", default=None, help="a labelled folder of full-size originals")
    parser.add_argument("--out", default="runs/shift-proxy")
    parser.add_argument("--recipe", default="tuned")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--measure-only", action="store_true", help="reuse OUT/RECIPE if it is there")
    parser.add_argument(
        "--threshold-rule",
        default=None,
        metavar="RULE",
        help="count at this rule's threshold (youden, sensitivity:0.95, ...) instead of the saved one",
    )
    parser.add_argument(
        "--compare",
        type=_variant,
        action="append",
        default=[],
        metavar="NAME=DIR",
        help="another proxy run's folder, shown beside this one in the card",
    )
    parser.add_argument(
        "--attach",
        default=None,
        metavar="MODEL_DIR",
        help="write the figures into this model's metadata.json and MODEL_CARD.md",
    )
    args = parser.parse_args(argv)
    figures = run(
        args.data,
        args.out,
        args.recipe,
        args.fullres,
        args.epochs,
        args.seed,
        not args.measure_only,
        args.threshold_rule,
    )
    if args.attach:
        attach(args.attach, figures, dict(args.compare))
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
