"""From a model's numbers for an image to its result: calibration, the label at the threshold,
and the input gate's verdict. Pure functions; the HTTP process uses them without TensorFlow."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from pneumoscan import CLASS_NAMES
from pneumoscan.errors import NotAChestXray
from pneumoscan.schemas import ModelMetadata, Prediction


def label_for(probability: float, threshold: float) -> str:
    """PNEUMONIA when P(pneumonia) reaches the threshold, else NORMAL."""
    return CLASS_NAMES[1] if probability >= threshold else CLASS_NAMES[0]


OodPolicy = Literal["refuse", "flag"]


@dataclass(frozen=True)
class Decision:
    """From a model's two numbers for an image to its result: the label at ``threshold``, and the
    input gate's verdict at ``ood_threshold`` (None: the model has no gate)."""

    threshold: float
    model_version: str
    ood_threshold: float | None = None
    ood_policy: OodPolicy = "refuse"

    def judge(self, probability: float, ood_distance: float | None = None) -> Prediction:
        """The result for one image; ``NotAChestXray`` when the gate refuses it."""
        probability = float(min(max(probability, 0.0), 1.0))
        ood_score = None
        if self.ood_threshold is not None and ood_distance is not None:
            ood_score = float(ood_distance) / self.ood_threshold if self.ood_threshold > 0 else float("inf")
            if not np.isfinite(ood_score):
                ood_score = float(np.finfo(np.float64).max)
        outside = ood_score is not None and ood_score > 1.0
        if outside and self.ood_policy == "refuse":
            raise NotAChestXray(
                f"The image is not like the chest X-rays the model was trained on (distance "
                f"{ood_score:.2f}x the gate's limit); send a frontal chest radiograph.",
                ood_score=ood_score,
            )
        return Prediction(
            label=label_for(probability, self.threshold),
            probability=probability,
            threshold=self.threshold,
            model_version=self.model_version,
            out_of_distribution=outside,
            ood_score=ood_score,
        )


def decision_for(metadata: ModelMetadata, threshold: float | None = None, ood_policy: OodPolicy = "refuse") -> Decision:
    """A saved model's decision rule; ``threshold`` overrides the saved one."""
    return Decision(
        threshold=metadata.threshold if threshold is None else threshold,
        model_version=metadata.version,
        ood_threshold=metadata.gate.threshold if metadata.gate is not None else None,
        ood_policy=ood_policy,
    )


def calibrate(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """Temperature scaling of two-class softmax outputs (n, 2): calibrated P(pneumonia) (n,)."""
    clipped = np.clip(np.asarray(probabilities, dtype=np.float64), 1e-12, 1.0)
    logit = np.log(clipped[:, 1]) - np.log(clipped[:, 0])
    return 1.0 / (1.0 + np.exp(-logit / temperature))


def judge_scores(decision: Decision, scores: np.ndarray) -> list[Prediction | NotAChestXray]:
    """``Decision.judge`` for each (P(pneumonia), distance) row; refusals come back, not raised."""
    outcomes: list[Prediction | NotAChestXray] = []
    for probability, distance in np.asarray(scores, dtype=np.float64).reshape(-1, 2):
        try:
            outcomes.append(decision.judge(probability, None if np.isnan(distance) else distance))
        except NotAChestXray as exc:
            outcomes.append(exc)
    return outcomes
