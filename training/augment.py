"""Acquisition augmentation: what another machine, protocol or period does to the same chest.

Applied to whole batches of uint8 planes in the ``tf.data`` pipeline (training only, so the saved
model carries none of it), and with a fixed seed to build the *stressed* validation set that the
threshold, the calibration and the input gate are chosen on. Each image gets its own draw of:

- geometry: rotation, scale (crop or margin) and shift in one projective warp, black fill;
- exposure: a gamma curve, then contrast about the image mean and a brightness offset;
- detector: a blur (soft detectors, motion) or an unsharp mask (edge-enhancing processing);
- noise: additive Gaussian noise (low dose).

Every range includes the identity, so an unmodified radiograph is one of the possible draws.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class AcquisitionRanges:
    rotation_degrees: float = 8.0
    scale: tuple[float, float] = (0.88, 1.15)
    shift_fraction: float = 0.06
    log_gamma: float = 0.5
    log_contrast: float = 0.3
    brightness: float = 0.08
    blur_mix: tuple[float, float] = (-0.8, 1.0)  # < 0 sharpens, > 0 blurs
    noise_std: float = 0.03


DEFAULT_RANGES = AcquisitionRanges()


def _gaussian_kernel(sigma: float = 1.0, radius: int = 2):
    import tensorflow as tf

    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    kernel = np.outer(taps, taps)
    kernel /= kernel.sum()
    return tf.constant(kernel[:, :, np.newaxis, np.newaxis], dtype=tf.float32)


def augment_planes(planes, seed, ranges: AcquisitionRanges = DEFAULT_RANGES):
    """uint8 (b, h, w) planes and a stateless seed (2,) -> float32 (b, h, w, 3) model inputs."""
    import tensorflow as tf

    images = tf.cast(planes, tf.float32)[..., tf.newaxis] / 255.0
    batch = tf.shape(images)[0]
    height = tf.cast(tf.shape(images)[1], tf.float32)
    width = tf.cast(tf.shape(images)[2], tf.float32)
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=9)

    def uniform(index: int, low: float, high: float, shape=None):
        return tf.random.stateless_uniform(
            shape if shape is not None else [batch], seeds[index], minval=low, maxval=high
        )

    # Geometry: output pixel p samples input at M (p - c) + c - t, M = R(angle) / scale.
    angle = uniform(0, -1.0, 1.0) * math.radians(ranges.rotation_degrees)
    scale = uniform(1, *ranges.scale)
    shift_x = uniform(2, -1.0, 1.0) * ranges.shift_fraction * width
    shift_y = uniform(3, -1.0, 1.0) * ranges.shift_fraction * height
    cos, sin = tf.cos(angle) / scale, tf.sin(angle) / scale
    cx, cy = (width - 1) / 2, (height - 1) / 2
    transforms = tf.stack(
        [
            cos, -sin, cx - cos * cx + sin * cy - shift_x,
            sin, cos, cy - sin * cx - cos * cy - shift_y,
            tf.zeros([batch]), tf.zeros([batch]),
        ],
        axis=1,
    )
    images = tf.raw_ops.ImageProjectiveTransformV3(
        images=images, transforms=transforms, output_shape=tf.shape(images)[1:3],
        fill_value=0.0, interpolation="BILINEAR", fill_mode="CONSTANT",
    )

    # Exposure: gamma, then contrast about the mean and brightness.
    per_image = [batch, 1, 1, 1]
    gamma = tf.exp(uniform(4, -ranges.log_gamma, ranges.log_gamma, per_image))
    images = tf.pow(tf.clip_by_value(images, 1e-6, 1.0), gamma)
    contrast = tf.exp(uniform(5, -ranges.log_contrast, ranges.log_contrast, per_image))
    mean = tf.reduce_mean(images, axis=[1, 2, 3], keepdims=True)
    brightness = uniform(6, -ranges.brightness, ranges.brightness, per_image)
    images = tf.clip_by_value((images - mean) * contrast + mean + brightness, 0.0, 1.0)

    # Detector: blend towards (blur) or away from (sharpen) a Gaussian-blurred copy.
    blurred = tf.nn.depthwise_conv2d(
        tf.pad(images, [[0, 0], [2, 2], [2, 2], [0, 0]], mode="SYMMETRIC"),
        _gaussian_kernel(), strides=[1, 1, 1, 1], padding="VALID",
    )
    mix = uniform(7, *ranges.blur_mix, per_image)
    images = images + mix * (blurred - images)

    # Noise.
    noise_std = uniform(8, 0.0, ranges.noise_std, per_image)
    noise = tf.random.stateless_normal(tf.shape(images), tf.random.experimental.stateless_fold_in(seeds[8], 1))
    images = tf.clip_by_value(images + noise_std * noise, 0.0, 1.0)
    return tf.repeat(images, 3, axis=-1)


def stressed_inputs(planes: np.ndarray, seed: int, batch_size: int = 256) -> np.ndarray:
    """One fixed augmented copy of each uint8 plane: float32 (n, h, w, 3) model inputs."""
    import tensorflow as tf

    chunks = []
    for index, start in enumerate(range(0, len(planes), batch_size)):
        chunk = tf.constant(planes[start : start + batch_size])
        chunks.append(augment_planes(chunk, tf.constant([seed, index], dtype=tf.int64)).numpy())
    return np.concatenate(chunks) if chunks else np.zeros((0, *planes.shape[1:], 3), np.float32)


def training_dataset(
    planes: np.ndarray, targets: np.ndarray, batch_size: int, seed: int, augment: bool
):
    """Shuffled batches of (model input, one-hot target), augmented afresh each epoch."""
    import tensorflow as tf

    data = tf.data.Dataset.from_tensor_slices((planes, targets))
    data = data.shuffle(len(planes), seed=seed, reshuffle_each_iteration=True).batch(batch_size)
    if augment:
        draws = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
        data = tf.data.Dataset.zip((data, draws)).map(
            lambda batch, draw: (augment_planes(batch[0], draw), batch[1]),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    else:
        data = data.map(lambda x, y: (tf.repeat(tf.cast(x, tf.float32)[..., tf.newaxis] / 255.0, 3, axis=-1), y))
    return data.prefetch(tf.data.AUTOTUNE)
