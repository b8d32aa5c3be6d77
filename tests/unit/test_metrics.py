"""Metrics, calibration and the threshold rule on hand-made cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pneumoscan.model.decision import calibrate
from training.calibration import expected_calibration_error, fit_temperature, youden_threshold
from training.metrics import evaluate_predictions
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


def test_youden_threshold_separates_the_classes():
    labels = np.array([0] * 6 + [1] * 6)
    probabilities = np.array([0.1, 0.2, 0.3, 0.35, 0.4, 0.62, 0.55, 0.6, 0.7, 0.8, 0.9, 0.95])
    threshold = youden_threshold(labels, probabilities)
    report = evaluate_predictions(labels, probabilities, threshold)
    # One normal (0.62) sits above the lowest pneumonia case (0.55). At 0.55: J = 1 + 5/6 - 1;
    # at 0.7, the next candidate keeping specificity 1: J = 4/6. So 0.55 wins.
    assert threshold == 0.55
    assert report.sensitivity == 1.0 and report.specificity == pytest.approx(5 / 6)
    # A threshold in the empty gap between perfectly separated classes keeps both rates at 1.
    separated = np.array([0.1, 0.2, 0.3, 0.7, 0.8, 0.9])
    report = evaluate_predictions(
        np.array([0, 0, 0, 1, 1, 1]), separated, youden_threshold(np.array([0, 0, 0, 1, 1, 1]), separated)
    )
    assert report.sensitivity == 1.0 and report.specificity == 1.0


def test_temperature_scaling_fixes_overconfidence():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 4000)
    # True log-odds of +-1, reported as +-4: four times too confident.
    true_logit = np.where(labels == 1, 1.0, -1.0) + rng.normal(0, 1.0, len(labels))
    true_probability = 1 / (1 + np.exp(-true_logit))
    labels = (rng.random(len(labels)) < true_probability).astype(int)
    reported = 1 / (1 + np.exp(-4 * true_logit))
    softmax = np.stack([1 - reported, reported], axis=1)
    temperature = fit_temperature(softmax, labels)
    assert temperature == pytest.approx(4.0, rel=0.1)
    before = expected_calibration_error(labels, reported)
    after = expected_calibration_error(labels, calibrate(softmax, temperature))
    assert after < before / 3
    # Scaling keeps the ranking: the same order, so the same AUC.
    assert np.array_equal(np.argsort(calibrate(softmax, temperature)), np.argsort(reported))


def test_expected_calibration_error_by_hand():
    # Two bins: 0.2 predicted where 0.5 is observed, 0.9 predicted where 1.0 is observed.
    labels = np.array([0, 1, 1, 1])
    probabilities = np.array([0.2, 0.2, 0.9, 0.9])
    assert expected_calibration_error(labels, probabilities) == pytest.approx((2 * 0.3 + 2 * 0.1) / 4)


def test_class_weights_balance_the_classes():
    labels = np.array([0] * 25 + [1] * 75)
    weights = class_weights_for(labels)
    assert weights[0] * 25 == pytest.approx(weights[1] * 75)
    assert weights[0] == pytest.approx(2.0)
    with pytest.raises(ValueError):
        class_weights_for(np.array([1, 1, 1]))
