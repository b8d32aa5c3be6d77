"""``pneumoscan validate``: how a model does on a site's own labelled X-rays, with 95% intervals.

The figures, in ``report.json`` (schema: ``ValidationReport``; every interval is ``[low, high]``
under a key ending in ``ci``):

- n per class and the refused images by code and by file (refusals are left out of the figures);
- AUC with a stratified bootstrap interval (2,000 resamples, seeded);
- sensitivity, specificity, PPV and NPV at the model's threshold, with Wilson intervals, and the
  confusion matrix;
- expected calibration error (10 bins) and the reliability table;
- candidate operating points (the model's own, Youden, sensitivity >= 0.95, specificity >= 0.90):
  each rule's threshold on the whole sample with its in-sample figures, and its out-of-sample
  figures (chosen on 4 folds, counted on the fifth, pooled);
- where Grad-CAM looks: the share of the heatmap's mass inside the central region and how often
  its peak lies in the outer border.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from pneumoscan import CLASS_NAMES
from pneumoscan.errors import DataError
from pneumoscan.intervals import wilson_interval
from pneumoscan.model.decision import OodPolicy
from pneumoscan.model.gradcam import CENTRAL_MARGIN
from pneumoscan.model.predictor import Predictor, load_metadata
from pneumoscan.schemas import Confusion, SiteEstimate
from training.calibration import ECE_BINS, expected_calibration_error, reliability
from training.site.data import data_fingerprint, site_examples
from training.site.facts import (
    AtThreshold,
    CalibrationFacts,
    DataFacts,
    GradCamFacts,
    ModelFacts,
    OperatingPoint,
    RefusedFile,
    ReliabilityBin,
    ValidationReport,
)
from training.site.scores import SiteScores, heatmap_locations, score_site
from training.stats import (
    BOOTSTRAP_RESAMPLES,
    DEFAULT_FOLDS,
    Counts,
    Rule,
    bootstrap_auc,
    choose_threshold,
    cross_validated,
)

CANDIDATE_RULES = ("youden", "sensitivity:0.95", "specificity:0.90")


def estimate(successes: int, n: int) -> SiteEstimate:
    return SiteEstimate(value=successes / n if n else None, ci=wilson_interval(successes, n), successes=successes, n=n)


def at_threshold(labels: np.ndarray, scores: np.ndarray, threshold: float) -> AtThreshold:
    counts = Counts.at(labels, scores, threshold)
    return AtThreshold(
        threshold=threshold,
        confusion=Confusion(tp=counts.tp, fp=counts.fp, tn=counts.tn, fn=counts.fn),
        **{name: estimate(*pair) for name, pair in counts.proportions().items()},
    )


def operating_point(labels: np.ndarray, scores: np.ndarray, rule: Rule, folds: int, seed: int) -> OperatingPoint:
    threshold = choose_threshold(labels, scores, rule)
    point = OperatingPoint(
        rule=str(rule),
        description=rule.describe,
        reachable=threshold is not None,
        threshold=threshold,
        in_sample=at_threshold(labels, scores, threshold) if threshold is not None else None,
    )
    if threshold is None or min(np.bincount(labels, minlength=2)) < folds:
        return point
    validated = cross_validated(labels, scores, rule, folds, seed)
    if validated is None:
        return point
    counts, _ = validated
    return point.model_copy(
        update={
            "out_of_sample_sensitivity": estimate(counts.tp, counts.tp + counts.fn),
            "out_of_sample_specificity": estimate(counts.tn, counts.tn + counts.fp),
            "folds": folds,
        }
    )


def calibration_facts(labels: np.ndarray, scores: np.ndarray) -> CalibrationFacts:
    predicted, observed, counts = reliability(labels.astype(float), scores)
    edges = np.linspace(0.0, 1.0, ECE_BINS + 1)
    bins = [
        ReliabilityBin(
            low=float(edges[i]),
            high=float(edges[i + 1]),
            n=int(counts[i]),
            mean_predicted=float(predicted[i]) if counts[i] else None,
            observed=float(observed[i]) if counts[i] else None,
        )
        for i in range(ECE_BINS)
    ]
    return CalibrationFacts(ece=expected_calibration_error(labels, scores), bins=bins)


def gradcam_facts(labels: np.ndarray, shares: np.ndarray, border: np.ndarray, seed: int) -> GradCamFacts:
    present = ~np.isnan(shares)
    values = shares[present]
    interval = None
    if len(values) >= 2:
        rng = np.random.default_rng(seed)
        means = rng.choice(values, (BOOTSTRAP_RESAMPLES, len(values))).mean(axis=1)
        interval = tuple(float(v) for v in np.percentile(means, [2.5, 97.5]))
    by_class = {}
    for label, name in enumerate(CLASS_NAMES):
        of_class = shares[present & (labels == label)]
        by_class[name] = float(of_class.mean()) if len(of_class) else None
    return GradCamFacts(
        margin=CENTRAL_MARGIN,
        n=int(present.sum()),
        central_share_mean=float(values.mean()) if len(values) else None,
        central_share_ci=interval,
        peak_in_border=estimate(int(border[present].sum()), int(present.sum())),
        by_class=by_class,
    )


def build_report(
    scores: SiteScores,
    predictor: Predictor,
    model_dir: str | Path,
    data: DataFacts,
    command: str,
    *,
    gradcam: bool = True,
    resamples: int = BOOTSTRAP_RESAMPLES,
    folds: int = DEFAULT_FOLDS,
    seed: int = 0,
) -> ValidationReport:
    """Every figure of the report from a scored sample."""
    labels, probabilities = scores.labels, scores.probabilities
    if len(labels) == 0:
        codes = sorted({r.code for r in scores.refused})
        raise DataError(f"Every image was refused ({', '.join(codes)}); there is nothing to validate.")
    metadata = load_metadata(model_dir)
    both = len(np.unique(labels)) == 2
    auc, auc_ci = bootstrap_auc(labels, probabilities, resamples, seed) if both else (None, None)
    rules = [Rule.parse(text) for text in CANDIDATE_RULES]
    points = []
    if both:
        points = [operating_point(labels, probabilities, rule, folds, seed) for rule in rules]
    refused: dict[str, int] = {}
    for refusal in scores.refused:
        refused[refusal.code] = refused.get(refusal.code, 0) + 1
    located = None
    if gradcam:
        shares, border = heatmap_locations(predictor, scores.paths)
        located = gradcam_facts(labels, shares, border, seed)
    return ValidationReport(
        command=command,
        created=datetime.now(UTC),
        model=ModelFacts(
            version=metadata.version,
            threshold=predictor.threshold,
            temperature=predictor.temperature,
            site_calibrated=metadata.site is not None,
            site_rule=metadata.site.rule if metadata.site else None,
        ),
        data=data,
        n={name: scores.count(label) for label, name in enumerate(CLASS_NAMES)},
        refused=dict(sorted(refused.items())),
        refused_files=[
            RefusedFile(file=r.file, label=CLASS_NAMES[r.label], code=r.code, detail=r.detail) for r in scores.refused
        ],
        auc=auc,
        auc_ci=auc_ci,
        bootstrap={"resamples": resamples, "seed": seed},
        at_threshold=at_threshold(labels, probabilities, predictor.threshold),
        calibration=calibration_facts(labels, probabilities),
        operating_points=points,
        gradcam=located,
    )


def validate(
    model_dir: str | Path,
    data_dir: str | Path,
    out_dir: str | Path,
    *,
    labels_csv: str | Path | None = None,
    command: str = "",
    threshold: float | None = None,
    ood_policy: OodPolicy = "refuse",
    batch_size: int = 32,
    gradcam: bool = True,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
) -> ValidationReport:
    """Score the site's sample and write ``report.json``, ``report.html`` and the plots to ``out_dir``."""
    from training.site.report import write_report

    examples = site_examples(data_dir, labels_csv)
    predictor = Predictor.from_dir(model_dir, threshold=threshold, ood_policy=ood_policy)
    scores = score_site(predictor, examples, data_dir, batch_size=batch_size)
    data = DataFacts(
        folder=str(data_dir),
        labels_csv=str(labels_csv) if labels_csv else None,
        fingerprint=data_fingerprint(examples, data_dir),
        files=len(examples),
    )
    report = build_report(scores, predictor, model_dir, data, command, gradcam=gradcam, resamples=resamples, seed=seed)
    write_report(report, scores, Path(out_dir))
    return report
