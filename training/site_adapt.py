"""``pneumoscan adapt``: a new model version fine-tuned on a site's labelled X-rays.

1. The parent scores the sample through the core path (gate included); refused images are left
   out and counted. Fewer than ``MIN_PER_CLASS`` scored X-rays of a class, or fewer patients of a
   class than folds, is refused (``SampleTooSmall``, exit 2) before any training.
2. Out of fold, by patient (``training.site_folds``): the epoch count, then the temperature and
   the threshold (the calibrate rules, default Youden's J), all chosen on held-out answers; the
   figures reported for the adapted version are those held-out answers, with 95% intervals.
3. The model is fine-tuned on the whole sample for that many epochs (``training.site_finetune``).
4. The input gate is refitted on the adapted features (``training.site_gate``): if any image of the
   non-X-ray check set would pass, or more than ``MAX_SITE_REFUSED`` of the site's X-rays would be
   refused, nothing is written (``AdaptationRefused``, exit 1).
5. The version ``<parent>-adapted-<UTC minute>-<6 hex>`` is written whole (a staging folder renamed
   into place): weights, gate, metadata with ``adaptation`` and ``site`` blocks, a drift reference
   from the site's held-out answers, the model card with its section, and ``report.html``.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from tqdm import tqdm

from pneumoscan import CLASS_NAMES
from pneumoscan.decision import calibrate
from pneumoscan.drift import save_reference
from pneumoscan.errors import DataError
from pneumoscan.gate import OodGate
from pneumoscan.imaging import plane_to_input
from pneumoscan.model import MODEL_FILE, Predictor, load_keras_model, load_metadata, save_metadata
from pneumoscan.schemas import (
    AdaptationFigures,
    EvaluationReport,
    GateInfo,
    ModelMetadata,
    SiteAdaptation,
    SiteCalibration,
)
from training.calibration import fit_temperature
from training.data import Example, find_examples, load_planes, split_by_patient
from training.drift_reference import site_reference
from training.gate import feature_layers, non_xray_refusals, xray_refusals
from training.metrics import evaluate_predictions
from training.site_calibration import MIN_PER_CLASS, SampleTooSmall, non_xrays_passing, umask
from training.site_data import data_fingerprint, read_patients, site_examples
from training.site_finetune import DEFAULT_FINE_TUNING, FineTuning, fine_tune
from training.site_folds import OutOfFold, grouping, out_of_fold
from training.site_gate import refit_gate
from training.site_scores import SiteScores, score_site
from training.stats import BOOTSTRAP_RESAMPLES, DEFAULT_FOLDS, Counts, Rule, bootstrap_auc, choose_threshold
from training.stats import cross_validated as cross_validated_counts
from training.validate import estimate

MAX_EPOCHS = 12
MAX_SITE_REFUSED = 0.01
_DERIVED_SUFFIX = re.compile(r"(-site-\d{12}-[0-9a-f]{6}|-adapted-\d{12}-[0-9a-f]{6})+$")
_COPIED = ("training_curves.png",)


class AdaptationRefused(DataError):
    """The adapted model would break the input gate; nothing was written."""

    code = "adaptation_refused"


@dataclass(frozen=True)
class AdaptationResult:
    metadata: ModelMetadata
    out_dir: Path


def check_sample(labels: np.ndarray, groups: np.ndarray, folds: int, minimum: int = MIN_PER_CLASS) -> None:
    """``SampleTooSmall`` saying how many more X-rays (or patients) of which class are needed."""
    short, have = [], []
    for label, name in enumerate(CLASS_NAMES):
        count = int(np.sum(labels == label))
        patients = len(set(groups[labels == label].tolist()))
        have.append(f"{count} {name} ({patients} patients)")
        if count < minimum:
            short.append(f"{minimum - count} more {name}")
        elif patients < folds:
            short.append(f"{name} X-rays of {folds - patients} more patients")
    if short:
        raise SampleTooSmall(
            f"Adapting needs at least {minimum} scored X-rays of each class from at least {folds} patients each; "
            f"the sample has {' and '.join(have)}. Add {' and '.join(short)} (refused images do not count). "
            "Nothing was written."
        )


def adapted_version(parent: str, fingerprint: str, epochs: int, threshold: float, created: datetime) -> str:
    base = _DERIVED_SUFFIX.sub("", parent)
    digest = hashlib.sha256(f"{parent}\n{fingerprint}\n{epochs}\n{threshold!r}".encode()).hexdigest()
    return f"{base}-adapted-{created:%Y%m%d%H%M}-{digest[:6]}"


def figures(
    labels: np.ndarray, probabilities: np.ndarray, threshold: float, rule: Rule, folds: int, seed: int
) -> AdaptationFigures:
    """AUC with its bootstrap interval, the counts at ``threshold``, and the rule out of sample."""
    auc, auc_ci = bootstrap_auc(labels, probabilities, BOOTSTRAP_RESAMPLES, seed)
    counts = Counts.at(labels, probabilities, threshold)
    validated = cross_validated_counts(labels, probabilities, rule, folds, seed)
    rule_counts = validated[0] if validated else None
    return AdaptationFigures(
        auc=auc,
        auc_ci=auc_ci,
        threshold=threshold,
        sensitivity=estimate(counts.tp, counts.tp + counts.fn),
        specificity=estimate(counts.tn, counts.tn + counts.fp),
        rule_sensitivity=estimate(rule_counts.tp, rule_counts.tp + rule_counts.fn) if rule_counts else None,
        rule_specificity=estimate(rule_counts.tn, rule_counts.tn + rule_counts.fp) if rule_counts else None,
    )


def _validation_split(metadata: ModelMetadata, train_data: Path) -> tuple[list[Example], list[Example]]:
    """The parent's own training and validation split of ``train_data``, as ``train`` made it."""
    from training.data import fingerprint
    from training.train import DEFAULT_VALIDATION_FRACTION

    examples = find_examples(train_data)
    if fingerprint(examples, train_data) != metadata.training_fingerprint:
        raise DataError(
            f"{train_data} is not the folder {metadata.version} was trained on (its file list differs); "
            "--train-data needs the model's own training folder."
        )
    return split_by_patient(examples, DEFAULT_VALIDATION_FRACTION, metadata.seed)


def adapt_site(
    model_dir: str | Path,
    data_dir: str | Path,
    out_dir: str | Path,
    *,
    labels_csv: str | Path | None = None,
    rule_text: str = "youden",
    train_data: str | Path | None = None,
    folds: int = DEFAULT_FOLDS,
    max_epochs: int = MAX_EPOCHS,
    seed: int = 0,
    settings: FineTuning = DEFAULT_FINE_TUNING,
    batch_size: int = 32,
    command: str | None = None,
) -> AdaptationResult:
    """Fine-tune the model in ``model_dir`` on the site's X-rays and write the new version to ``out_dir``."""
    started = time.perf_counter()
    rule = Rule.parse(rule_text)
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise DataError(f"{out_dir} already exists and is not empty; name a new folder for the new model version.")
    if max_epochs < 1:
        raise ValueError(f"max_epochs must be at least 1, got {max_epochs}.")
    parent = load_metadata(model_dir)
    examples = site_examples(data_dir, labels_csv)
    patients = read_patients(data_dir, labels_csv) if labels_csv is not None else None
    base = Predictor.from_dir(model_dir)
    scores = score_site(base, examples, data_dir, batch_size=batch_size)
    scored_paths = set(scores.paths)
    scored = [e for e in examples if e.path in scored_paths]
    grouped = grouping(scored, patients)
    check_sample(scores.labels, grouped.groups, folds)

    planes, labels = load_planes(scored, "Loading site images")
    extra, validation = None, None
    if train_data is not None:
        train_examples, validation_examples = _validation_split(parent, Path(train_data))
        extra = load_planes(train_examples, "Loading training images")
        validation = load_planes(validation_examples, "Loading validation images")

    with tqdm(total=folds * max_epochs + max_epochs, desc="Adapting", unit="epoch") as progress:
        oof = out_of_fold(
            lambda: load_keras_model(model_dir),
            planes,
            labels,
            grouped.groups,
            folds=folds,
            max_epochs=max_epochs,
            seed=seed,
            settings=settings,
            extra=extra,
            progress=progress,
        )
        progress.total = folds * max_epochs + oof.epochs
        progress.refresh()
        model = load_keras_model(model_dir)
        fine_tune(
            model,
            planes,
            labels,
            oof.epochs,
            seed + folds,
            settings,
            extra=extra,
            after_epoch=lambda *_: progress.update(1),
        )

    temperature = fit_temperature(oof.chosen, labels)
    held_out = calibrate(oof.chosen, temperature)
    threshold = choose_threshold(labels, held_out, rule)
    if threshold is None:
        raise DataError(f"No threshold reaches the rule {rule} on this sample's held-out answers; nothing was written.")
    before = figures(labels, scores.probabilities, parent.threshold, rule, folds, seed)
    after = figures(labels, held_out, threshold, rule, folds, seed)

    site_inputs = plane_to_input(planes)
    gate, gate_rule = refit_gate(
        model,
        base.gate.layers if base.gate is not None else feature_layers(model),
        site_inputs,
        oof.assignment,
        train_inputs=plane_to_input(extra[0]) if extra is not None else None,
        validation_inputs=plane_to_input(validation[0]) if validation is not None else None,
    )
    adapted = Predictor(model, threshold=threshold, model_version="unsaved", gate=gate, temperature=temperature)
    refused_site, passing = _check_gate(adapted, planes)
    if passing or refused_site > MAX_SITE_REFUSED * len(planes):
        raise AdaptationRefused(
            "The adapted model's features no longer suit the input gate: "
            + "; ".join(
                (
                    [f"{len(passing)} image(s) of the non-X-ray check set would pass ({', '.join(passing[:5])})"]
                    if passing
                    else []
                )
                + (
                    [f"{refused_site} of {len(planes)} site X-rays would be refused (at most {MAX_SITE_REFUSED:.0%})"]
                    if refused_site > MAX_SITE_REFUSED * len(planes)
                    else []
                )
            )
            + ". Nothing was written; --train-data (the model's training folder) gives the gate more X-rays to "
            "learn from."
        )

    validation_before = validation_after = None
    if validation is not None:
        validation_before = _evaluate(base, validation, parent.threshold)
        validation_after = _evaluate(adapted, validation, threshold)

    fingerprint = data_fingerprint(examples, data_dir)
    created = datetime.now(UTC)
    adaptation = SiteAdaptation(
        parent_version=parent.version,
        epochs=oof.epochs,
        max_epochs=max_epochs,
        auc_by_epoch=oof.auc_by_epoch,
        learning_rate=settings.learning_rate,
        l2_sp=settings.l2_sp,
        frozen=list(settings.frozen_stages),
        folds=folds,
        grouping=grouped.source,
        groups=grouped.count,
        training_images_mixed=0 if extra is None else min(len(planes), len(extra[0])),
        before=before,
        after=after,
        validation_before=validation_before,
        validation_after=validation_after,
        gate_site_refused=refused_site,
        gate_non_xrays_passing=len(passing),
        seconds=round(time.perf_counter() - started, 1),
    )
    site = SiteCalibration(
        rule=str(rule),
        threshold=threshold,
        previous_threshold=parent.threshold,
        parent_version=parent.version,
        temperature=temperature,
        temperature_refitted=True,
        n={name: scores.count(label) for label, name in enumerate(CLASS_NAMES)},
        refused={
            code: sum(1 for r in scores.refused if r.code == code) for code in sorted({r.code for r in scores.refused})
        },
        data_fingerprint=fingerprint,
        folds=folds,
        sensitivity=after.rule_sensitivity or after.sensitivity,
        specificity=after.rule_specificity or after.specificity,
        auc=after.auc,
        auc_ci=after.auc_ci,
        created=created,
    )
    version = adapted_version(parent.version, fingerprint, oof.epochs, threshold, created)
    metadata = parent.model_copy(
        update={
            "version": version,
            "threshold": threshold,
            "threshold_rule": f"site adaptation: {rule.describe}, on the out-of-fold answers for "
            f"{sum(site.n.values())} of the site's labelled X-rays",
            "site": site,
            "adaptation": adaptation,
            "created": created,
            "calibration": parent.calibration.model_copy(update={"temperature": temperature})
            if parent.calibration
            else None,
            "gate": GateInfo(
                threshold=gate.threshold,
                rule=gate_rule,
                sha256="",  # set when the gate is saved
                layers=list(gate.layers),
                features=int(gate.mean.shape[0]),
                refusals={"site": xray_refusals(adapted, site_inputs), **non_xray_refusals(adapted)},
            ),
        }
    )
    held_scores = SiteScores(
        files=scores.files,
        paths=scores.paths,
        labels=scores.labels,
        probabilities=held_out,
        ood_scores=adapted.score(site_inputs)[:, 1] / gate.threshold,
        refused=scores.refused,
    )
    reference = site_reference(held_scores, held_out, threshold, version, fingerprint)
    report = (oof, labels, scores.probabilities, held_out)
    metadata = _write_version(model, gate, model_dir, out_dir, metadata, reference, report, command)
    return AdaptationResult(metadata=metadata, out_dir=out_dir)


def _check_gate(predictor: Predictor, planes: np.ndarray) -> tuple[int, list[str]]:
    """(site X-rays refused, names of the non-X-ray check set that would pass) with the adapted features."""
    gate = predictor.gate
    if gate is None:
        return 0, []
    distances = predictor.score(plane_to_input(planes))[:, 1]
    return int(np.sum(distances > gate.threshold)), non_xrays_passing(predictor, gate.threshold)


def _evaluate(predictor: Predictor, validation: tuple[np.ndarray, np.ndarray], threshold: float) -> EvaluationReport:
    planes, labels = validation
    return evaluate_predictions(labels, predictor.score(plane_to_input(planes))[:, 0], threshold)


def _write_version(
    model,
    gate: OodGate,
    model_dir: Path,
    out_dir: Path,
    metadata: ModelMetadata,
    reference,
    report: tuple[OutOfFold, np.ndarray, np.ndarray, np.ndarray],
    command: str | None,
) -> ModelMetadata:
    """Weights, gate, metadata, drift reference, card and report in a staging folder, renamed into place."""
    from training.model_card import MODEL_CARD_FILE
    from training.site_adapt_report import adaptation_section, write_adaptation_report

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        staging.chmod(0o777 & ~umask())
        model.save(staging / MODEL_FILE)
        for name in _COPIED:
            if (model_dir / name).exists():
                shutil.copy2(model_dir / name, staging / name)
        sha256 = gate.save(staging)
        if metadata.gate is not None:
            metadata = metadata.model_copy(update={"gate": metadata.gate.model_copy(update={"sha256": sha256})})
        save_metadata(staging, metadata)
        save_reference(staging, reference)
        parent_card = model_dir / MODEL_CARD_FILE
        parent_text = parent_card.read_text() if parent_card.exists() else ""
        (staging / MODEL_CARD_FILE).write_text(adaptation_section(metadata, parent_text))
        write_adaptation_report(staging, metadata, *report, command)
        if out_dir.exists():
            out_dir.rmdir()
        staging.rename(out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return metadata
