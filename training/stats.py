"""Intervals and operating points for a site's labelled sample; PNEUMONIA is the positive class.

- ``wilson_interval``: the 95% interval of a proportion (Wilson score), sound at small n and at 0 or 1.
- ``bootstrap_auc``: AUC with a 95% percentile interval from a stratified bootstrap (each resample
  keeps the sample's count of each class), seeded.
- ``choose_threshold``: a threshold by rule (``youden``, ``sensitivity:X``, ``specificity:X``),
  placed halfway between two neighbouring scores, so the sample's own images are classified as
  the rule intends and the threshold does not sit on one of them.
- ``cross_validated``: the rule's out-of-sample sensitivity and specificity: chosen on k-1
  stratified folds, counted on the held fold, pooled over the folds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import roc_auc_score

BOOTSTRAP_RESAMPLES = 2000
DEFAULT_FOLDS = 5
RULE_NAMES = ("youden", "sensitivity", "specificity")


@dataclass(frozen=True)
class Rule:
    """How a threshold is chosen: ``youden``, or the target of ``sensitivity`` or ``specificity``."""

    kind: str
    target: float | None = None

    @classmethod
    def parse(cls, text: str) -> Rule:
        """``youden``, ``sensitivity:0.95`` or ``specificity:0.90``; ``ValueError`` otherwise."""
        kind, _, target = text.strip().lower().partition(":")
        if kind == "youden" and not target:
            return cls("youden")
        if kind in ("sensitivity", "specificity") and target:
            try:
                value = float(target)
            except ValueError:
                value = float("nan")
            if 0.0 < value < 1.0:
                return cls(kind, value)
        raise ValueError(
            f"Unknown rule {text!r}; use youden, sensitivity:X or specificity:X with 0 < X < 1 "
            "(for example sensitivity:0.95)."
        )

    def __str__(self) -> str:
        return self.kind if self.target is None else f"{self.kind}:{self.target:g}"

    @property
    def describe(self) -> str:
        if self.kind == "youden":
            return "Youden's J: the highest sensitivity + specificity"
        if self.kind == "sensitivity":
            return f"the highest threshold whose sensitivity reaches {self.target:g}"
        return f"the lowest threshold whose specificity reaches {self.target:g}"


def _checked(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(labels).astype(int)
    scores = np.asarray(scores, dtype=np.float64)
    if labels.shape != scores.shape or labels.ndim != 1:
        raise ValueError("labels and scores must be 1-D arrays of one length.")
    if not np.isin(labels, (0, 1)).all():
        raise ValueError("labels must be 0 (NORMAL) or 1 (PNEUMONIA).")
    return labels, scores


def bootstrap_auc(
    labels: np.ndarray, scores: np.ndarray, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0
) -> tuple[float, tuple[float, float]]:
    """(AUC, 95% percentile interval) from a stratified bootstrap; needs both classes."""
    labels, scores = _checked(labels, scores)
    positives, negatives = scores[labels == 1], scores[labels == 0]
    if len(positives) == 0 or len(negatives) == 0:
        raise ValueError("AUC needs images of both classes.")
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}.")
    rng = np.random.default_rng(seed)
    auc = float(roc_auc_score(labels, scores))
    values = np.empty(resamples)
    for index in range(resamples):
        p = rng.choice(positives, len(positives))
        n = np.sort(rng.choice(negatives, len(negatives)))
        # Mann-Whitney: P(positive > negative) + half the ties.
        below = np.searchsorted(n, p, side="left")
        at_or_below = np.searchsorted(n, p, side="right")
        values[index] = (below.sum() + 0.5 * (at_or_below - below).sum()) / (len(p) * len(n))
    low, high = np.percentile(values, [2.5, 97.5])
    return auc, (float(low), float(high))


@dataclass(frozen=True)
class Counts:
    """The confusion matrix at a threshold."""

    tp: int
    fp: int
    tn: int
    fn: int

    @classmethod
    def at(cls, labels: np.ndarray, scores: np.ndarray, threshold: float) -> Counts:
        labels, scores = _checked(labels, scores)
        flagged, positive = scores >= threshold, labels == 1
        return cls(
            tp=int(np.sum(flagged & positive)),
            fp=int(np.sum(flagged & ~positive)),
            tn=int(np.sum(~flagged & ~positive)),
            fn=int(np.sum(~flagged & positive)),
        )

    def __add__(self, other: Counts) -> Counts:
        return Counts(self.tp + other.tp, self.fp + other.fp, self.tn + other.tn, self.fn + other.fn)

    def proportions(self) -> dict[str, tuple[int, int]]:
        """(successes, n) of sensitivity, specificity, PPV and NPV."""
        return {
            "sensitivity": (self.tp, self.tp + self.fn),
            "specificity": (self.tn, self.tn + self.fp),
            "ppv": (self.tp, self.tp + self.fp),
            "npv": (self.tn, self.tn + self.fn),
        }


def cuts_and_rates(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(thresholds, sensitivity, specificity) for every distinct way to split the sample, high to
    low: above the top score, halfway between neighbouring distinct scores, and at the lowest."""
    distinct, inverse = np.unique(scores, return_inverse=True)
    distinct, inverse = distinct[::-1], len(distinct) - 1 - inverse
    positives = np.bincount(inverse, weights=labels == 1, minlength=len(distinct))
    negatives = np.bincount(inverse, weights=labels == 0, minlength=len(distinct))
    # Cut j flags the j highest distinct scores.
    sensitivity = np.concatenate([[0.0], np.cumsum(positives)]) / positives.sum()
    specificity = 1.0 - np.concatenate([[0.0], np.cumsum(negatives)]) / negatives.sum()
    cuts = np.concatenate([[np.nextafter(distinct[0], np.inf)], (distinct[:-1] + distinct[1:]) / 2, [distinct[-1]]])
    return cuts, sensitivity, specificity


def choose_threshold(labels: np.ndarray, scores: np.ndarray, rule: Rule) -> float | None:
    """The rule's threshold on ``scores``; None when no threshold reaches the rule's target."""
    labels, scores = _checked(labels, scores)
    if not (labels == 1).any() or not (labels == 0).any():
        raise ValueError("Choosing a threshold needs images of both classes.")
    cuts, sensitivity, specificity = cuts_and_rates(labels, scores)
    if rule.kind == "youden":
        return float(min(cuts[int(np.argmax(sensitivity + specificity))], 1.0))
    if rule.target is None:
        raise ValueError(f"The rule {rule} needs a target (for example sensitivity:0.95).")
    if rule.kind == "sensitivity":
        reaching = np.flatnonzero(sensitivity >= rule.target - 1e-12)
        return float(min(cuts[reaching[0]], 1.0)) if len(reaching) else None  # cuts run high to low
    reaching = np.flatnonzero(specificity >= rule.target - 1e-12)
    return float(min(cuts[reaching[-1]], 1.0)) if len(reaching) else None


def stratified_folds(labels: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """A fold number per image, each class dealt round-robin over the folds after a seeded shuffle."""
    labels = np.asarray(labels).astype(int)
    rng = np.random.default_rng(seed)
    assignment = np.empty(len(labels), dtype=int)
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        rng.shuffle(members)
        assignment[members] = np.arange(len(members)) % folds
    return assignment


def cross_validated(
    labels: np.ndarray, scores: np.ndarray, rule: Rule, folds: int = DEFAULT_FOLDS, seed: int = 0
) -> tuple[Counts, list[float]] | None:
    """Pooled held-fold counts of the rule chosen on the other folds, and each fold's threshold;
    None when some fold's training part cannot reach the rule's target."""
    labels, scores = _checked(labels, scores)
    if folds < 2:
        raise ValueError(f"folds must be at least 2, got {folds}.")
    assignment = stratified_folds(labels, folds, seed)
    total, thresholds = Counts(0, 0, 0, 0), []
    for fold in range(folds):
        held = assignment == fold
        threshold = choose_threshold(labels[~held], scores[~held], rule)
        if threshold is None:
            return None
        thresholds.append(threshold)
        total = total + Counts.at(labels[held], scores[held], threshold)
    return total, thresholds


def needed_per_class(rule: Rule, minimum: int) -> dict[int, int]:
    """Scored images each class needs before the rule is applied: ``minimum`` of each, and for a
    target rate enough images of its class that at least three fall on the wrong side at the
    target, so the threshold does not rest on one image."""
    needed = {0: minimum, 1: minimum}
    if rule.target is not None:
        label = 1 if rule.kind == "sensitivity" else 0
        needed[label] = max(minimum, math.ceil(3 / (1 - rule.target) - 1e-9))
    return needed
