"""A saved model folder (weights and metadata), loading it, and the batch ``Predictor``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pneumoscan.errors import ModelError, NotAChestXray
from pneumoscan.imaging.gate import OodGate, with_distance
from pneumoscan.model.architectures import INPUT_SHAPE, equalization_layer
from pneumoscan.model.decision import Decision, OodPolicy, calibrate, decision_for, judge_scores
from pneumoscan.schemas import ModelMetadata, Prediction

if TYPE_CHECKING:
    from pneumoscan.model.gradcam import GradCam

MODEL_FILE = "model.keras"
METADATA_FILE = "metadata.json"


def _padded(call):
    """``call`` on batches padded to a power of two, so a few compilations serve every size."""

    def forward(batch: np.ndarray):
        size = 1 << (len(batch) - 1).bit_length()
        padding = np.zeros((size - len(batch), *INPUT_SHAPE), dtype=np.float32)
        outputs = _numpy_outputs(call(np.concatenate([batch, padding])))
        return tuple(output[: len(batch)] for output in outputs)

    return forward


def _jax_forward(network):
    """The network's forward pass compiled once per padded batch size with ``jax.jit`` of Keras'
    stateless call: no ``predict_on_batch`` bookkeeping per call (Keras' JAX backend)."""
    import jax

    trainable = [variable.value for variable in network.trainable_variables]
    non_trainable = [variable.value for variable in network.non_trainable_variables]

    @jax.jit
    def forward(trainable, non_trainable, batch):
        outputs, _ = network.stateless_call(trainable, non_trainable, batch, training=False)
        return outputs

    return _padded(lambda batch: forward(trainable, non_trainable, batch))


def load_metadata(model_dir: str | Path) -> ModelMetadata:
    path = Path(model_dir) / METADATA_FILE
    try:
        return ModelMetadata.model_validate_json(path.read_bytes())
    except FileNotFoundError as exc:
        raise ModelError(f"No {METADATA_FILE} in {model_dir}; is it a pneumoscan model?") from exc
    except ValueError as exc:
        raise ModelError(f"{path} is not valid model metadata: {exc}") from exc


def save_metadata(model_dir: str | Path, metadata: ModelMetadata) -> None:
    text = json.dumps(metadata.model_dump(mode="json"), indent=2) + "\n"
    (Path(model_dir) / METADATA_FILE).write_text(text)


def load_keras_model(model_dir: str | Path):
    import keras

    equalization_layer()  # registers the custom layer before a model that uses it is read
    path = Path(model_dir) / MODEL_FILE
    if not path.is_file():
        raise ModelError(f"No {MODEL_FILE} in {model_dir}.")
    try:
        return keras.saving.load_model(path, compile=False)
    except Exception as exc:  # Keras raises many unrelated types for a bad archive.
        raise ModelError(f"Cannot load {path}: {exc}") from exc


class Predictor:
    """Batch in, probabilities (and the gate's distances) out: the one inference path for the
    CLI, the service and the worker."""

    def __init__(
        self,
        model,
        threshold: float,
        model_version: str,
        *,
        gate: OodGate | None = None,
        temperature: float = 1.0,
        ood_policy: OodPolicy = "refuse",
    ) -> None:
        import keras

        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {threshold}.")
        if not temperature > 0:
            raise ValueError(f"temperature must be positive, got {temperature}.")
        self.model = model
        self.gate = gate
        self.temperature = temperature
        self._grad_cam: GradCam | None = None
        self.decision = Decision(threshold, model_version, gate.threshold if gate else None, ood_policy)
        network = with_distance(model, gate) if gate is not None else model
        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            signature = [tf.TensorSpec(shape=(None, *INPUT_SHAPE), dtype=tf.float32)]
            # A traced graph call is ~20x faster than model.predict for small batches.
            forward = tf.function(
                lambda batch: network(batch, training=False), input_signature=signature, autograph=False
            )
            self._forward = lambda batch: _numpy_outputs(forward(batch))
        elif keras.backend.backend() == "jax":
            self._forward = _jax_forward(network)
        else:
            # Other Keras backends compile predict_on_batch once per batch shape.
            self._forward = _padded(lambda batch: network.predict_on_batch(batch))

    @property
    def threshold(self) -> float:
        return self.decision.threshold

    @property
    def model_version(self) -> str:
        return self.decision.model_version

    @classmethod
    def from_dir(
        cls, model_dir: str | Path, threshold: float | None = None, ood_policy: OodPolicy = "refuse"
    ) -> Predictor:
        """Load a saved model with its gate and calibration; ``threshold`` overrides the saved one."""
        metadata = load_metadata(model_dir)
        decision = decision_for(metadata, threshold, ood_policy)
        gate = None
        if metadata.gate is not None:
            gate = OodGate.load(model_dir, metadata.gate.threshold, metadata.gate.sha256)
        return cls(
            load_keras_model(model_dir),
            threshold=decision.threshold,
            model_version=decision.model_version,
            gate=gate,
            temperature=metadata.calibration.temperature if metadata.calibration else 1.0,
            ood_policy=decision.ood_policy,
        )

    def score(self, batch: np.ndarray) -> np.ndarray:
        """(n, 2) float64 for a (n, 128, 128, 3) float32 batch: calibrated P(pneumonia), and the
        gate's distance (NaN without a gate)."""
        if batch.ndim != 4 or batch.shape[1:] != INPUT_SHAPE:
            raise ValueError(f"Expected a batch of shape (n, {INPUT_SHAPE}), got {batch.shape}.")
        if len(batch) == 0:
            return np.zeros((0, 2), dtype=np.float64)
        outputs = self._forward(np.asarray(batch, dtype=np.float32))
        probabilities = calibrate(outputs[0], self.temperature)
        distances = outputs[1].astype(np.float64) if self.gate is not None else np.full(len(batch), np.nan)
        return np.stack([probabilities, distances], axis=1)

    @property
    def grad_cam(self) -> GradCam:
        """This model's ``explain.GradCam`` (TensorFlow backend only: ``ModelError`` otherwise),
        built on first use so that start-up does not pay for it; a duplicate from a race is harmless."""
        if self._grad_cam is None:
            from pneumoscan.model.gradcam import GradCam

            self._grad_cam = GradCam(self.model)
        return self._grad_cam

    def heatmap(self, model_input: np.ndarray) -> np.ndarray:
        """Grad-CAM heatmap of P(pneumonia) for one (128, 128, 3) model input: float32 (h, w) in [0, 1]."""
        return self.grad_cam(model_input)[1]

    def warm_up(self, max_batch_size: int) -> None:
        """Score zero batches of every size up to ``max_batch_size`` that the model will see, so
        the first real batch does not pay for tracing (about 0.2 s under TensorFlow here): one
        trace under TensorFlow, one compilation per padded power of two under Keras' JAX backend."""
        for size in warm_up_sizes(max_batch_size):
            self.score(np.zeros((size, *INPUT_SHAPE), dtype=np.float32))

    def predict_proba(self, batch: np.ndarray) -> np.ndarray:
        """Calibrated P(pneumonia) for a (n, 128, 128, 3) float32 batch, float64 (n,)."""
        return self.score(batch)[:, 0]

    def judge(self, scores: np.ndarray) -> list[Prediction | NotAChestXray]:
        """A result, or the gate's refusal, for each row of ``score``'s output."""
        return judge_scores(self.decision, scores)


def warm_up_sizes(max_batch_size: int) -> list[int]:
    """1, 2, 4, ... up to and including ``max_batch_size``: the batch shapes worth compiling."""
    sizes, size = [], 1
    while size < max_batch_size:
        sizes.append(size)
        size *= 2
    return [*sizes, max(1, max_batch_size)]


def _numpy_outputs(outputs) -> tuple[np.ndarray, ...]:
    if isinstance(outputs, (list, tuple)):
        return tuple(np.asarray(output) for output in outputs)
    return (np.asarray(outputs),)
