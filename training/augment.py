"""Acquisition augmentation: what another machine, protocol or period does to the same chest.

Applied to whole batches of uint8 planes in the ``tf.data`` pipeline (training only, so the saved
model carries none of it), and with a fixed seed to build the *stressed* validation set that the
threshold, the calibration and the input gate are chosen on. Each image gets its own draw of:

- geometry: rotation, scale (crop or margin) and shift in one projective warp, black fill;
- exposure: a gamma curve, then contrast about the image mean and a brightness offset;
- detector: a blur (soft detectors, motion) or an unsharp mask (edge-enhancing processing);
- noise: additive Gaussian noise (low dose).

With ``shortcut_probability`` above zero (the recipes' ``shortcut_augmentation``), an image may
also get the things a site burns into its radiographs, in both classes alike so that they carry no
label signal: border bars (collimation, cropping, scanner frames) and marker text and rulers
("R", "L", "A-P", "PORTABLE", ...), mostly near the edges, where real markers sit.

Every range includes the identity, so an unmodified radiograph is one of the possible draws.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from pneumoscan import IMAGE_SIZE


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
    shortcut_probability: float = 0.0  # chance of each of: border bars, a marker overlay
    border_fraction: float = 0.12  # widest bar, as a share of the side
    # Framing: log of the width/height stretch (0: none), drawn apart from the other draws so
    # that ranges without it give the same images as before.
    log_aspect: float = 0.0


DEFAULT_RANGES = AcquisitionRanges()
SHORTCUT_RANGES = AcquisitionRanges(shortcut_probability=0.5)
# Another period's framing: zoomed in well past the training films' (tight framing, collimation
# that crops the chest), stretched, shifted further, with collimation bars and markers.
FRAMING_RANGES = AcquisitionRanges(
    scale=(0.85, 1.7),
    shift_fraction=0.1,
    log_aspect=0.15,
    shortcut_probability=0.5,
    border_fraction=0.2,
)
# Half-way: zoom to 1.4x, milder stretch, bars and markers less often.
MILD_FRAMING_RANGES = AcquisitionRanges(
    scale=(0.88, 1.4),
    shift_fraction=0.08,
    log_aspect=0.1,
    shortcut_probability=0.3,
    border_fraction=0.15,
)
RANGES = {
    "default": DEFAULT_RANGES,
    "shortcuts": SHORTCUT_RANGES,
    "framing": FRAMING_RANGES,
    "mild-framing": MILD_FRAMING_RANGES,
}

MARKER_TEXTS = ("R", "L", "A-P", "AP", "P-A", "PORTABLE", "SUPINE", "ERECT", "LT", "RT", "1", "2")
MARKER_OVERLAYS = 256
MARKER_SEED = 7


def marker_overlays(size: tuple[int, int], count: int = MARKER_OVERLAYS, seed: int = MARKER_SEED) -> np.ndarray:
    """float32 (count, h, w) opacity maps of one to three markers or rulers each, drawn with a
    fixed seed; three quarters of the marks start in the outer quarter of the image."""
    from PIL import Image, ImageDraw, ImageFont

    rng = np.random.default_rng(seed)
    height, width = size
    overlays = np.zeros((count, height, width), dtype=np.float32)
    for index in range(count):
        canvas = Image.new("L", (width, height), 0)
        draw = ImageDraw.Draw(canvas)
        for _ in range(int(rng.integers(1, 4))):
            near_edge = rng.random() < 0.75
            x = int(
                rng.choice([rng.integers(0, width // 4), rng.integers(3 * width // 4, width)])
                if near_edge
                else rng.integers(0, width)
            )
            y = int(rng.integers(0, height // 4) if near_edge and rng.random() < 0.6 else rng.integers(0, height))
            if rng.random() < 0.2:
                _draw_ruler(draw, x, y, rng, (width, height))
            else:
                font = ImageFont.load_default(size=int(rng.integers(7, 17)))
                draw.text((x, y), str(rng.choice(MARKER_TEXTS)), fill=255, font=font, anchor="mm")
        overlays[index] = np.asarray(canvas, dtype=np.float32) / 255.0
    return overlays


def _draw_ruler(draw, x: int, y: int, rng: np.random.Generator, size: tuple[int, int]) -> None:
    """A scale bar with ticks, horizontal or vertical."""
    length, step, vertical = int(rng.integers(20, 60)), int(rng.integers(3, 7)), rng.random() < 0.5
    along = np.arange(0, length, step)
    if vertical:
        draw.line([(x, y), (x, y + length)], fill=255)
        for offset in along:
            draw.line([(x, y + offset), (x + 2 + 2 * (offset % (5 * step) == 0), y + offset)], fill=255)
    else:
        draw.line([(x, y), (x + length, y)], fill=255)
        for offset in along:
            draw.line([(x + offset, y), (x + offset, y + 2 + 2 * (offset % (5 * step) == 0))], fill=255)


def _in_band(height, width, widths):
    """(b, h, w, 1) bool: the pixels within each image's top, bottom, left and right ``widths``
    (4, b, 1, 1, 1), each a share of its side."""
    import tensorflow as tf

    rows = tf.cast(tf.range(height), tf.float32)[tf.newaxis, :, tf.newaxis, tf.newaxis] / tf.cast(height, tf.float32)
    columns = tf.cast(tf.range(width), tf.float32)[tf.newaxis, tf.newaxis, :, tf.newaxis] / tf.cast(width, tf.float32)
    return (rows < widths[0]) | (rows >= 1.0 - widths[1]) | (columns < widths[2]) | (columns >= 1.0 - widths[3])


def add_shortcuts(images, seed, probability: float, border_fraction: float, size: tuple[int, int]):
    """Border bars and burned-in markers on float32 (b, h, w, 1) images of ``size`` (h, w) in
    [0, 1], each with ``probability`` per image; a stateless seed (2,) makes the draw reproducible."""
    import tensorflow as tf

    batch, height, width = tf.shape(images)[0], tf.shape(images)[1], tf.shape(images)[2]
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=6)
    per_image = [batch, 1, 1, 1]

    # Border bars: each side independently, black or white, up to border_fraction wide.
    widths = tf.random.stateless_uniform([4, batch, 1, 1, 1], seeds[0], 0.0, border_fraction)
    widths *= tf.cast(tf.random.stateless_uniform([4, batch, 1, 1, 1], seeds[1]) < 0.5, tf.float32)
    widths *= tf.cast(tf.random.stateless_uniform(per_image, seeds[2]) < probability, tf.float32)
    in_bar = _in_band(height, width, widths)
    bar_value = tf.cast(tf.random.stateless_uniform(per_image, seeds[3]) < 0.2, tf.float32)
    images = tf.where(in_bar, bar_value, images)

    # Markers: one of the fixed overlays, bright (or, one time in five, dark), alpha-blended.
    overlays = tf.constant(marker_overlays(size))[..., tf.newaxis]
    draws = tf.random.stateless_uniform([batch, 3], seeds[4])
    chosen = tf.gather(overlays, tf.cast(draws[:, 0] * MARKER_OVERLAYS, tf.int32) % MARKER_OVERLAYS)
    opacity = chosen * tf.reshape(tf.cast(draws[:, 1] < probability, tf.float32), per_image)
    ink = tf.reshape(tf.where(draws[:, 2] < 0.2, draws[:, 2], 0.75 + draws[:, 2] / 4), per_image)
    return images * (1.0 - opacity) + ink * opacity


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
    scale_x = scale_y = scale
    if ranges.log_aspect > 0:
        aspect_seed = tf.random.experimental.stateless_fold_in(seeds[8], 3)
        aspect = tf.exp(tf.random.stateless_uniform([batch], aspect_seed, -ranges.log_aspect, ranges.log_aspect))
        scale_x, scale_y = scale * tf.sqrt(aspect), scale / tf.sqrt(aspect)
    # M = R(angle) diag(1 / scale_x, 1 / scale_y)
    a0, a1 = tf.cos(angle) / scale_x, -tf.sin(angle) / scale_y
    b0, b1 = tf.sin(angle) / scale_x, tf.cos(angle) / scale_y
    cx, cy = (width - 1) / 2, (height - 1) / 2
    transforms = tf.stack(
        [
            a0,
            a1,
            cx - a0 * cx - a1 * cy - shift_x,
            b0,
            b1,
            cy - b0 * cx - b1 * cy - shift_y,
            tf.zeros([batch]),
            tf.zeros([batch]),
        ],
        axis=1,
    )
    images = tf.raw_ops.ImageProjectiveTransformV3(
        images=images,
        transforms=transforms,
        output_shape=tf.shape(images)[1:3],
        fill_value=0.0,
        interpolation="BILINEAR",
        fill_mode="CONSTANT",
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
        _gaussian_kernel(),
        strides=[1, 1, 1, 1],
        padding="VALID",
    )
    mix = uniform(7, *ranges.blur_mix, per_image)
    images = images + mix * (blurred - images)

    # Noise.
    noise_std = uniform(8, 0.0, ranges.noise_std, per_image)
    noise = tf.random.stateless_normal(tf.shape(images), tf.random.experimental.stateless_fold_in(seeds[8], 1))
    images = tf.clip_by_value(images + noise_std * noise, 0.0, 1.0)
    if ranges.shortcut_probability > 0:
        # Inside tf.data the warp's output has no static size; the planes' batch shape has.
        size = tuple(planes.shape[1:3]) if None not in planes.shape[1:3] else IMAGE_SIZE
        shortcut_seed = tf.random.experimental.stateless_fold_in(seeds[8], 2)
        images = add_shortcuts(images, shortcut_seed, ranges.shortcut_probability, ranges.border_fraction, size)
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
    planes: np.ndarray,
    targets: np.ndarray,
    batch_size: int,
    seed: int,
    augment: bool,
    ranges: AcquisitionRanges = DEFAULT_RANGES,
    mixup_alpha: float = 0.0,
    border_swap: float = 0.0,
):
    """Shuffled batches of (model input, one-hot target), augmented afresh each epoch; with
    ``border_swap`` above zero, that share of the images get another image's outer band
    (``swap_borders``); with ``mixup_alpha`` above zero, each image and its target blended with
    another of the batch."""
    import tensorflow as tf

    data = tf.data.Dataset.from_tensor_slices((planes, targets))
    data = data.shuffle(len(planes), seed=seed, reshuffle_each_iteration=True).batch(batch_size)
    if augment:
        draws = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)

        def augmented(batch, draw):
            images, labels = augment_planes(batch[0], draw, ranges), batch[1]
            if border_swap > 0:
                images = swap_borders(images, tf.random.experimental.stateless_fold_in(draw, 5), border_swap)
            if mixup_alpha > 0:
                images, labels = mixup(images, labels, tf.random.experimental.stateless_fold_in(draw, 7), mixup_alpha)
            return images, labels

        data = tf.data.Dataset.zip((data, draws)).map(augmented, num_parallel_calls=tf.data.AUTOTUNE)
    else:
        data = data.map(lambda x, y: (tf.repeat(tf.cast(x, tf.float32)[..., tf.newaxis] / 255.0, 3, axis=-1), y))
    return data.prefetch(tf.data.AUTOTUNE)


SWAP_BAND = (0.05, 0.2)


def swap_borders(images, seed, probability: float, band: tuple[float, float] = SWAP_BAND):
    """Each image of a float32 (b, h, w, c) batch, with ``probability``, gets the outer band of
    the next image in the batch (a random one of either class, the batch being shuffled) around its
    own middle, keeping its own label: each side's width drawn from ``band`` (a share of the side).
    What lies near the edges of the film (shoulders, arms, collimation, markers, framing) then
    carries no label signal, so the network has to find it in the middle; a stateless seed (2,)."""
    import tensorflow as tf

    batch, height, width = tf.shape(images)[0], tf.shape(images)[1], tf.shape(images)[2]
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=2)
    widths = tf.random.stateless_uniform([4, batch, 1, 1, 1], seeds[0], *band)
    chosen = tf.random.stateless_uniform([batch, 1, 1, 1], seeds[1]) < probability
    return tf.where(_in_band(height, width, widths) & chosen, tf.roll(images, shift=1, axis=0), images)


def mixup(images, targets, seed, alpha: float):
    """Mixup (Zhang et al., 2018): each image and target blended with the batch's reversed order,
    by a weight drawn from Beta(alpha, alpha) per image; a stateless seed (2,)."""
    import tensorflow as tf

    batch = tf.shape(images)[0]
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=2)
    first = tf.random.stateless_gamma([batch], seeds[0], alpha)
    second = tf.random.stateless_gamma([batch], seeds[1], alpha)
    weight = first / tf.maximum(first + second, 1e-12)
    weight = tf.maximum(weight, 1.0 - weight)  # the image keeps the larger share, so its label leads
    partner_images, partner_targets = tf.reverse(images, axis=[0]), tf.reverse(targets, axis=[0])
    image_weight = tf.reshape(weight, [batch, 1, 1, 1])
    target_weight = tf.reshape(weight, [batch, 1])
    return (
        image_weight * images + (1.0 - image_weight) * partner_images,
        target_weight * tf.cast(targets, tf.float32) + (1.0 - target_weight) * tf.cast(partner_targets, tf.float32),
    )
