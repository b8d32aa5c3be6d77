"""After fitting: calibration, threshold, input gate, metadata, plots and the model card.

Everything here is chosen on the validation split and its stressed copies, never on test data:
1. the input gate: the Mahalanobis distance of the pooled conv features, fitted on the training
   X-rays, with its limit at the farthest validation X-ray;
2. calibration: the softmax temperature that fits the stressed validation copies best;
3. the threshold: Youden's J on the calibrated stressed copies (``calibration.youden_threshold``),
   or, where the recipe sets ``threshold_sensitivity``, the highest threshold keeping that
   sensitivity on them (``calibration.sensitivity_threshold``).
"""

from __future__ import annotations

import hashlib
import platform
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from pneumoscan import CLASS_NAMES
from pneumoscan.imaging.preprocess import plane_to_input
from pneumoscan.model.architectures import INPUT_SHAPE
from pneumoscan.model.decision import calibrate
from pneumoscan.model.predictor import MODEL_FILE, Predictor, save_metadata
from pneumoscan.schemas import CalibrationInfo, GateInfo, ModelMetadata
from training.calibration import (
    expected_calibration_error,
    fit_temperature,
    sensitivity_threshold,
    youden_threshold,
)
from training.data import fingerprint
from training.gate.fit import GATE_RULE, feature_layers, fit_gate, gate_refusals
from training.metrics import evaluate_predictions
from training.recipes import Recipe

THRESHOLD_RULE = (
    "Youden's J (highest sensitivity + specificity) on calibrated P(pneumonia) over the stressed validation copies"
)


def threshold_rule(recipe: Recipe) -> str:
    if recipe.threshold_sensitivity is None:
        return THRESHOLD_RULE
    return (
        f"the highest threshold keeping sensitivity {recipe.threshold_sensitivity:.2f} on calibrated "
        "P(pneumonia) over the stressed validation copies"
    )


@dataclass(frozen=True)
class Scored:
    """One labelled set's softmax outputs, before and after temperature scaling."""

    labels: np.ndarray
    raw: np.ndarray  # P(pneumonia) before scaling
    calibrated: np.ndarray


def calibrate_and_choose(model, data, recipe: Recipe) -> tuple[float, float, Scored, Scored]:
    """(temperature, threshold, validation, stressed validation): the temperature fitted and the
    threshold chosen on the stressed copies, by the recipe's rule."""
    validation_softmax = model.predict(plane_to_input(data.validation_planes), batch_size=256, verbose=0)
    stressed_softmax = model.predict(data.stressed_inputs, batch_size=256, verbose=0)
    temperature = fit_temperature(stressed_softmax, data.stressed_labels)
    validation = Scored(
        data.validation_labels, calibrate(validation_softmax, 1.0), calibrate(validation_softmax, temperature)
    )
    stressed = Scored(data.stressed_labels, calibrate(stressed_softmax, 1.0), calibrate(stressed_softmax, temperature))
    if recipe.threshold_sensitivity is None:
        threshold = youden_threshold(stressed.labels, stressed.calibrated)
    else:
        threshold = sensitivity_threshold(stressed.labels, stressed.calibrated, recipe.threshold_sensitivity)
    return temperature, threshold, validation, stressed


def calibration_info(temperature: float, sets: dict[str, Scored]) -> CalibrationInfo:
    return CalibrationInfo(
        temperature=temperature,
        ece_before={name: expected_calibration_error(scored.labels, scored.raw) for name, scored in sets.items()},
        ece_after={name: expected_calibration_error(scored.labels, scored.calibrated) for name, scored in sets.items()},
    )


def _epochs(history: dict[str, list[float]] | None, members: list[dict] | None) -> tuple[int, int]:
    """(epochs run, best epoch): the fit's, or for an ensemble, all its members' epochs and its latest best."""
    if history is not None:
        return len(history["val_auc"]), int(np.argmax(history["val_auc"])) + 1
    if members:
        return sum(m["epochs_run"] for m in members), max(m["best_epoch"] for m in members)
    raise ValueError("finalize needs the fit's history or the ensemble's members.")


def versions() -> dict[str, str]:
    import keras
    import tensorflow as tf

    return {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
    }


def finalize(
    model,
    out_dir: Path,
    recipe: Recipe,
    data,
    data_dir: str | Path,
    *,
    seed: int,
    history: dict[str, list[float]] | None,
    training_seconds: float,
    members: list[dict] | None = None,
) -> ModelMetadata:
    """Fit the gate and the calibration, choose the threshold, write metadata, plots and card.

    ``history``: the fit's, for the epochs and the training curves; an ensemble (``members``:
    each one's version, seed, epochs_run and best_epoch) counts its members' epochs instead."""
    layers = feature_layers(model)
    validation_inputs = plane_to_input(data.validation_planes)
    gate = fit_gate(model, layers, plane_to_input(data.train_planes), validation_inputs)
    gate_sha256 = gate.save(out_dir)
    temperature, threshold, validation, stressed = calibrate_and_choose(model, data, recipe)
    predictor = Predictor(model, threshold=threshold, model_version="unsaved", gate=gate, temperature=temperature)
    gate_info = GateInfo(
        threshold=gate.threshold,
        rule=GATE_RULE,
        sha256=gate_sha256,
        layers=list(layers),
        features=int(gate.mean.shape[0]),
        refusals=gate_refusals(predictor, validation_inputs, data.stressed_inputs),
    )
    created = datetime.now(UTC)
    model_hash = hashlib.sha256((out_dir / MODEL_FILE).read_bytes()).hexdigest()
    epochs_run, best_epoch = _epochs(history, members)
    metadata = ModelMetadata(
        version=f"{recipe.name}-{created:%Y%m%d%H%M}-{model_hash[:8]}",
        recipe=recipe.name,
        class_names=list(CLASS_NAMES),
        input_shape=list(INPUT_SHAPE),
        threshold=threshold,
        epochs_run=epochs_run,
        best_epoch=best_epoch,
        seed=seed,
        members=members,
        validation=evaluate_predictions(validation.labels, validation.calibrated, threshold),
        train_images=len(data.train_labels),
        validation_images=len(data.validation_labels),
        training_fingerprint=fingerprint(data.examples, data_dir),
        created=created,
        training_seconds=round(training_seconds, 1),
        versions=versions(),
        threshold_rule=threshold_rule(recipe),
        stressed_validation=evaluate_predictions(stressed.labels, stressed.calibrated, threshold),
        calibration=calibration_info(temperature, {"validation": validation, "stressed_validation": stressed}),
        gate=gate_info,
    )
    save_metadata(out_dir, metadata)

    from pneumoscan.monitoring.drift import save_reference
    from training.drift.reference import reference_from_scores, validation_source

    source = validation_source(data_dir, len(validation.labels), seed, metadata.training_fingerprint)
    save_reference(
        out_dir, reference_from_scores(predictor, predictor.score(validation_inputs), metadata.version, source)
    )

    from training.model_card import write_model_card
    from training.plots import plot_model_plots, plot_training_curves

    if history is not None:
        plot_training_curves(history, out_dir / "training_curves.png", title=f"{recipe.name} recipe")
    plot_model_plots(
        out_dir,
        metadata,
        validation=(validation.labels, validation.calibrated, validation.raw),
        stressed=(stressed.labels, stressed.calibrated, stressed.raw),
    )
    write_model_card(out_dir, metadata)
    return metadata
