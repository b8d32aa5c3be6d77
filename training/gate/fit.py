"""Fitting the input gate (``pneumoscan.imaging.gate``) on a trained model's features."""

from __future__ import annotations

import numpy as np
from sklearn.covariance import LedoitWolf

from pneumoscan.errors import PneumoscanError
from pneumoscan.imaging.gate import OodGate, with_features
from pneumoscan.imaging.preprocess import load_plane, plane_to_input
from pneumoscan.model.predictor import Predictor
from pneumoscan.schemas import GateRefusals

GATE_RULE = "the largest distance among the validation X-rays (none of them is refused)"


def feature_layers(model) -> tuple[str, ...]:
    """Every convolution stage after its activation, from the first to the last."""
    from pneumoscan.model.gradcam import stage_layers

    convolutions = {"Conv2D", "SeparableConv2D", "DepthwiseConv2D", "Activation", "ReLU"}
    return tuple(
        layer.name
        for _, layer in stage_layers(model)
        if type(layer).__name__ in convolutions and len(layer.output.shape) == 4
    )


def pooled_features(model, layers: tuple[str, ...], inputs: np.ndarray, batch_size: int = 128) -> np.ndarray:
    """The gate's pooled features (n, d) of ``inputs``, a batch at a time."""
    network = with_features(model, layers)
    return np.concatenate(
        [
            np.asarray(network(inputs[start : start + batch_size], training=False)[1])
            for start in range(0, len(inputs), batch_size)
        ]
    )


def fit_gate(model, layers: tuple[str, ...], train_inputs: np.ndarray, validation_inputs: np.ndarray) -> OodGate:
    """Mean and shrunk covariance of the training X-rays' features; limit at the farthest
    validation X-ray, measured by the same graph that serves (``Predictor.score``)."""
    train_features = pooled_features(model, layers, train_inputs)
    estimate = LedoitWolf().fit(np.sqrt(train_features))
    gate = OodGate(layers=layers, mean=estimate.location_, precision=estimate.precision_, threshold=1.0)
    served = Predictor(model, threshold=0.5, model_version="unsaved", gate=gate)
    threshold = float(served.score(validation_inputs)[:, 1].max())
    return OodGate(layers=layers, mean=gate.mean, precision=gate.precision, threshold=threshold)


def gate_refusals(predictor: Predictor, validation: np.ndarray, stressed: np.ndarray) -> dict[str, GateRefusals]:
    """Refused / seen for the validation X-rays and each kind of non-X-ray image; the non-X-rays
    go through the whole input gate (the blank check while decoding, then the distance)."""
    return {
        "validation": xray_refusals(predictor, validation),
        "stressed_validation": xray_refusals(predictor, stressed),
        **non_xray_refusals(predictor),
    }


def xray_refusals(predictor: Predictor, inputs: np.ndarray) -> GateRefusals:
    """Refused / seen of X-ray model inputs, and the farthest one's distance / limit."""
    if predictor.gate is None:
        raise ValueError("Counting gate refusals needs a predictor with an input gate.")
    return refusals_of(predictor.score(inputs)[:, 1] / predictor.gate.threshold)


def refusals_of(ratios: np.ndarray) -> GateRefusals:
    """Refused / seen of X-rays whose distances / the gate's limit are ``ratios``, and the farthest."""
    return GateRefusals(n=len(ratios), refused=int(np.sum(ratios > 1)), nearest=float(ratios.max()))


def non_xray_refusals(predictor: Predictor) -> dict[str, GateRefusals]:
    """Refused / seen for each kind of the non-X-ray check set, through the whole input gate."""
    from training.gate.not_xrays import KINDS, not_xrays

    gate = predictor.gate
    if gate is None:
        raise ValueError("Counting gate refusals needs a predictor with an input gate.")

    def scores(inputs: np.ndarray) -> np.ndarray:
        return predictor.score(inputs)[:, 1] / gate.threshold

    counts: dict[str, GateRefusals] = {}
    images = not_xrays()
    for kind in KINDS:
        of_kind = [image for image in images if image.kind == kind]
        planes, blank = [], 0
        for image in of_kind:
            try:
                planes.append(load_plane(image.data))
            except PneumoscanError:
                blank += 1
        ratios = scores(plane_to_input(np.stack(planes))) if planes else np.zeros(0)
        counts[kind] = GateRefusals(
            n=len(of_kind),
            refused=blank + int(np.sum(ratios > 1)),
            nearest=float(ratios.min()) if len(ratios) else None,
        )
    return counts
