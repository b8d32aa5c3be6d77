"""The model architectures (the course's seed CNN, the tuned one), and TensorFlow's thread set-up."""

from __future__ import annotations

import contextlib
import os

import numpy as np

from pneumoscan import CLASS_NAMES, IMAGE_SIZE

LAST_CONV_LAYER = "last_conv"
INPUT_SHAPE: tuple[int, int, int] = (*IMAGE_SIZE, 3)
# The layer of a model that looks only at the middle of the film (``build_tuned_model(margin=...)``).
CROP_LAYER = "central_crop"


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


def equalization_layer():
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


def build_tuned_model(dropout_rate: float = 0.3, equalize: bool = False, margin: float = 0.0):
    """A batch-normalised CNN with a strided stem, per-image standardisation and global pooling.

    About 0.4 M parameters; trains ~2x faster per image than the seed CNN on a CPU. Each image
    is standardised to zero mean and unit variance first (after histogram equalisation when
    ``equalize``), so exposure and contrast settings of the X-ray machine do not move the
    features. Augmentation happens in the training pipeline (``training/augment.py``), so the
    saved model is the inference model only.

    With a ``margin`` (a fraction of each side), the network sees only the middle of the film,
    resized back to the input size: markers, rulers and collimation edges in the outer band carry
    no signal because the model never reads them. ``GradCam`` places its map back in the full frame.
    """
    import keras
    from keras import layers

    def conv_block(x, filters: int, name: str, strides: int = 1):
        x = layers.Conv2D(filters, (3, 3), strides=strides, padding="same", use_bias=False, name=name)(x)
        x = layers.BatchNormalization(name=f"{name}_bn")(x)
        return layers.Activation("relu", name=f"{name}_relu")(x)

    inputs = keras.Input(shape=INPUT_SHAPE, name="image")
    x = inputs
    if margin > 0:
        top, left = round(INPUT_SHAPE[0] * margin), round(INPUT_SHAPE[1] * margin)
        x = layers.Cropping2D(((top, top), (left, left)), name=CROP_LAYER)(x)
        x = layers.Resizing(*INPUT_SHAPE[:2], interpolation="bilinear", name="central_resize")(x)
    x = equalization_layer()(name="equalize")(x) if equalize else x
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


def fold_ensemble(members):
    """One model that gives the mean of the members' logits: each member's layers up to its last
    convolution stage (renamed ``m1_...``, ``m2_...``) read the same input, their last stages are
    concatenated (``last_conv``, which Grad-CAM and the gate read), pooled, and one softmax layer
    whose kernel stacks the members' kernels over their number gives the mean logit, since the
    pooling and the layer are linear. One call per batch scores every member.

    Members are models of one chain architecture (each layer reads the one before), such as
    ``build_tuned_model``'s, ending in global pooling, dropout and a softmax Dense layer."""
    import keras
    from keras import layers

    inputs = keras.Input(shape=INPUT_SHAPE, name="image")
    stages = []
    for index, member in enumerate(members, start=1):
        x, previous = inputs, member.inputs[0]
        for layer in member.layers[1:]:
            if isinstance(layer, layers.GlobalAveragePooling2D):
                break
            nodes = layer._inbound_nodes
            if len(nodes) != 1 or [id(t) for t in nodes[0].input_tensors] != [id(previous)]:
                raise ValueError(f"{member.name}: layer {layer.name!r} is not part of a chain.")
            copy = type(layer).from_config({**layer.get_config(), "name": f"m{index}_{layer.name}"})
            x = copy(x)
            copy.set_weights(layer.get_weights())
            previous = layer.output
        else:
            raise ValueError(f"{member.name} has no global pooling after its convolutions.")
        stages.append(x)
    x = layers.Concatenate(name=LAST_CONV_LAYER)(stages)
    x = layers.GlobalAveragePooling2D(name="global_pool")(x)
    head = layers.Dense(len(CLASS_NAMES), activation="softmax", name="probabilities")
    outputs = head(x)
    kernels, biases = zip(*(member.layers[-1].get_weights() for member in members), strict=True)
    head.set_weights([np.concatenate(kernels) / len(members), np.mean(biases, axis=0)])
    return keras.Model(inputs, outputs, name="ensemble_cnn")


ARCHITECTURES = {
    "seed": build_seed_model,
    "tuned": build_tuned_model,
    "tuned_equalized": lambda: build_tuned_model(equalize=True),
    # The outer 12% of each side cropped away (the model reads the inner 76% of the film).
    "tuned_central": lambda: build_tuned_model(margin=0.12),
}
EQUALIZED_ARCHITECTURES = frozenset({"tuned_equalized"})
