"""Temperature scaling, expected calibration error, and the shift-tolerant threshold rule."""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar
from sklearn.metrics import roc_curve

from pneumoscan.model.decision import calibrate

ECE_BINS = 10


def fit_temperature(softmax: np.ndarray, labels: np.ndarray) -> float:
    """The softmax temperature minimising the negative log-likelihood of ``labels`` (Guo et al. 2017)."""
    labels = np.asarray(labels)

    def nll(log_temperature: float) -> float:
        p = np.clip(calibrate(softmax, float(np.exp(log_temperature))), 1e-12, 1 - 1e-12)
        return float(-np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p)))

    result = minimize_scalar(nll, bounds=(np.log(0.05), np.log(20.0)), method="bounded")
    return float(np.exp(result.x))


def reliability(labels: np.ndarray, probabilities: np.ndarray, bins: int = ECE_BINS):
    """(mean predicted, observed rate, count) per equal-width probability bin."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.digitize(probabilities, edges[1:-1]), 0, bins - 1)
    counts = np.bincount(index, minlength=bins)
    predicted = np.bincount(index, weights=probabilities, minlength=bins) / np.maximum(counts, 1)
    observed = np.bincount(index, weights=labels, minlength=bins) / np.maximum(counts, 1)
    return predicted, observed, counts


def expected_calibration_error(labels: np.ndarray, probabilities: np.ndarray, bins: int = ECE_BINS) -> float:
    predicted, observed, counts = reliability(np.asarray(labels, float), np.asarray(probabilities, float), bins)
    return float(np.sum(counts * np.abs(predicted - observed)) / max(1, counts.sum()))


def youden_threshold(labels: np.ndarray, probabilities: np.ndarray) -> float:
    """The threshold with the highest sensitivity + specificity (Youden's J).

    On stressed validation, where both classes' scores spread as they do on X-rays from other
    machines and periods, this point does not depend on the class balance and sits between the
    classes rather than at the edge of the positives, so specificity survives a shift of the
    normal cases towards higher scores.
    """
    fpr, tpr, thresholds = roc_curve(labels, probabilities)
    best = int(np.argmax(tpr - fpr))
    return float(min(thresholds[best], 1.0))


def sensitivity_threshold(labels: np.ndarray, probabilities: np.ndarray, target: float) -> float:
    """The highest threshold at which at least ``target`` of the positives score at or above it.

    Youden's J on in-house data sits where the in-house normals end; on X-rays of another series
    or period the normals score higher while the ranking holds, so a threshold tied to the
    pneumonia scores' lower tail keeps a known sensitivity and gives up less specificity there.
    """
    if not 0.0 < target <= 1.0:
        raise ValueError(f"target sensitivity must be in (0, 1], got {target}.")
    positives = np.sort(np.asarray(probabilities, float)[np.asarray(labels) == 1])
    if len(positives) == 0:
        raise ValueError("No positive examples to set a sensitivity target on.")
    allowed_misses = int(np.floor(len(positives) * (1.0 - target) + 1e-9))
    return float(positives[allowed_misses])
