"""The input gate of an adapted model, refitted on its own features.

Fine-tuning moves the features the gate measures (a few epochs put the site's own X-rays past the
parent's limit), so the gate's mean and shrunk covariance are fitted again on the adapted
features of the site's X-rays, of ``STRESSED_COPIES`` augmented copies of each (the acquisition
variation the model is trained to ignore, which a few hundred X-rays alone do not span), and of
the training X-rays when ``--train-data`` gives them. Its limit is the farthest site X-ray *out of
fold* (each fold measured by a gate fitted without it or its copies, grouped by patient as the
fine-tuning was) and the farthest validation X-ray, so that new X-rays of the site are not refused
merely for being new. ``training.adapt.pipeline`` then checks that every
image of the non-X-ray check set is still refused.
"""

from __future__ import annotations

import numpy as np
from sklearn.covariance import LedoitWolf

from pneumoscan.imaging.gate import OodGate
from pneumoscan.imaging.preprocess import plane_to_input
from training.gate.fit import pooled_features

STRESSED_COPIES = 2
STRESS_SEED = 2000
GATE_RULE = (
    "refitted on the adapted features of the site's X-rays and two augmented copies of each{training}; limit at "
    "the farthest site X-ray out of fold{validation}"
)


def _fitted(features: np.ndarray, layers: tuple[str, ...]) -> OodGate:
    estimate = LedoitWolf().fit(np.sqrt(np.maximum(features, 0.0)))
    return OodGate(layers=layers, mean=estimate.location_, precision=estimate.precision_, threshold=1.0)


def refit_gate(
    model,
    layers: tuple[str, ...],
    site_planes: np.ndarray,
    assignment: np.ndarray,
    *,
    train_inputs: np.ndarray | None = None,
    validation_inputs: np.ndarray | None = None,
) -> tuple[OodGate, str]:
    """(the refitted gate, the rule that set it) for ``model``; ``assignment`` is the fold per site image."""
    from training.augment import stressed_inputs

    site = pooled_features(model, layers, plane_to_input(site_planes))
    copies = [
        pooled_features(model, layers, stressed_inputs(site_planes, STRESS_SEED + copy))
        for copy in range(STRESSED_COPIES)
    ]
    train = pooled_features(model, layers, train_inputs) if train_inputs is not None else site[:0]
    farthest = 0.0
    for fold in np.unique(assignment):
        held = assignment == fold
        gate = _fitted(np.concatenate([train, site[~held], *(copy[~held] for copy in copies)]), layers)
        farthest = max(farthest, float(gate.distances(site[held]).max()))
    gate = _fitted(np.concatenate([train, site, *copies]), layers)
    if validation_inputs is not None and len(validation_inputs):
        farthest = max(farthest, float(gate.distances(pooled_features(model, layers, validation_inputs)).max()))
    rule = GATE_RULE.format(
        training=" and the parent's training X-rays" if train_inputs is not None else "",
        validation=" and the farthest validation X-ray" if validation_inputs is not None else "",
    )
    return OodGate(layers=layers, mean=gate.mean, precision=gate.precision, threshold=farthest), rule
