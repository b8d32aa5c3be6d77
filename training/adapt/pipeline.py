"""``pneumoscan adapt``: a new model version adapted to a site's labelled X-rays.

1. The parent scores the sample through the core path (gate included); refused images are left
   out and counted. Fewer than ``MIN_PER_CLASS`` scored X-rays of a class, or fewer patients of a
   class than folds, is refused (``SampleTooSmall``, exit 2) before any training.
2. Out of fold, by patient: how far to move from the parent (the L2-SP strength of a refitted
   classifier, ``training.adapt.classifier``, the default; or the fine-tuning epochs,
   ``training.adapt.folds``), then the temperature and the threshold (the calibrate rules, default
   Youden's J), all chosen on held-out answers; the figures reported for the adapted version are
   those held-out answers, with 95% intervals.
3. The classifier is refitted, or the model fine-tuned (``training.adapt.finetune``), on the whole sample.
4. A refitted classifier leaves the features the input gate measures as they were, so the
   parent's gate stays; fine-tuning moves them, so the gate is refitted on the adapted features
   (``training.adapt.refit_gate``). Either way, if any image of the non-X-ray check set would pass,
   or more than ``MAX_SITE_REFUSED`` of the site's X-rays would be refused, nothing is written
   (``AdaptationRefused``, exit 1).
5. The version ``<parent>-adapted-<UTC minute>-<6 hex>`` is written whole (a staging folder renamed
   into place): weights, gate, metadata with ``adaptation`` and ``site`` blocks, a drift reference
   from the site's held-out answers, the model card with its section, and ``report.html``.
"""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from tqdm import tqdm

from pneumoscan import CLASS_NAMES
from pneumoscan.errors import DataError
from pneumoscan.imaging.preprocess import plane_to_input
from pneumoscan.model.predictor import Predictor, load_keras_model, load_metadata
from pneumoscan.schemas import (
    AdaptationFigures,
    EvaluationReport,
    GateInfo,
    ModelMetadata,
    SiteAdaptation,
    SiteCalibration,
)
from training.adapt.classifier import (
    STRENGTHS,
    apply_correction,
    chosen_strength,
    features_and_logits,
    refit_classifier,
)
from training.adapt.finetune import DEFAULT_FINE_TUNING, FineTuning, fine_tune, stages
from training.adapt.folds import OutOfFold, operating_point, out_of_fold
from training.adapt.refit_gate import checked_gate, kept_gate
from training.adapt.report import write_version
from training.adapt.sample import SiteSample, load_sample
from training.drift.reference import site_reference
from training.gate.fit import non_xray_refusals, refusals_of
from training.metrics import evaluate_predictions
from training.site.calibrate import check_new_folder, derived_version
from training.site.data import data_fingerprint
from training.site.scores import SiteScores
from training.site.validate import at_threshold, estimate
from training.stats import BOOTSTRAP_RESAMPLES, DEFAULT_FOLDS, Rule, bootstrap_auc
from training.stats import cross_validated as cross_validated_counts

MAX_EPOCHS = 12
CLASSIFIER, FINE_TUNE = "classifier", "fine-tune"
METHODS = (CLASSIFIER, FINE_TUNE)
_DERIVED_SUFFIX = re.compile(r"(-site-\d{12}-[0-9a-f]{6}|-adapted-\d{12}-[0-9a-f]{6})+$")


@dataclass(frozen=True)
class AdaptationResult:
    metadata: ModelMetadata
    out_dir: Path


def adapted_version(parent: str, fingerprint: str, epochs: int, threshold: float, created: datetime) -> str:
    base = _DERIVED_SUFFIX.sub("", parent)
    digest = hashlib.sha256(f"{parent}\n{fingerprint}\n{epochs}\n{threshold!r}".encode()).hexdigest()
    return derived_version(base, f"adapted-{created:%Y%m%d%H%M}-{digest[:6]}")


def figures(
    labels: np.ndarray, probabilities: np.ndarray, threshold: float, rule: Rule, folds: int, seed: int
) -> AdaptationFigures:
    """AUC with its bootstrap interval, the counts at ``threshold``, and the rule out of sample."""
    auc, auc_ci = bootstrap_auc(labels, probabilities, BOOTSTRAP_RESAMPLES, seed)
    at = at_threshold(labels, probabilities, threshold)
    validated = cross_validated_counts(labels, probabilities, rule, folds, seed)
    rule_counts = validated[0] if validated else None
    return AdaptationFigures(
        auc=auc,
        auc_ci=auc_ci,
        threshold=threshold,
        sensitivity=at.sensitivity,
        specificity=at.specificity,
        rule_sensitivity=estimate(rule_counts.tp, rule_counts.tp + rule_counts.fn) if rule_counts else None,
        rule_specificity=estimate(rule_counts.tn, rule_counts.tn + rule_counts.fp) if rule_counts else None,
    )


def fit_adapted(model_dir: Path, sample: SiteSample, folds: int, max_epochs: int, seed: int, settings: FineTuning):
    """(out-of-fold answers, the model fine-tuned on the whole sample for the epochs they chose)."""
    with tqdm(total=folds * max_epochs + max_epochs, desc="Adapting", unit="epoch") as progress:
        oof = out_of_fold(
            lambda: load_keras_model(model_dir),
            sample.planes,
            sample.labels,
            sample.grouped.groups,
            folds=folds,
            max_epochs=max_epochs,
            seed=seed,
            settings=settings,
            extra=sample.extra,
            progress=progress,
        )
        progress.total = folds * max_epochs + oof.epochs
        progress.refresh()
        model = fine_tune(
            load_keras_model(model_dir),
            sample.planes,
            sample.labels,
            oof.epochs,
            seed + folds,
            settings,
            extra=sample.extra,
            after_epoch=lambda *_: progress.update(1),
        )
    return oof, model


def fit_classifier(model_dir: Path, sample: SiteSample, folds: int, seed: int):
    """(out-of-fold answers, the model with its classifier refitted on the whole sample at the
    strength they chose)."""
    model = load_keras_model(model_dir)
    with tqdm(total=3, desc="Adapting the classifier", unit="step") as progress:
        features, logits = features_and_logits(model, sample.planes)
        progress.update(1)
        oof, correction = refit_classifier(
            features, logits, sample.labels, sample.grouped.groups, folds=folds, seed=seed
        )
        progress.update(1)
        apply_correction(model, correction)
        progress.update(1)
    return oof, model


def adapt_site(
    model_dir: str | Path,
    data_dir: str | Path,
    out_dir: str | Path,
    *,
    labels_csv: str | Path | None = None,
    rule_text: str = "youden",
    train_data: str | Path | None = None,
    method: str = CLASSIFIER,
    folds: int = DEFAULT_FOLDS,
    max_epochs: int = MAX_EPOCHS,
    seed: int = 0,
    settings: FineTuning = DEFAULT_FINE_TUNING,
    batch_size: int = 32,
    command: str | None = None,
) -> AdaptationResult:
    """Adapt the model in ``model_dir`` to the site's X-rays (``method``: refit its classifier, or
    fine-tune it) and write the new version to ``out_dir``."""
    started = time.perf_counter()
    rule = Rule.parse(rule_text)
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    check_new_folder(out_dir)
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}.")
    if max_epochs < 1:
        raise ValueError(f"max_epochs must be at least 1, got {max_epochs}.")
    parent = load_metadata(model_dir)
    base = Predictor.from_dir(model_dir)
    sample = load_sample(base, parent, data_dir, labels_csv, train_data, folds, batch_size, method == FINE_TUNE)
    keeps_gate = method == CLASSIFIER and base.gate is not None
    if method == CLASSIFIER:
        oof, model = fit_classifier(model_dir, sample, folds, seed)
    else:
        oof, model = fit_adapted(model_dir, sample, folds, max_epochs, seed, settings)

    labels = sample.labels
    temperature, held_out, threshold = operating_point(oof.chosen, labels, rule)
    if threshold is None:
        raise DataError(f"No threshold reaches the rule {rule} on this sample's held-out answers; nothing was written.")
    if keeps_gate:
        adapted, gate_rule, site_ratios = kept_gate(model, base, parent, sample, threshold, temperature)
    else:
        adapted, gate_rule, site_ratios = checked_gate(model, base, sample, oof, threshold, temperature)
    validation_before = validation_after = None
    if sample.validation is not None:
        validation_before = _evaluate(base, sample.validation, parent.threshold)
        validation_after = _evaluate(adapted, sample.validation, threshold)
    adaptation = SiteAdaptation(
        parent_version=parent.version,
        **_method_fields(method, oof, model, max_epochs, settings),
        folds=folds,
        grouping=sample.grouped.source,
        groups=sample.grouped.count,
        training_images_mixed=0 if sample.extra is None else min(len(labels), len(sample.extra[0])),
        before=figures(labels, sample.scores.probabilities, parent.threshold, rule, folds, seed),
        after=figures(labels, held_out, threshold, rule, folds, seed),
        validation_before=validation_before,
        validation_after=validation_after,
        gate_site_refused=int(np.sum(site_ratios > 1)),
        gate_non_xrays_passing=0,
        seconds=round(time.perf_counter() - started, 1),
    )
    metadata = adapted_metadata(parent, adaptation, adapted, sample, site_ratios, rule, gate_rule, data_dir)
    return AdaptationResult(
        metadata=_write(model, adapted, model_dir, out_dir, metadata, sample, site_ratios, oof, held_out, command),
        out_dir=out_dir,
    )


def _method_fields(method: str, oof: OutOfFold, model, max_epochs: int, settings: FineTuning) -> dict:
    """The ``adaptation`` block's fields that say how the weights moved."""
    if method == CLASSIFIER:
        return {
            "method": CLASSIFIER,
            "epochs": 0,
            "max_epochs": 0,
            "auc_by_epoch": oof.auc_by_epoch[:1],
            "l2_sp_tried": list(STRENGTHS),
            "auc_by_l2_sp": oof.auc_by_epoch[1:],
            "learning_rate": 0.0,
            "l2_sp": chosen_strength(oof),
            "frozen": stages(model),
        }
    return {
        "method": FINE_TUNE,
        "epochs": oof.epochs,
        "max_epochs": max_epochs,
        "auc_by_epoch": oof.auc_by_epoch,
        "learning_rate": settings.learning_rate,
        "l2_sp": settings.l2_sp,
        "frozen": list(settings.frozen_stages),
    }


def adapted_metadata(
    parent: ModelMetadata,
    adaptation: SiteAdaptation,
    adapted: Predictor,
    sample: SiteSample,
    site_ratios: np.ndarray,
    rule: Rule,
    gate_rule: str,
    data_dir: str | Path,
) -> ModelMetadata:
    """The parent's metadata with this version's name, operating point, gate and ``adaptation`` and ``site`` blocks."""
    scores, after, gate = sample.scores, adaptation.after, adapted.gate
    created = datetime.now(UTC)
    fingerprint = data_fingerprint(sample.examples, data_dir)
    site = SiteCalibration(
        rule=str(rule),
        threshold=after.threshold,
        previous_threshold=parent.threshold,
        parent_version=parent.version,
        temperature=adapted.temperature,
        temperature_refitted=True,
        n={name: scores.count(label) for label, name in enumerate(CLASS_NAMES)},
        refused={
            code: sum(1 for r in scores.refused if r.code == code) for code in sorted({r.code for r in scores.refused})
        },
        data_fingerprint=fingerprint,
        folds=adaptation.folds,
        sensitivity=after.rule_sensitivity or after.sensitivity,
        specificity=after.rule_specificity or after.specificity,
        auc=after.auc,
        auc_ci=after.auc_ci,
        created=created,
    )
    gate_info = None
    if gate is not None:
        gate_info = GateInfo(
            threshold=gate.threshold,
            rule=gate_rule,
            sha256="",  # set when the gate is saved
            layers=list(gate.layers),
            features=int(gate.mean.shape[0]),
            refusals={"site": refusals_of(site_ratios), **non_xray_refusals(adapted)},
        )
    return parent.model_copy(
        update={
            "version": adapted_version(parent.version, fingerprint, adaptation.epochs, after.threshold, created),
            "threshold": after.threshold,
            "threshold_rule": f"site adaptation: {rule.describe}, on the out-of-fold answers for "
            f"{sum(site.n.values())} of the site's labelled X-rays",
            "site": site,
            "adaptation": adaptation,
            "created": created,
            "calibration": parent.calibration.model_copy(update={"temperature": adapted.temperature})
            if parent.calibration
            else None,
            "gate": gate_info,
        }
    )


def _write(
    model,
    adapted: Predictor,
    model_dir: Path,
    out_dir: Path,
    metadata: ModelMetadata,
    sample: SiteSample,
    site_ratios: np.ndarray,
    oof: OutOfFold,
    held_out: np.ndarray,
    command: str | None,
) -> ModelMetadata:
    scores = sample.scores
    held_scores = SiteScores(scores.files, scores.paths, scores.labels, held_out, site_ratios, scores.refused)
    site = metadata.site
    if site is None or adapted.gate is None:
        raise ValueError(f"{metadata.version} has no site block or gate.")
    reference = site_reference(held_scores, held_out, site.threshold, metadata.version, site.data_fingerprint)
    report = (oof, sample.labels, scores.probabilities, held_out)
    return write_version(model, adapted.gate, model_dir, out_dir, metadata, reference, report, command)


def _evaluate(predictor: Predictor, validation: tuple[np.ndarray, np.ndarray], threshold: float) -> EvaluationReport:
    planes, labels = validation
    return evaluate_predictions(labels, predictor.score(plane_to_input(planes))[:, 0], threshold)
