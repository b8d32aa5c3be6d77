"""Metrics with PNEUMONIA as the positive class."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

from pneumoscan.schemas import Confusion, EvaluationReport


def evaluate_predictions(labels: np.ndarray, probabilities: np.ndarray, threshold: float) -> EvaluationReport:
    labels = np.asarray(labels).astype(int)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if labels.shape != probabilities.shape or labels.ndim != 1 or len(labels) == 0:
        raise ValueError("labels and probabilities must be equal-length, non-empty 1-D arrays.")
    predicted = probabilities >= threshold
    positive = labels == 1
    tp = int(np.sum(predicted & positive))
    fp = int(np.sum(predicted & ~positive))
    tn = int(np.sum(~predicted & ~positive))
    fn = int(np.sum(~predicted & positive))
    both_classes = 0 < positive.sum() < len(labels)
    return EvaluationReport(
        n=len(labels),
        auc=float(roc_auc_score(labels, probabilities)) if both_classes else float("nan"),
        accuracy=(tp + tn) / len(labels),
        sensitivity=tp / (tp + fn) if tp + fn else float("nan"),
        specificity=tn / (tn + fp) if tn + fp else float("nan"),
        threshold=threshold,
        confusion=Confusion(tp=tp, fp=fp, tn=tn, fn=fn),
    )


def roc_points(labels: np.ndarray, probabilities: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """False-positive and true-positive rates along the ROC curve."""
    fpr, tpr, _ = roc_curve(labels, probabilities)
    return fpr, tpr
