"""How a calibrate rule's operating point travels within a site's labelled sample: the sample
split again and again by patient, as ``pneumoscan split`` does, the temperature and threshold
chosen on one part as ``pneumoscan calibrate`` chooses them, counted on the other.

    python -m training.site.resplit --model models/pneumonia-cnn --data ../shared/data/site_sample

The model scores the sample once. Printed: the held parts' sensitivity and specificity (mean and
5th-95th percentiles over the splits), how many splits reach ``--targets`` on both, and the
nearest the whole sample's ROC comes to those targets, which no threshold rule can pass: a
sample whose ROC stays below the targets needs a model that ranks it better, not another rule.

With ``--adapt`` each part also adapts the model as ``pneumoscan adapt`` does by default (its
classifier refitted, the strength, temperature and threshold chosen out of fold on the part), and
the held part is counted with the adapted classifier: how far adaptation travels within the site.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from pneumoscan.model.decision import calibrate
from pneumoscan.model.predictor import Predictor
from training.data import load_planes
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
    auc: list[float]  # the held parts' AUC: mean, 5th and 95th percentile
    adapted: bool = False  # each part adapted the classifier (--adapt)


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


def _adapted_on(part: np.ndarray, held: np.ndarray, labels, groups, adapting, rule: Rule, seed: int):
    """(the held part's calibrated P(pneumonia) and the threshold) with the classifier refitted on
    ``part`` as ``pneumoscan adapt`` refits it; ``adapting`` is (features, logits) per image."""
    from training.adapt.classifier import corrected, refit_classifier
    from training.adapt.folds import operating_point

    features, logits = adapting
    oof, correction = refit_classifier(
        features[part], logits[part], labels[part], groups[part], folds=DEFAULT_FOLDS, seed=seed
    )
    temperature, _, threshold = operating_point(oof.chosen, labels[part], rule)
    return calibrate(corrected(logits[held], features[held], correction), temperature), threshold


def _calibrated_on(scores: SiteScores, fitted: np.ndarray, temperature: float, rule: Rule, seed: int):
    """(the held part's calibrated P(pneumonia) and the threshold) with the temperature and the
    threshold chosen on the ``fitted`` part as ``pneumoscan calibrate`` chooses them."""
    part, held = _part(scores, fitted), _part(scores, ~fitted)
    fitted_temperature, _, probabilities = refit_temperature(part, temperature, DEFAULT_FOLDS, seed)
    threshold = choose_threshold(part.labels, probabilities, rule)
    logits = raw_logits(held.probabilities, temperature)
    return 1.0 / (1.0 + np.exp(-logits / fitted_temperature)), threshold


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
    adapting: tuple[np.ndarray, np.ndarray] | None = None,
) -> Resplits:
    """``splits`` patient splits of ``scores`` (``patients[i]`` is image i's patient); with
    ``adapting`` (the classifier's input features and the parent's logit per image) each part
    refits the classifier."""
    rng = np.random.default_rng(seed)
    groups = np.array(patients)
    held_rates, held_aucs = [], []
    for _ in range(splits):
        chosen = calibration_patients(scores.labels, patients, fraction, rng)
        fitted = np.array([patient in chosen for patient in patients])
        if adapting is None:
            probabilities, threshold = _calibrated_on(scores, fitted, temperature, rule, seed)
        else:
            probabilities, threshold = _adapted_on(fitted, ~fitted, scores.labels, groups, adapting, rule, seed)
        if threshold is None:
            continue
        held_labels = scores.labels[~fitted]
        held_rates.append(_rates(held_labels, probabilities, threshold))
        held_aucs.append(float(roc_auc_score(held_labels, probabilities)))
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
        auc=_summary(held_aucs),
        adapted=adapting is not None,
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
    parser.add_argument("--adapt", action="store_true", help="each part refits the classifier as `adapt` does")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    examples = site_examples(args.data, args.labels)
    predictor = Predictor.from_dir(args.model)
    scores = score_site(predictor, examples, args.data)
    patient_of = {example.path: example.patient_id for example in examples}
    adapting = None
    if args.adapt:
        from training.adapt.classifier import features_and_logits

        by_path = {example.path: example for example in examples}
        planes, _ = load_planes([by_path[path] for path in scores.paths], "Loading images")
        adapting = features_and_logits(predictor.model, planes)
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
        adapting=adapting,
    )
    if args.json:
        print(json.dumps(asdict(figures)))
        return 0
    se, sp = figures.sensitivity, figures.specificity
    step = "adapted" if figures.adapted else "calibrated"
    print(f"{figures.splits} splits, {figures.fraction:.0%} of each class's patients {step} on, rule {figures.rule}")
    auc = figures.auc
    print(
        f"  held parts: AUC {auc[0]:.3f} ({auc[1]:.3f}-{auc[2]:.3f}), "
        f"sensitivity {se[0]:.3f} ({se[1]:.3f}-{se[2]:.3f}), specificity {sp[0]:.3f} ({sp[1]:.3f}-{sp[2]:.3f})"
    )
    print(f"  reaching sensitivity {sensitivity_target:g} and specificity {specificity_target:g}: {figures.reaching}")

    def shown(value: float | None) -> str:
        return "none" if value is None else f"{value:.3f}"

    print(
        f"  the model's ROC on the whole sample: specificity at most {shown(figures.best_specificity)} at sensitivity "
        f">= {sensitivity_target:g}; sensitivity at most {shown(figures.best_sensitivity)} at specificity "
        f">= {specificity_target:g}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
