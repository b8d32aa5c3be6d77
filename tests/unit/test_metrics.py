"""Metrics and threshold choice on hand-made cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from training.metrics import choose_threshold, evaluate_predictions
from training.train import class_weights_for


def test_confusion_and_rates_by_hand():
    labels = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0])
    probabilities = np.array([0.9, 0.8, 0.6, 0.2, 0.7, 0.4, 0.3, 0.2, 0.1, 0.05])
    report = evaluate_predictions(labels, probabilities, threshold=0.5)
    c = report.confusion
    assert (c.tp, c.fn, c.fp, c.tn) == (3, 1, 1, 5)
    assert report.n == 10
    assert report.accuracy == pytest.approx(0.8)
    assert report.sensitivity == pytest.approx(0.75)
    assert report.specificity == pytest.approx(5 / 6)
    # AUC by counting: of the 24 positive/negative pairs, the positive ranks higher in 19.5
    # (ties count one half).
    assert report.auc == pytest.approx(19.5 / 24)


def test_threshold_is_inclusive():
    report = evaluate_predictions(np.array([1, 0]), np.array([0.5, 0.49]), threshold=0.5)
    assert report.confusion.tp == 1 and report.confusion.tn == 1


def test_perfect_and_inverted_rankings():
    labels = np.array([0, 0, 1, 1])
    assert evaluate_predictions(labels, np.array([0.1, 0.2, 0.8, 0.9]), 0.5).auc == 1.0
    assert evaluate_predictions(labels, np.array([0.9, 0.8, 0.2, 0.1]), 0.5).auc == 0.0


def test_single_class_has_undefined_auc_and_specificity():
    report = evaluate_predictions(np.array([1, 1]), np.array([0.9, 0.1]), 0.5)
    assert math.isnan(report.auc) and math.isnan(report.specificity)
    assert report.sensitivity == 0.5


def test_choose_threshold_reaches_target_sensitivity():
    labels = np.array([1] * 20 + [0] * 10)
    probabilities = np.concatenate([np.linspace(0.05, 1.0, 20), np.linspace(0.0, 0.5, 10)])
    threshold = choose_threshold(labels, probabilities, 0.95)
    report = evaluate_predictions(labels, probabilities, threshold)
    assert report.sensitivity >= 0.95
    # It is the highest such threshold: the next positive up would drop below the target.
    positives = np.sort(probabilities[labels == 1])
    assert threshold == positives[1]
    assert evaluate_predictions(labels, probabilities, positives[2]).sensitivity < 0.95
    assert choose_threshold(labels, probabilities, 1.0) == positives[0]


def test_choose_threshold_rejects_bad_input():
    with pytest.raises(ValueError):
        choose_threshold(np.array([0, 0]), np.array([0.1, 0.2]), 0.95)
    with pytest.raises(ValueError):
        choose_threshold(np.array([1, 0]), np.array([0.1, 0.2]), 0.0)


def test_class_weights_balance_the_classes():
    labels = np.array([0] * 25 + [1] * 75)
    weights = class_weights_for(labels)
    assert weights[0] * 25 == pytest.approx(weights[1] * 75)
    assert weights[0] == pytest.approx(2.0)
    with pytest.raises(ValueError):
        class_weights_for(np.array([1, 1, 1]))
