"""What the model looked at: Grad-CAM heatmaps and the feature maps of each network stage.

``GradCam`` weighs the last convolution stage's activations (after its ReLU) by the gradient of
P(pneumonia)'s logit, as in Selvaraju et al. (2017); ``overlay`` draws the heatmap over the X-ray
at the image's own aspect. ``feature_maps`` and ``save_feature_map_grids`` show what each stage
(convolution after its activation, pooling, the flattened vector) computes for one radiograph.
Both walk ``model.layers``, so they work for the seed and the tuned architectures alike.
``pneumoscan.model.legend`` puts the overlay above its legend, as ``/explain`` answers it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from pneumoscan import CLASS_NAMES
from pneumoscan.errors import ModelError
from pneumoscan.model.architectures import CROP_LAYER, INPUT_SHAPE, LAST_CONV_LAYER

PNEUMONIA_INDEX = CLASS_NAMES.index("PNEUMONIA")
GRID_CHANNELS = 16


def _layer_kinds():
    from keras import layers

    convolutions = (layers.Conv2D, layers.SeparableConv2D, layers.DepthwiseConv2D)
    poolings = (
        layers.MaxPooling2D,
        layers.AveragePooling2D,
        layers.GlobalAveragePooling2D,
        layers.GlobalMaxPooling2D,
    )
    activations = (layers.Activation, layers.ReLU, layers.LeakyReLU, layers.ELU, layers.PReLU)
    normalisations = (layers.BatchNormalization, layers.LayerNormalization, layers.GroupNormalization)
    return convolutions, poolings, activations, normalisations


def _activation_name(layer) -> str:
    return getattr(getattr(layer, "activation", None), "__name__", "linear")


def _activated(model, conv) -> tuple[str, Any]:
    """(stage name, layer) whose output is ``conv`` after its activation.

    A convolution either applies its activation itself (the seed CNN) or hands over to a
    separate activation layer, possibly through a normalisation (the tuned CNN's conv -> BN -> ReLU).
    """
    _, _, activations, normalisations = _layer_kinds()
    name = _activation_name(conv)
    if name != "linear":
        return f"{conv.name}_{name}", conv
    layer = conv
    # Down the graph, not model.layers' order: an ensemble's members interleave there.
    while len(layer._outbound_nodes) == 1:
        layer = layer._outbound_nodes[0].operation
        if isinstance(layer, activations):
            return layer.name, layer
        if not isinstance(layer, normalisations):
            break
    return conv.name, conv


def stage_layers(model) -> list[tuple[str, Any]]:
    """(name, layer) for each stage in order: convolutions after activation, poolings, flattens."""
    from keras import layers

    convolutions, poolings, _, _ = _layer_kinds()
    stages: list[tuple[str, Any]] = []
    for layer in model.layers:
        name: str = layer.name
        if isinstance(layer, convolutions):
            stages.append(_activated(model, layer))
        elif isinstance(layer, (*poolings, layers.Flatten)):
            stages.append((name, layer))
    return stages


def _last_conv_stage(model) -> Any:
    convolutions, _, _, _ = _layer_kinds()
    names = [layer.name for layer in model.layers]
    if LAST_CONV_LAYER in names:
        conv = model.get_layer(LAST_CONV_LAYER)
    else:
        candidates = [layer for layer in model.layers if isinstance(layer, convolutions)]
        if not candidates:
            raise ModelError(f"Model {model.name!r} has no convolution layer to explain.")
        conv = candidates[-1]
    return _activated(model, conv)[1]


def _as_batch(model_input: np.ndarray) -> np.ndarray:
    batch = np.asarray(model_input, dtype=np.float32)
    if batch.ndim == 3:
        batch = batch[np.newaxis]
    if batch.ndim != 4 or len(batch) != 1:
        raise ValueError(f"Expected one model input of shape (128, 128, 3), got {batch.shape}.")
    return batch


class GradCam:
    """P(pneumonia) and its Grad-CAM heatmap for one model input; builds its sub-model once."""

    def __init__(self, model) -> None:
        import keras

        if keras.backend.backend() != "tensorflow":
            raise ModelError(
                f"Grad-CAM needs the TensorFlow Keras backend; KERAS_BACKEND is {keras.backend.backend()!r}."
            )
        self.model = model
        target = _last_conv_stage(model)
        self.head = model.layers[-1]
        # Gradients of a saturated softmax vanish, so a confident model would give a blank map;
        # the pre-softmax logit of pneumonia against normal does not saturate (2 classes: it is
        # exactly logit(P(pneumonia))). Models without a softmax Dense head use the output.
        self.from_logits = isinstance(self.head, keras.layers.Dense) and _activation_name(self.head) == "softmax"
        outputs = [target.output, self.head.input if self.from_logits else model.outputs[0]]
        self.probe = keras.Model(model.input, outputs, name=f"{model.name}_grad_cam")
        names = [layer.name for layer in model.layers]
        self.cropping = model.get_layer(CROP_LAYER).cropping if CROP_LAYER in names else None

    def __call__(self, model_input: np.ndarray) -> tuple[float, np.ndarray]:
        """(P(pneumonia), heatmap float32 (h, w) in [0, 1] on the last conv stage's grid, or on the
        input's grid for a model that reads only the middle of the film, with the unread band cold)."""
        import tensorflow as tf

        batch = tf.constant(_as_batch(model_input))
        with tf.GradientTape() as tape:
            # training=False keeps the tuned model's augmentation layers and dropout inert.
            activations, head = self.probe(batch, training=False)
            if self.from_logits:
                logits = tf.matmul(head, self.head.kernel)
                if self.head.use_bias:
                    logits = logits + self.head.bias
                probabilities = tf.nn.softmax(logits)
                score = logits[:, PNEUMONIA_INDEX] - logits[:, 1 - PNEUMONIA_INDEX]
            else:
                probabilities = head
                p = tf.clip_by_value(head[:, PNEUMONIA_INDEX], 1e-7, 1 - 1e-7)
                score = tf.math.log(p) - tf.math.log1p(-p)
        gradients = tape.gradient(score, activations)
        weights = tf.reduce_mean(gradients, axis=(1, 2), keepdims=True)
        cam = tf.nn.relu(tf.reduce_sum(weights * activations, axis=-1))[0].numpy()
        peak = float(cam.max())
        # No positive evidence anywhere gives an all-zero map rather than amplified noise.
        heatmap = cam / peak if peak > 0 else np.zeros_like(cam)
        if self.cropping is not None:
            heatmap = in_full_frame(heatmap, self.cropping)
        return float(probabilities[0, PNEUMONIA_INDEX]), heatmap.astype(np.float32)


def in_full_frame(heatmap: np.ndarray, cropping: tuple[tuple[int, int], tuple[int, int]]) -> np.ndarray:
    """A heatmap of the cropped middle of the input, resized to it and placed in the input's frame."""
    (top, bottom), (left, right) = cropping
    height, width = INPUT_SHAPE[:2]
    inner = Image.fromarray(np.asarray(heatmap, dtype=np.float32)).resize(
        (width - left - right, height - top - bottom), Image.Resampling.BILINEAR
    )
    full = np.zeros((height, width), dtype=np.float32)
    full[top : height - bottom, left : width - right] = np.asarray(inner).clip(0.0, None)
    return full


def grad_cam(model, model_input: np.ndarray) -> np.ndarray:
    """The Grad-CAM heatmap of P(pneumonia): float32 (h, w) in [0, 1] on the last conv grid."""
    return GradCam(model)(model_input)[1]


# Where a frontal chest X-ray's lungs lie once it is resized to the model's square: the image
# without its outer 15% on each side. Burned-in markers, rulers and collimation edges sit outside it.
CENTRAL_MARGIN = 0.15


def heatmap_location(heatmap: np.ndarray, margin: float = CENTRAL_MARGIN) -> tuple[float, bool]:
    """(share of the heatmap's mass inside the central region, whether its peak lies outside it),
    measured on the heatmap resized to the model's input size; (NaN, False) for an empty map."""
    from pneumoscan import IMAGE_SIZE

    if not 0.0 <= margin < 0.5:
        raise ValueError(f"margin must be in [0, 0.5), got {margin}.")
    height, width = IMAGE_SIZE
    resized = np.asarray(
        Image.fromarray(np.asarray(heatmap, dtype=np.float32)).resize((width, height), Image.Resampling.BILINEAR)
    ).clip(0.0, None)
    total = float(resized.sum())
    if total <= 0.0:
        return float("nan"), False
    top, left = round(height * margin), round(width * margin)
    central = np.zeros_like(resized, dtype=bool)
    central[top : height - top, left : width - left] = True
    peak = np.unravel_index(int(np.argmax(resized)), resized.shape)
    return float(resized[central].sum() / total), not bool(central[peak])


def display_size(size: tuple[int, int], min_side: int, max_side: int) -> tuple[int, int]:
    """``size`` scaled so its longest side lies in [min_side, max_side], aspect kept."""
    width, height = size
    longest = max(width, height)
    scale = min(max(longest, min_side), max_side) / longest
    return max(1, round(width * scale)), max(1, round(height * scale))


def display_image(image: Image.Image, min_side: int = 512, max_side: int = 1024) -> Image.Image:
    """The X-ray in grayscale at the size ``overlay`` draws it (an image already that size is
    drawn as it is)."""
    return image.convert("L").resize(display_size(image.size, min_side, max_side), Image.Resampling.BILINEAR)


def overlay(
    image: Image.Image,
    heatmap: np.ndarray,
    *,
    colormap: str = "jet",
    alpha: float = 0.5,
    min_side: int = 512,
    max_side: int = 1024,
) -> Image.Image:
    """The X-ray in grayscale with the heatmap blended over it: RGB at the image's aspect.

    The model sees the whole image squeezed to a square, so the heatmap is stretched back over
    the whole image. Opacity grows with the heat, leaving cold regions as plain radiograph.
    """
    from matplotlib import colormaps

    shown = display_image(image, min_side, max_side)
    size = shown.size
    gray = np.asarray(shown, dtype=np.float32) / 255.0
    resized = Image.fromarray(np.asarray(heatmap, dtype=np.float32)).resize(size, Image.Resampling.BILINEAR)
    heat = np.clip(np.asarray(resized, dtype=np.float32), 0.0, 1.0)
    colours = colormaps[colormap](heat)[..., :3]
    weight = alpha * heat[..., np.newaxis]
    blended = gray[..., np.newaxis] * (1.0 - weight) + colours * weight
    return Image.fromarray(np.rint(blended * 255.0).astype(np.uint8))


def feature_maps(model, model_input: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """(stage name, activations) per stage for one input: (h, w, channels) maps or (n,) vectors."""
    import keras

    stages = stage_layers(model)
    if not stages:
        return []
    probe = keras.Model(model.input, [layer.output for _, layer in stages])
    outputs = probe(_as_batch(model_input), training=False)
    if len(stages) == 1:
        outputs = [outputs]
    return [
        (name, np.asarray(keras.ops.convert_to_numpy(out))[0]) for (name, _), out in zip(stages, outputs, strict=False)
    ]


def save_feature_map_grids(stages: Sequence[tuple[str, np.ndarray]], out_dir: str | Path) -> list[Path]:
    """One PNG per stage, ``NN_<stage>.png``: a 4x4 grid of the first 16 channels, or a strip."""
    from matplotlib.figure import Figure

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for index, (name, values) in enumerate(stages, start=1):
        shape = "x".join(str(n) for n in values.shape)
        if values.ndim == 3:
            figure = Figure(figsize=(8, 8.6), layout="constrained")
            axes = figure.subplots(4, 4)
            for channel, ax in enumerate(axes.flat):
                ax.set_axis_off()
                if channel < min(GRID_CHANNELS, values.shape[-1]):
                    ax.imshow(values[..., channel], cmap="viridis")
                    ax.set_title(f"channel {channel}", fontsize=8)
            figure.suptitle(f"{name}: {shape} (first {GRID_CHANNELS} channels)")
        else:
            vector = values.reshape(-1)
            figure = Figure(figsize=(12, 2), layout="constrained")
            ax = figure.subplots()
            ax.imshow(vector[np.newaxis, :], aspect="auto", cmap="viridis")
            ax.set_yticks([])
            ax.set_xlabel("unit")
            figure.suptitle(f"{name}: vector of {vector.size} values")
        path = out_dir / f"{index:02d}_{name}.png"
        figure.savefig(path, dpi=100)
        written.append(path)
    return written
