"""Out-of-fold fine-tuning: how many epochs a site's sample supports, and what they give.

The site's scored X-rays are dealt into folds by patient (``StratifiedGroupKFold``: no patient in
two folds, each fold with both classes). For each fold the model is fine-tuned on the others and
the held fold is scored after every epoch, so each image has one held-out answer per epoch count.
The epoch count is the one whose pooled held-out answers rank best (AUC, averaged with the
neighbouring epochs'; ties go to fewer epochs);
the temperature and the threshold are then chosen on those held-out answers, never on answers of
a model that saw the image.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from pneumoscan.model.decision import calibrate
from pneumoscan.schemas import SiteAdaptation
from training.adapt.finetune import FineTuning, fine_tune, softmax_of
from training.calibration import fit_temperature
from training.data import Example, patient_id
from training.stats import Rule, choose_threshold

_KERMANY_NAME = re.compile(r"^(person\d+_|(NORMAL2-)?IM-\d+-)", re.IGNORECASE)


@dataclass(frozen=True)
class Grouping:
    groups: np.ndarray  # one group id per image
    source: str  # "patient column", "file names" or "one file per group"

    @property
    def count(self) -> int:
        return len(set(self.groups.tolist()))


def grouping(examples: list[Example], patients: dict[Path, str] | None) -> Grouping:
    """Patients from the labels file's ``patient`` column; else from Kermany-style file names;
    else each file its own group (the report says which)."""
    if patients:
        return Grouping(np.array([patients[e.path] for e in examples]), "patient column")
    if examples and all(_KERMANY_NAME.match(e.path.name) for e in examples):
        return Grouping(np.array([patient_id(e.path.name) for e in examples]), "file names")
    return Grouping(np.array([e.path.as_posix() for e in examples]), "one file per group")


def patient_folds(labels: np.ndarray, groups: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """A fold number per image; every image of a patient in the same fold, classes stratified."""
    from sklearn.model_selection import StratifiedGroupKFold

    assignment = np.empty(len(labels), dtype=int)
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    for fold, (_, held) in enumerate(splitter.split(np.zeros(len(labels)), labels, groups)):
        assignment[held] = fold
    return assignment


@dataclass(frozen=True)
class OutOfFold:
    """Held-out softmax outputs per epoch count (row 0: the model as it was), and the choice."""

    assignment: np.ndarray  # fold per image
    softmax: np.ndarray  # (epochs + 1, n, 2)
    auc_by_epoch: list[float]
    epochs: int  # chosen

    @property
    def chosen(self) -> np.ndarray:
        return self.softmax[self.epochs]


def choose_epochs(auc_by_epoch: list[float]) -> int:
    """The epoch count (at least 1) whose AUC, averaged with its neighbours', is highest; fewer
    epochs win ties. One fold-pooled AUC on a few hundred images moves by a few thousandths from
    epoch to epoch, so a lone peak is no reason to pick an epoch."""
    last = len(auc_by_epoch) - 1
    if last < 1:
        raise ValueError("choosing epochs needs the AUC after at least one epoch.")

    def smoothed(epoch: int) -> float:
        window = auc_by_epoch[max(1, epoch - 1) : min(last, epoch + 1) + 1]
        return sum(window) / len(window)

    best = max(smoothed(epoch) for epoch in range(1, last + 1))
    return next(epoch for epoch in range(1, last + 1) if smoothed(epoch) >= best - 1e-9)


def operating_point(softmax: np.ndarray, labels: np.ndarray, rule: Rule) -> tuple[float, np.ndarray, float | None]:
    """(temperature, calibrated P(pneumonia), threshold) chosen on held-out softmax answers (n, 2):
    the temperature that fits them best, then the threshold ``rule`` picks on them (None when none
    reaches it)."""
    temperature = fit_temperature(softmax, labels)
    probabilities = calibrate(softmax, temperature)
    return temperature, probabilities, choose_threshold(labels, probabilities, rule)


def no_gain(auc_by_epoch: list[float], epochs: int, step: str | None = None) -> str | None:
    """A warning when, out of fold, the chosen step (``epochs`` of fine-tuning, or the ``step`` it
    names) ranks the sample no better than the model it started from (step 0 is the parent, which
    never saw the sample); None when it does."""
    before, after = auc_by_epoch[0], auc_by_epoch[epochs]
    if after > before:
        return None
    return (
        f"Out of fold, adapting ranked this sample no better than the model it started from (AUC {before:.3f} "
        f"before, {after:.3f} after {step or f'{epochs} epoch(s)'}): the sample gives adaptation nothing the model "
        "lacks. `pneumoscan calibrate` moves the operating point without changing the weights."
    )


def steps_of(adaptation: SiteAdaptation) -> tuple[list[float], int, str | None]:
    """``no_gain``'s arguments for a written adaptation: the pooled out-of-fold AUC of the parent and
    of each step tried (epochs, or the classifier's strengths), the chosen step, and its name."""
    if adaptation.method == "classifier":
        chosen = adaptation.l2_sp_tried.index(adaptation.l2_sp) + 1
        return [adaptation.auc_by_epoch[0], *adaptation.auc_by_l2_sp], chosen, f"L2-SP {adaptation.l2_sp:g}"
    return adaptation.auc_by_epoch, adaptation.epochs, None


def out_of_fold(
    load_model,
    planes: np.ndarray,
    labels: np.ndarray,
    groups: np.ndarray,
    *,
    folds: int,
    max_epochs: int,
    seed: int,
    settings: FineTuning,
    extra: tuple[np.ndarray, np.ndarray] | None = None,
    progress=None,
) -> OutOfFold:
    """Fine-tune a fresh ``load_model()`` per fold for up to ``max_epochs``, scoring the held fold
    after each epoch; ``progress.update(1)`` after each fold-epoch."""
    assignment = patient_folds(labels, groups, folds, seed)
    softmax = np.zeros((max_epochs + 1, len(labels), 2), dtype=np.float64)
    for fold in range(folds):
        held = assignment == fold
        model = load_model()
        softmax[0, held] = softmax_of(model, planes[held])

        def score_held(epoch: int, tuned, held=held) -> None:
            softmax[epoch, held] = softmax_of(tuned, planes[held])
            if progress is not None:
                progress.update(1)

        fine_tune(
            model,
            planes[~held],
            labels[~held],
            max_epochs,
            seed + fold,
            settings,
            extra=extra,
            after_epoch=score_held,
        )
    auc_by_epoch = [float(roc_auc_score(labels, softmax[epoch, :, 1])) for epoch in range(max_epochs + 1)]
    chosen = choose_epochs(auc_by_epoch)
    return OutOfFold(assignment=assignment, softmax=softmax, auc_by_epoch=auc_by_epoch, epochs=chosen)
