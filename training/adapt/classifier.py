"""Refitting only a trained model's classifier (its last, softmax layer) on a site's X-rays.

The convolutions stay as they were, so the features the input gate measures and the layer
Grad-CAM reads do not move: the parent's gate still holds. What is fitted is a correction to the
parent's logit, ``logit = parent logit + w . z + c`` over the classifier's inputs ``z`` (the pooled
features, standardised over the sample), by a class-balanced logistic loss plus ``strength``
times ``|w|^2``: L2-SP (Li et al., 2018) on the classifier, whose starting point ``w = 0`` is the
parent itself. The correction folds back into the softmax layer's kernel and bias, so the adapted
model has the parent's architecture and one model call per batch.

Out of fold the strengths ``STRENGTHS`` are tried from the strongest (nearest the parent) to
the weakest, as fine-tuning tries epochs one after another, and chosen the same way
(``training.adapt.folds.choose_epochs``: the step whose pooled out-of-fold AUC, averaged with its
neighbours', is highest; ties go to the stronger).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize
from scipy.special import expit
from sklearn.metrics import roc_auc_score

from pneumoscan import CLASS_NAMES
from pneumoscan.imaging.preprocess import plane_to_input
from training.adapt.finetune import class_weights
from training.adapt.folds import OutOfFold, choose_epochs, patient_folds

STRENGTHS = (3.0, 1.0, 0.3, 0.1, 0.03, 0.01)


@dataclass(frozen=True)
class Correction:
    """What the classifier's logit gains: ``weights`` over its raw input features, plus ``bias``."""

    weights: np.ndarray
    bias: float


def _head(model):
    import keras

    head = model.layers[-1]
    if not isinstance(head, keras.layers.Dense) or head.units != len(CLASS_NAMES):
        raise ValueError(f"{model.name}: the last layer {head.name!r} is not a {len(CLASS_NAMES)}-class Dense layer.")
    return head


def features_and_logits(model, planes: np.ndarray, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """(the classifier's input features (n, k), the parent's logit of PNEUMONIA against NORMAL (n,))
    on uint8 ``planes``, without augmentation."""
    import keras

    head = _head(model)
    reader = keras.Model(model.input, head.input)
    features = np.concatenate(
        [
            np.asarray(reader(plane_to_input(planes[start : start + batch_size]), training=False), dtype=np.float64)
            for start in range(0, len(planes), batch_size)
        ]
    )
    kernel, bias = (np.asarray(value, dtype=np.float64) for value in head.get_weights())
    return features, features @ (kernel[:, 1] - kernel[:, 0]) + (bias[1] - bias[0])


def fit_correction(features: np.ndarray, logits: np.ndarray, labels: np.ndarray, strength: float) -> Correction:
    """The correction to ``logits`` that minimises the class-balanced logistic loss on ``labels``
    plus ``strength`` times the squared norm of its weights over standardised features."""
    mean = features.mean(axis=0)
    scale = features.std(axis=0)
    scale = np.where(scale > 1e-6, scale, 1.0)
    standard = (features - mean) / scale
    weights = class_weights(labels).astype(np.float64)
    weights /= weights.sum()
    targets = labels.astype(np.float64)

    def objective(parameters: np.ndarray) -> tuple[float, np.ndarray]:
        w, c = parameters[:-1], parameters[-1]
        z = logits + standard @ w + c
        loss = float(np.sum(weights * (np.logaddexp(0.0, z) - targets * z)) + strength * w @ w)
        residual = weights * (expit(z) - targets)
        return loss, np.append(standard.T @ residual + 2.0 * strength * w, residual.sum())

    start = np.zeros(features.shape[1] + 1)
    solution = minimize(objective, start, jac=True, method="L-BFGS-B", options={"maxiter": 2000}).x
    raw = solution[:-1] / scale
    return Correction(weights=raw, bias=float(solution[-1] - mean @ raw))


def corrected(logits: np.ndarray, features: np.ndarray, correction: Correction) -> np.ndarray:
    """Softmax outputs (n, 2) of the corrected classifier."""
    pneumonia = expit(logits + features @ correction.weights + correction.bias)
    return np.stack([1.0 - pneumonia, pneumonia], axis=1)


def apply_correction(model, correction: Correction):
    """Fold ``correction`` into the model's softmax layer (changed in place; the model is returned):
    half of it raises the PNEUMONIA logit and half lowers the NORMAL one."""
    head = _head(model)
    kernel, bias = (np.asarray(value, dtype=np.float64) for value in head.get_weights())
    kernel[:, 1] += correction.weights / 2
    kernel[:, 0] -= correction.weights / 2
    bias[1] += correction.bias / 2
    bias[0] -= correction.bias / 2
    head.set_weights([kernel.astype(np.float32), bias.astype(np.float32)])
    return model


def out_of_fold_classifier(
    features: np.ndarray,
    logits: np.ndarray,
    labels: np.ndarray,
    groups: np.ndarray,
    *,
    folds: int,
    seed: int,
    strengths: tuple[float, ...] = STRENGTHS,
) -> OutOfFold:
    """Held-out softmax outputs of the parent (step 0) and of each strength (steps 1, 2, ...),
    the classifier refitted on the other folds by patient, and the chosen step."""
    assignment = patient_folds(labels, groups, folds, seed)
    softmax = np.zeros((len(strengths) + 1, len(labels), 2), dtype=np.float64)
    softmax[0, :, 1] = expit(logits)
    softmax[0, :, 0] = 1.0 - softmax[0, :, 1]
    for fold in range(folds):
        held = assignment == fold
        for step, strength in enumerate(strengths, start=1):
            correction = fit_correction(features[~held], logits[~held], labels[~held], strength)
            softmax[step, held] = corrected(logits[held], features[held], correction)
    auc_by_step = [float(roc_auc_score(labels, softmax[step, :, 1])) for step in range(len(strengths) + 1)]
    return OutOfFold(
        assignment=assignment, softmax=softmax, auc_by_epoch=auc_by_step, epochs=choose_epochs(auc_by_step)
    )


def chosen_strength(oof: OutOfFold, strengths: tuple[float, ...] = STRENGTHS) -> float:
    """The strength of the step ``out_of_fold_classifier`` chose."""
    return strengths[oof.epochs - 1]


def refit_classifier(
    features: np.ndarray, logits: np.ndarray, labels: np.ndarray, groups: np.ndarray, *, folds: int, seed: int
) -> tuple[OutOfFold, Correction]:
    """(the out-of-fold answers, the correction fitted on the whole sample at the strength they chose)."""
    oof = out_of_fold_classifier(features, logits, labels, groups, folds=folds, seed=seed)
    return oof, fit_correction(features, logits, labels, chosen_strength(oof))
