"""How a calibrate rule's operating point travels within a site's labelled sample: the sample
split again and again by patient, as ``pneumoscan split`` does, the temperature and threshold
chosen on one part as ``pneumoscan calibrate`` chooses them, counted on the other.

    python -m training.site.resplit --model models/pneumonia-cnn --data ../shared/data/site_sample

The model scores the sample once. Printed: the held parts' sensitivity and specificity (mean and
5th-95th percentiles over the splits), how many splits reach ``--targets`` on both, and the
nearest the whole sample's ROC comes to those targets, which no threshold rule can pass: a
sample whose ROC stays below the targets needs a model that ranks it better, not another rule.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from pneumoscan.model.predictor import Predictor
from training.site.calibrate import refit_temperature
from training.site.data import site_examples
from training.site.scores import SiteScores, raw_logits, score_site
from training.site.split import calibration_patients
from training.stats import DEFAULT_FOLDS, Counts, Rule, choose_threshold, cuts_and_rates


@dataclass(frozen=True)
class Resplits:
    rule: str
    splits: int
    fraction: float
    sensitivity: list[float]  # mean, 5th and 95th percentile over the held parts
    specificity: list[float]
    reaching: int  # splits whose held part reaches both targets
    targets: list[float]  # sensitivity, specificity
    best_specificity: float | None  # on the whole sample, at the targeted sensitivity or above
    best_sensitivity: float | None  # on the whole sample, at the targeted specificity or above


def _part(scores: SiteScores, chosen: np.ndarray) -> SiteScores:
    pick = np.flatnonzero(chosen)
    return SiteScores(
        files=[scores.files[i] for i in pick],
        paths=[scores.paths[i] for i in pick],
        labels=scores.labels[pick],
        probabilities=scores.probabilities[pick],
        ood_scores=scores.ood_scores[pick],
        refused=[],
    )


def _rates(labels: np.ndarray, probabilities: np.ndarray, threshold: float) -> tuple[float, float]:
    counts = Counts.at(labels, probabilities, threshold)
    return counts.tp / (counts.tp + counts.fn), counts.tn / (counts.tn + counts.fp)


def _summary(values: list[float]) -> list[float]:
    return [round(float(np.mean(values)), 4), *(round(float(v), 4) for v in np.percentile(values, [5, 95]))]


def _corner(scores: SiteScores, targets: tuple[float, float]) -> tuple[float | None, float | None]:
    """(the best specificity at sensitivity >= target, the best sensitivity at specificity >= target)."""
    _, sensitivity, specificity = cuts_and_rates(scores.labels, scores.probabilities)
    # Every cut that flags at least one image (the first flags none).
    sensitivity, specificity = sensitivity[1:], specificity[1:]
    specificities = specificity[sensitivity >= targets[0]]
    sensitivities = sensitivity[specificity >= targets[1]]
    return (
        float(specificities.max()) if len(specificities) else None,
        float(sensitivities.max()) if len(sensitivities) else None,
    )


def resplit(
    scores: SiteScores,
    temperature: float,
    patients: list[str],
    rule: Rule,
    *,
    splits: int = 100,
    fraction: float = 0.5,
    targets: tuple[float, float] = (0.94, 0.90),
    seed: int = 0,
) -> Resplits:
    """``splits`` patient splits of ``scores`` (``patients[i]`` is image i's patient)."""
    rng = np.random.default_rng(seed)
    held_rates = []
    for _ in range(splits):
        chosen = calibration_patients(scores.labels, patients, fraction, rng)
        fitted = np.array([patient in chosen for patient in patients])
        part, held = _part(scores, fitted), _part(scores, ~fitted)
        fitted_temperature, _, probabilities = refit_temperature(part, temperature, DEFAULT_FOLDS, seed)
        threshold = choose_threshold(part.labels, probabilities, rule)
        if threshold is None:
            continue
        held_probabilities = 1.0 / (1.0 + np.exp(-raw_logits(held.probabilities, temperature) / fitted_temperature))
        held_rates.append(_rates(held.labels, held_probabilities, threshold))
    if not held_rates:
        raise ValueError(f"No split's calibration part reached the rule {rule}.")
    sensitivity, specificity = zip(*held_rates, strict=True)
    best_specificity, best_sensitivity = _corner(scores, targets)
    return Resplits(
        rule=str(rule),
        splits=len(held_rates),
        fraction=fraction,
        sensitivity=_summary(list(sensitivity)),
        specificity=_summary(list(specificity)),
        reaching=sum(se >= targets[0] and sp >= targets[1] for se, sp in held_rates),
        targets=list(targets),
        best_specificity=best_specificity,
        best_sensitivity=best_sensitivity,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.site.resplit", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, type=Path, help="model folder")
    parser.add_argument(
        "--data", required=True, type=Path, help="DATA/{NORMAL,PNEUMONIA}/, or any folder with --labels"
    )
    parser.add_argument("--labels", type=Path, default=None, help="CSV of file,label[,patient]")
    parser.add_argument("--rule", default="youden", help="youden, sensitivity:X or specificity:X (default youden)")
    parser.add_argument("--splits", type=int, default=100, help="splits (default 100)")
    parser.add_argument("--fraction", type=float, default=0.5, help="patients of each class calibrated on (0.5)")
    parser.add_argument("--targets", default="0.94,0.90", help="sensitivity,specificity to count (0.94,0.90)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    examples = site_examples(args.data, args.labels)
    predictor = Predictor.from_dir(args.model)
    scores = score_site(predictor, examples, args.data)
    patient_of = {example.path: example.patient_id for example in examples}
    sensitivity_target, specificity_target = (float(value) for value in args.targets.split(","))
    figures = resplit(
        scores,
        predictor.temperature,
        [patient_of[path] for path in scores.paths],
        Rule.parse(args.rule),
        splits=args.splits,
        fraction=args.fraction,
        targets=(sensitivity_target, specificity_target),
        seed=args.seed,
    )
    if args.json:
        print(json.dumps(asdict(figures)))
        return 0
    se, sp = figures.sensitivity, figures.specificity
    print(
        f"{figures.splits} splits, {figures.fraction:.0%} of each class's patients calibrated on, rule {figures.rule}"
    )
    print(
        f"  held parts: sensitivity {se[0]:.3f} ({se[1]:.3f}-{se[2]:.3f}), "
        f"specificity {sp[0]:.3f} ({sp[1]:.3f}-{sp[2]:.3f})"
    )
    print(f"  reaching sensitivity {sensitivity_target:g} and specificity {specificity_target:g}: {figures.reaching}")

    def shown(value: float | None) -> str:
        return "none" if value is None else f"{value:.3f}"

    print(
        f"  the whole sample's ROC: specificity at most {shown(figures.best_specificity)} at sensitivity "
        f">= {sensitivity_target:g}; sensitivity at most {shown(figures.best_sensitivity)} at specificity "
        f">= {specificity_target:g}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
