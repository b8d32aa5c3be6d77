"""Model architectures, saving and loading, and the batch ``Predictor``."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pneumoscan import CLASS_NAMES, IMAGE_SIZE
from pneumoscan.decision import Decision, OodPolicy, calibrate, decision_for, judge_scores
from pneumoscan.errors import ModelError, NotAChestXray
from pneumoscan.gate import OodGate, with_distance
from pneumoscan.schemas import ModelMetadata, Prediction

if TYPE_CHECKING:
    from pneumoscan.explain import GradCam

MODEL_FILE = "model.keras"
METADATA_FILE = "metadata.json"
LAST_CONV_LAYER = "last_conv"
INPUT_SHAPE: tuple[int, int, int] = (*IMAGE_SIZE, 3)


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


def configure_tensorflow(intra_op_threads: int = 0, inter_op_threads: int = 0) -> None:
    """Set TensorFlow's thread pools; must run before the first TF op in the process."""
    # TF reports failures as Python exceptions; its C++ log lines (absl) are noise for users.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if os.environ.get("KERAS_BACKEND", "tensorflow") != "tensorflow":
        return  # another Keras backend (JAX, PyTorch) manages its own threads and devices
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(intra_op_threads)
        tf.config.threading.set_inter_op_parallelism_threads(inter_op_threads)
    except RuntimeError:
        # The runtime is already initialised (e.g. a second call in one process): keep its pools.
        pass
    for gpu in tf.config.list_physical_devices("GPU"):
        with contextlib.suppress(RuntimeError):  # already initialised
            tf.config.experimental.set_memory_growth(gpu, True)


def build_seed_model():
    """The course CNN: two 64-filter 3x3 convolutions with 2x2 pooling, Dense 64, softmax 2."""
    import keras
    from keras import layers

    inputs = keras.Input(shape=INPUT_SHAPE, name="image")
    x = layers.Conv2D(64, (3, 3), activation="relu", name="conv1")(inputs)
    x = layers.MaxPooling2D((2, 2), name="pool1")(x)
    x = layers.Conv2D(64, (3, 3), activation="relu", name=LAST_CONV_LAYER)(x)
    x = layers.MaxPooling2D((2, 2), name="pool2")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(64, activation="relu", name="dense")(x)
    outputs = layers.Dense(len(CLASS_NAMES), activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="seed_cnn")


_equalization_class = None


def _equalization_layer():
    """The ``HistogramEqualization`` layer class, defined on first use so that importing this
    module does not import Keras, and registered so saved models that use it load."""
    global _equalization_class
    if _equalization_class is not None:
        return _equalization_class
    import keras
    from keras import ops

    @keras.saving.register_keras_serializable(package="pneumoscan")
    class HistogramEqualization(keras.layers.Layer):
        """Per-image histogram equalisation: each pixel becomes its grey level's rank in its own
        image, interpolated between ``bins`` quantiles. Any monotone change of exposure (gamma,
        contrast, brightness, detector response curve) leaves the output unchanged, so X-rays from
        another machine reach the network with the training X-rays' grey-level distribution."""

        def __init__(self, bins: int = 32, **kwargs):
            super().__init__(**kwargs)
            if bins < 2:
                raise ValueError(f"bins must be at least 2, got {bins}.")
            self.bins = bins

        def call(self, inputs):
            grey = ops.mean(inputs, axis=-1)
            pixels = inputs.shape[1] * inputs.shape[2]
            flat = ops.sort(ops.reshape(grey, (-1, pixels)), axis=1)
            picks = np.round(np.linspace(0, pixels - 1, self.bins + 1)).astype("int32")
            quantiles = ops.take(flat, picks, axis=1)[:, None, None, :]
            # A sum of ramps, one per quantile interval; a tied interval (many black pixels)
            # becomes a step, as the empirical distribution function does.
            equalized = ops.zeros_like(grey)
            for index in range(self.bins):
                low, high = quantiles[..., index], quantiles[..., index + 1]
                equalized = equalized + ops.clip((grey - low) / ops.maximum(high - low, 1e-4), 0.0, 1.0)
            equalized = equalized / self.bins
            return ops.repeat(equalized[..., None], inputs.shape[-1], axis=-1)

        def compute_output_shape(self, input_shape):
            return input_shape

        def get_config(self):
            return {**super().get_config(), "bins": self.bins}

    _equalization_class = HistogramEqualization
    return _equalization_class


def build_tuned_model(dropout_rate: float = 0.3, equalize: bool = False):
    """A batch-normalised CNN with a strided stem, per-image standardisation and global pooling.

    About 0.4 M parameters; trains ~2x faster per image than the seed CNN on a CPU. Each image
    is standardised to zero mean and unit variance first (after histogram equalisation when
    ``equalize``), so exposure and contrast settings of the X-ray machine do not move the
    features. Augmentation happens in the training pipeline (``training/augment.py``), so the
    saved model is the inference model only.
    """
    import keras
    from keras import layers

    def conv_block(x, filters: int, name: str, strides: int = 1):
        x = layers.Conv2D(filters, (3, 3), strides=strides, padding="same", use_bias=False, name=name)(x)
        x = layers.BatchNormalization(name=f"{name}_bn")(x)
        return layers.Activation("relu", name=f"{name}_relu")(x)

    inputs = keras.Input(shape=INPUT_SHAPE, name="image")
    x = _equalization_layer()(name="equalize")(inputs) if equalize else inputs
    x = layers.LayerNormalization(axis=(1, 2, 3), center=False, scale=False, epsilon=1e-3, name="standardize")(x)
    x = conv_block(x, 32, "stem", strides=2)
    x = conv_block(x, 32, "conv1")
    x = layers.MaxPooling2D((2, 2), name="pool1")(x)
    x = conv_block(x, 64, "conv2")
    x = layers.MaxPooling2D((2, 2), name="pool2")(x)
    x = conv_block(x, 128, "conv3")
    x = layers.MaxPooling2D((2, 2), name="pool3")(x)
    x = conv_block(x, 256, LAST_CONV_LAYER)
    x = layers.GlobalAveragePooling2D(name="global_pool")(x)
    x = layers.Dropout(dropout_rate, name="dropout")(x)
    outputs = layers.Dense(len(CLASS_NAMES), activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="tuned_cnn")


ARCHITECTURES = {
    "seed": build_seed_model,
    "tuned": build_tuned_model,
    "tuned_equalized": lambda: build_tuned_model(equalize=True),
}
EQUALIZED_ARCHITECTURES = frozenset({"tuned_equalized"})


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

    _equalization_layer()  # registers the custom layer before a model that uses it is read
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
            from pneumoscan.explain import GradCam

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
