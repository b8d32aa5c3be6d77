"""The input gate of an adapted model, refitted on its own features.

Fine-tuning moves the features the gate measures (a few epochs put the site's own X-rays past the
parent's limit), so the gate's mean and shrunk covariance are fitted again on the adapted
features of the site's X-rays, of ``STRESSED_COPIES`` augmented copies of each (the acquisition
variation the model is trained to ignore, which a few hundred X-rays alone do not span), and of
the training X-rays when ``--train-data`` gives them. Its limit is the farthest site X-ray *out of
fold* (each fold measured by a gate fitted without it or its copies, grouped by patient as the
fine-tuning was) and the farthest validation X-ray, so that new X-rays of the site are not refused
merely for being new (``checked_gate``). A refitted classifier leaves the features as they were,
so the parent's gate stays (``kept_gate``). Either gate must still refuse every image of the
non-X-ray check set and at most ``MAX_SITE_REFUSED`` of the site's X-rays, or nothing is written.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from sklearn.covariance import LedoitWolf

from pneumoscan.errors import DataError
from pneumoscan.imaging.gate import OodGate
from pneumoscan.imaging.preprocess import plane_to_input
from pneumoscan.model.predictor import Predictor
from pneumoscan.schemas import ModelMetadata
from training.gate.fit import feature_layers, pooled_features
from training.site.calibrate import non_xrays_passing

if TYPE_CHECKING:
    from training.adapt.folds import OutOfFold
    from training.adapt.sample import SiteSample

MAX_SITE_REFUSED = 0.01


class AdaptationRefused(DataError):
    """The adapted model would break the input gate; nothing was written."""

    code = "adaptation_refused"


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


def checked_gate(model, base: Predictor, sample: SiteSample, oof: OutOfFold, threshold: float, temperature: float):
    """(the adapted predictor with its refitted gate, its rule, each site X-ray's distance / the limit);
    ``AdaptationRefused`` when a non-X-ray of the check set would pass or too many of the site's
    X-rays would be refused."""
    gate, rule = refit_gate(
        model,
        base.gate.layers if base.gate is not None else feature_layers(model),
        sample.planes,
        oof.assignment,
        train_inputs=plane_to_input(sample.extra[0]) if sample.extra is not None else None,
        validation_inputs=plane_to_input(sample.validation[0]) if sample.validation is not None else None,
    )
    adapted = Predictor(model, threshold=threshold, model_version="unsaved", gate=gate, temperature=temperature)
    ratios = adapted.score(plane_to_input(sample.planes))[:, 1] / gate.threshold
    refused = int(np.sum(ratios > 1))
    _refuse_if_broken(
        adapted, refused, len(sample.planes), "The adapted model's features no longer suit the input gate", _MORE_XRAYS
    )
    return adapted, rule, ratios


def kept_gate(model, base: Predictor, parent: ModelMetadata, sample: SiteSample, threshold: float, temperature: float):
    """As ``checked_gate``, with the parent's gate, which measures features a refitted classifier
    leaves as they were: each site X-ray's distance / the limit is the one the parent scored it at
    (the site's X-rays it refuses are those the parent refused, left out of the sample)."""
    if base.gate is None or parent.gate is None:
        raise ValueError("kept_gate needs a parent with an input gate.")
    adapted = Predictor(model, threshold=threshold, model_version="unsaved", gate=base.gate, temperature=temperature)
    ratios = sample.scores.ood_scores
    refused = int(np.sum(ratios > 1))
    _refuse_if_broken(
        adapted, refused, len(sample.planes), "The input gate the adaptation keeps (the parent's) fails", _REFIT_GATE
    )
    return adapted, parent.gate.rule, ratios


_MORE_XRAYS = "--train-data (the model's training folder) gives the gate more X-rays to learn from"
_REFIT_GATE = "--method fine-tune refits the gate on the site's X-rays (with --train-data, on the training X-rays too)"


def _refuse_if_broken(adapted: Predictor, refused: int, total: int, opening: str, remedy: str) -> None:
    if adapted.gate is None:
        raise ValueError("an adapted model needs an input gate.")
    passing = non_xrays_passing(adapted, adapted.gate.threshold)
    problems = []
    if passing:
        problems.append(f"{len(passing)} image(s) of the non-X-ray check set would pass ({', '.join(passing[:5])})")
    if refused > MAX_SITE_REFUSED * total:
        problems.append(f"{refused} of {total} site X-rays would be refused (at most {MAX_SITE_REFUSED:.0%})")
    if problems:
        raise AdaptationRefused(f"{opening}: " + "; ".join(problems) + f". Nothing was written; {remedy}.")
