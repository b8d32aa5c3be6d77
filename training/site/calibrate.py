"""``pneumoscan calibrate``: a new model version with a site's own operating point.

The weights and the input gate stay; what changes is chosen on the site's labelled X-rays:
1. the threshold, by a rule (``training.stats.Rule``): Youden's J, a sensitivity or a specificity;
2. the softmax temperature, refitted when each class has at least ``MIN_FOR_TEMPERATURE``
   scored images (temperature scaling keeps the ranking, so the rule picks the same images either way);
3. with ``extend_gate``, the gate's limit, raised to the farthest site X-ray within
   ``GATE_EXTENSION_MAX`` times the old limit, provided every image of the non-X-ray check set
   (``training.gate.not_xrays``) is still refused.

The figures reported for the new operating point are out of sample: the rule is applied on k-1
stratified folds and counted on the held fold, pooled over the folds. A sample too small for the
rule is refused (``SampleTooSmall``) before anything is written; the new folder appears whole or
not at all.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from pneumoscan import CLASS_NAMES
from pneumoscan.errors import DataError, PneumoscanError
from pneumoscan.imaging.gate import GATE_FILE
from pneumoscan.imaging.preprocess import load_plane, plane_to_input
from pneumoscan.model.predictor import MODEL_FILE, Predictor, load_metadata, save_metadata
from pneumoscan.monitoring.drift import DriftReference, save_reference
from pneumoscan.schemas import ModelMetadata, SiteCalibration
from training.calibration import expected_calibration_error, fit_temperature
from training.drift.reference import site_reference
from training.model_card import MODEL_CARD_FILE
from training.site.data import data_fingerprint, relative_name, site_examples
from training.site.scores import SiteScores, raw_logits, score_site
from training.site.validate import estimate
from training.stats import (
    BOOTSTRAP_RESAMPLES,
    DEFAULT_FOLDS,
    Rule,
    bootstrap_auc,
    choose_threshold,
    cross_validated,
    needed_per_class,
    stratified_folds,
)

MIN_PER_CLASS = 25
MIN_FOR_TEMPERATURE = 50
GATE_EXTENSION_MAX = 1.5
_SITE_SUFFIX = re.compile(r"-site-\d{12}-[0-9a-f]{6}$")
_TRAINED_MINUTE = re.compile(r"\d{12}")  # a trained version's UTC minute: <recipe>-<minute>-<8 hex>
# Files that are the parent's own and describe it as trained; copied unchanged.
_COPIED = (MODEL_FILE, GATE_FILE, "training_curves.png", "reliability.png", "roc.png", "score_histograms.png")


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


class SampleTooSmall(DataError):
    code = "sample_too_small"


@dataclass(frozen=True)
class SiteCalibrationResult:
    metadata: ModelMetadata
    out_dir: Path
    refused_left: int  # site X-rays still refused by the (possibly extended) gate


def check_sample(scores: SiteScores, rule: Rule, minimum: int = MIN_PER_CLASS) -> None:
    """``SampleTooSmall`` saying how many more images of which class the rule needs."""
    needed = needed_per_class(rule, minimum)
    short = {label: needed[label] - scores.count(label) for label in needed if scores.count(label) < needed[label]}
    if not short:
        return
    have = " and ".join(f"{scores.count(label)} {CLASS_NAMES[label]}" for label in sorted(needed))
    wants = " and ".join(f"{needed[label]} {CLASS_NAMES[label]}" for label in sorted(needed))
    more = " and ".join(f"{count} more {CLASS_NAMES[label]}" for label, count in sorted(short.items()))
    raise SampleTooSmall(
        f"The rule {rule} needs at least {wants} scored X-rays; the sample has {have}. "
        f"Add {more} (refused images do not count). Nothing was written."
    )


MAX_VERSION_LENGTH = 63  # a BentoML tag's version


def derived_version(base: str, suffix: str) -> str:
    """``<base>-<suffix>``. Where the whole would be longer than a BentoML tag's version may be,
    the base's training minute goes first (``framed-swap-distilled-833345fd-site-...``: the recipe
    and the trained version's hash stay), then, if need be, its leading recipe words; the parent's
    whole version stays in the metadata."""
    words = base.split("-")

    def too_long() -> bool:
        return len("-".join([*words, suffix])) > MAX_VERSION_LENGTH

    if too_long():
        words = [word for word in words if not _TRAINED_MINUTE.fullmatch(word)]
    while too_long() and len(words) > 2:
        words = words[1:]
    return "-".join([*words, suffix])


def site_version(parent: str, fingerprint: str, rule: Rule, threshold: float, created: datetime) -> str:
    """``<parent's trained version>-site-<UTC minute>-<6 hex>``: a new version for each calibration."""
    base = _SITE_SUFFIX.sub("", parent)
    digest = hashlib.sha256(f"{parent}\n{fingerprint}\n{rule}\n{threshold!r}".encode()).hexdigest()
    return derived_version(base, f"site-{created:%Y%m%d%H%M}-{digest[:6]}")


def _negative_log_likelihood(labels: np.ndarray, logits: np.ndarray, temperature: float) -> float:
    p = np.clip(1.0 / (1.0 + np.exp(-logits / temperature)), 1e-12, 1 - 1e-12)
    return float(-np.sum(labels * np.log(p) + (1 - labels) * np.log(1 - p)))


def _fit(labels: np.ndarray, logits: np.ndarray) -> float:
    pneumonia = 1.0 / (1.0 + np.exp(-logits))
    return fit_temperature(np.stack([1.0 - pneumonia, pneumonia], axis=1), labels)


def refit_temperature(scores: SiteScores, temperature: float, folds: int, seed: int) -> tuple[float, bool, np.ndarray]:
    """(temperature, refitted?, calibrated P(pneumonia)) on the site's sample. A new temperature is
    kept only when the sample supports it: at least ``MIN_FOR_TEMPERATURE`` images of each class,
    and temperatures fitted on k-1 folds predict the held folds better than the model's own."""
    if min(scores.count(0), scores.count(1)) < MIN_FOR_TEMPERATURE:
        return temperature, False, scores.probabilities
    labels, logits = scores.labels, raw_logits(scores.probabilities, temperature)
    assignment = stratified_folds(labels, folds, seed)
    refitted_loss = kept_loss = 0.0
    for fold in range(folds):
        held = assignment == fold
        fold_temperature = _fit(labels[~held], logits[~held])
        refitted_loss += _negative_log_likelihood(labels[held], logits[held], fold_temperature)
        kept_loss += _negative_log_likelihood(labels[held], logits[held], temperature)
    if refitted_loss >= kept_loss:
        return temperature, False, scores.probabilities
    refitted = _fit(labels, logits)
    return refitted, True, 1.0 / (1.0 + np.exp(-logits / refitted))


def non_xrays_passing(predictor: Predictor, limit: float) -> list[str]:
    """Names of the non-X-ray check set that a gate at ``limit`` would let through."""
    from training.gate.not_xrays import not_xrays

    passing = []
    for image in not_xrays():
        try:
            plane = load_plane(image.data)
        except PneumoscanError:
            continue  # refused before the distance check (blank_image)
        if predictor.score(plane_to_input(plane[np.newaxis]))[0, 1] <= limit:
            passing.append(f"{image.kind}/{image.name}")
    return passing


def _extend_gate(
    model_dir: Path, scores: SiteScores, examples, data_dir, batch_size: int
) -> tuple[SiteScores, float | None]:
    """The site's X-rays the gate refused but within ``GATE_EXTENSION_MAX`` of its limit, scored
    and added to ``scores``, and the new limit (None when nothing needs it)."""
    flagging = Predictor.from_dir(model_dir, ood_policy="flag")
    by_file = {relative_name(e.path, data_dir): e for e in examples}
    refused = [by_file[r.file] for r in scores.refused if r.code == "not_a_chest_xray"]
    if not refused or flagging.gate is None:
        return scores, None
    rescored = score_site(flagging, refused, data_dir, batch_size=batch_size)
    admitted = np.flatnonzero(rescored.ood_scores <= GATE_EXTENSION_MAX)
    if len(admitted) == 0:
        return scores, None
    limit = float(flagging.gate.threshold * rescored.ood_scores[admitted].max())
    passing = non_xrays_passing(flagging, limit)
    if passing:
        raise DataError(
            f"Extending the gate to the site's X-rays (limit {limit:.2f}) would let {len(passing)} image(s) of the "
            f"non-X-ray check set through ({', '.join(passing[:5])}); nothing was written."
        )
    admitted_files = {rescored.files[i] for i in admitted}
    merged = SiteScores(
        files=scores.files + [rescored.files[i] for i in admitted],
        paths=scores.paths + [rescored.paths[i] for i in admitted],
        labels=np.concatenate([scores.labels, rescored.labels[admitted]]),
        probabilities=np.concatenate([scores.probabilities, rescored.probabilities[admitted]]),
        ood_scores=np.concatenate([scores.ood_scores, rescored.ood_scores[admitted] * flagging.gate.threshold / limit]),
        refused=[r for r in scores.refused if r.file not in admitted_files],
    )
    return merged, limit


def calibrate_site(
    model_dir: str | Path,
    data_dir: str | Path,
    out_dir: str | Path,
    rule_text: str,
    *,
    labels_csv: str | Path | None = None,
    extend_gate: bool = False,
    folds: int = DEFAULT_FOLDS,
    seed: int = 0,
    batch_size: int = 32,
) -> SiteCalibrationResult:
    """Choose the site's operating point and write the new model version to ``out_dir``."""
    rule = Rule.parse(rule_text)
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    check_new_folder(out_dir)
    parent = load_metadata(model_dir)
    examples = site_examples(data_dir, labels_csv)
    predictor = Predictor.from_dir(model_dir)
    scores = score_site(predictor, examples, data_dir, batch_size=batch_size)
    check_sample(scores, rule)
    gate_limit = None
    if extend_gate:
        scores, gate_limit = _extend_gate(model_dir, scores, examples, data_dir, batch_size)
    temperature, refitted, probabilities = refit_temperature(scores, predictor.temperature, folds, seed)
    threshold = choose_threshold(scores.labels, probabilities, rule)
    validated = cross_validated(scores.labels, probabilities, rule, folds, seed)
    if threshold is None or validated is None:
        raise DataError(f"No threshold reaches the rule {rule} on this sample; nothing was written.")
    counts, _ = validated
    auc, auc_ci = bootstrap_auc(scores.labels, probabilities, BOOTSTRAP_RESAMPLES, seed)
    fingerprint = data_fingerprint(examples, data_dir)
    created = datetime.now(UTC)
    site = SiteCalibration(
        rule=str(rule),
        threshold=threshold,
        previous_threshold=parent.threshold,
        parent_version=parent.version,
        temperature=temperature,
        temperature_refitted=refitted,
        n={name: scores.count(label) for label, name in enumerate(CLASS_NAMES)},
        refused={
            code: sum(1 for r in scores.refused if r.code == code) for code in sorted({r.code for r in scores.refused})
        },
        data_fingerprint=fingerprint,
        folds=folds,
        sensitivity=estimate(counts.tp, counts.tp + counts.fn),
        specificity=estimate(counts.tn, counts.tn + counts.fp),
        auc=auc,
        auc_ci=auc_ci,
        gate_extended=gate_limit is not None,
        created=created,
    )
    metadata = _site_metadata(parent, site, scores, probabilities, gate_limit, created)
    reference = site_reference(scores, probabilities, threshold, metadata.version, fingerprint)
    _write_version(model_dir, out_dir, metadata, reference)
    return SiteCalibrationResult(metadata=metadata, out_dir=out_dir, refused_left=len(scores.refused))


def _site_metadata(
    parent: ModelMetadata,
    site: SiteCalibration,
    scores: SiteScores,
    probabilities: np.ndarray,
    gate_limit: float | None,
    created: datetime,
) -> ModelMetadata:
    update: dict = {
        "version": site_version(parent.version, site.data_fingerprint, Rule.parse(site.rule), site.threshold, created),
        "threshold": site.threshold,
        "threshold_rule": f"site calibration: {Rule.parse(site.rule).describe}, on {sum(site.n.values())} of the "
        f"site's labelled X-rays",
        "site": site,
    }
    if parent.calibration is not None:
        ece_before = {
            **parent.calibration.ece_before,
            "site": expected_calibration_error(scores.labels, scores.probabilities),
        }
        ece_after = {**parent.calibration.ece_after, "site": expected_calibration_error(scores.labels, probabilities)}
        update["calibration"] = parent.calibration.model_copy(
            update={"temperature": site.temperature, "ece_before": ece_before, "ece_after": ece_after}
        )
    if gate_limit is not None and parent.gate is not None:
        update["gate"] = parent.gate.model_copy(
            update={
                "threshold": gate_limit,
                "rule": f"{parent.gate.rule}, raised by site calibration to the farthest of the site's X-rays "
                f"(within {GATE_EXTENSION_MAX}x the limit); the non-X-ray check set is still refused",
            }
        )
    return parent.model_copy(update=update)


def check_new_folder(out_dir: Path) -> None:
    """``DataError`` unless ``out_dir`` is new or empty: a model version is never written over another."""
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise DataError(f"{out_dir} already exists and is not empty; name a new folder for the new model version.")


@contextmanager
def staged_folder(out_dir: Path) -> Iterator[Path]:
    """A staging folder beside ``out_dir`` to write a model version into, renamed to ``out_dir`` when
    the block ends, removed if it fails: the new folder appears whole or not at all."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        staging.chmod(0o777 & ~_umask())  # mkdtemp makes it private; a model folder is not
        yield staging
        if out_dir.exists():
            out_dir.rmdir()  # empty, checked by check_new_folder
        staging.rename(out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _write_version(model_dir: Path, out_dir: Path, metadata: ModelMetadata, reference: DriftReference) -> None:
    """Copy the parent's weights and gate, write metadata, card and drift reference, then move into place whole."""
    from training.site.card import render_site_card

    with staged_folder(out_dir) as staging:
        for name in _COPIED:
            if (model_dir / name).exists():
                shutil.copy2(model_dir / name, staging / name)
        save_metadata(staging, metadata)
        save_reference(staging, reference)
        parent_card = model_dir / MODEL_CARD_FILE
        parent_text = parent_card.read_text() if parent_card.exists() else ""
        (staging / MODEL_CARD_FILE).write_text(render_site_card(metadata, parent_text))
