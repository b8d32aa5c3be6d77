"""Shortcut augmentation (border bars, burned-in markers), the equalisation layer and the
sensitivity-target threshold rule."""

from __future__ import annotations

import numpy as np
import pytest

from training.augment import (
    DEFAULT_RANGES,
    SHORTCUT_RANGES,
    add_shortcuts,
    augment_planes,
    marker_overlays,
    training_dataset,
)
from training.calibration import sensitivity_threshold


def _planes(count: int = 6) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(60, 200, size=(count, 128, 128), dtype=np.uint8)


def test_marker_overlays_are_fixed_and_mostly_near_the_edges():
    first, second = marker_overlays((128, 128), count=32), marker_overlays((128, 128), count=32)
    assert first.shape == (32, 128, 128) and first.dtype == np.float32
    assert np.array_equal(first, second)
    assert first.min() >= 0.0 and first.max() <= 1.0
    assert np.all(first.reshape(32, -1).max(axis=1) > 0.5), "every overlay draws something"
    border = np.ones((128, 128), dtype=bool)
    border[32:96, 32:96] = False
    assert first[:, border].sum() > first[:, ~border].sum()


def test_shortcuts_are_drawn_with_their_probability():
    import tensorflow as tf

    images = tf.constant(_planes(), tf.float32)[..., tf.newaxis] / 255.0
    seed = tf.constant([3, 4], tf.int64)
    assert np.array_equal(add_shortcuts(images, seed, 0.0, 0.12, (128, 128)).numpy(), images.numpy())
    marked = add_shortcuts(images, seed, 1.0, 0.12, (128, 128)).numpy()
    assert np.array_equal(marked, add_shortcuts(images, seed, 1.0, 0.12, (128, 128)).numpy())
    assert marked.min() >= 0.0 and marked.max() <= 1.0
    changed = np.abs(marked - images.numpy()).reshape(len(marked), -1).max(axis=1)
    assert np.all(changed > 0.1), "with probability 1 every image gets a marker"


def test_shortcut_ranges_keep_the_acquisition_draws():
    import tensorflow as tf

    planes, seed = tf.constant(_planes()), tf.constant([5, 6], tf.int64)
    plain = augment_planes(planes, seed, DEFAULT_RANGES).numpy()
    marked = augment_planes(planes, seed, SHORTCUT_RANGES).numpy()
    assert plain.shape == marked.shape == (6, 128, 128, 3)
    # Markers and bars cover a small part of the image; the rest is the same acquisition draw.
    assert np.mean(np.isclose(plain, marked, atol=1e-6)) > 0.6


def test_training_dataset_draws_shortcuts():
    planes = _planes(8)
    targets = np.eye(2, dtype=np.float32)[np.arange(8) % 2]
    data = training_dataset(planes, targets, batch_size=4, seed=1, augment=True, ranges=SHORTCUT_RANGES)
    batches = [inputs.numpy() for inputs, _ in data]
    assert [batch.shape for batch in batches] == [(4, 128, 128, 3), (4, 128, 128, 3)]
    assert all(batch.min() >= 0.0 and batch.max() <= 1.0 for batch in batches)


def test_equalization_ignores_monotone_exposure_changes(tmp_path):
    from pneumoscan.model.architectures import build_tuned_model
    from pneumoscan.model.predictor import MODEL_FILE, load_keras_model

    grey = np.random.default_rng(1).random((3, 128, 128, 1), dtype=np.float32).repeat(3, axis=-1)
    model = build_tuned_model(equalize=True)
    layer = model.get_layer("equalize")
    reference = np.asarray(layer(grey))
    assert reference.min() >= 0.0 and reference.max() <= 1.0
    for changed in (grey**2.0, 0.5 * grey + 0.3):
        assert np.abs(np.asarray(layer(changed)) - reference).max() < 0.02  # 1/bins of interpolation
    model.save(tmp_path / MODEL_FILE)
    loaded = load_keras_model(tmp_path)
    assert np.allclose(np.asarray(loaded(grey)), np.asarray(model(grey)), atol=1e-6)
    assert "equalize" not in [layer.name for layer in build_tuned_model(equalize=False).layers]


def test_equalized_model_trains_in_a_graph():
    from pneumoscan.model.architectures import build_tuned_model

    model = build_tuned_model(equalize=True)
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    inputs = np.random.default_rng(2).random((8, 128, 128, 3), dtype=np.float32)
    history = model.fit(inputs, np.eye(2, dtype=np.float32)[np.arange(8) % 2], epochs=1, batch_size=4, verbose=0)
    assert np.isfinite(history.history["loss"][0])


def test_sensitivity_threshold_keeps_the_target():
    labels = np.r_[np.zeros(50), np.ones(100)]
    scores = np.r_[np.linspace(0.0, 0.6, 50), np.linspace(0.3, 1.0, 100)]
    for target in (0.9, 0.95, 1.0):
        threshold = sensitivity_threshold(labels, scores, target)
        assert np.mean(scores[labels == 1] >= threshold) >= target
        # The highest such threshold: any higher one loses sensitivity below the target.
        assert np.mean(scores[labels == 1] >= np.nextafter(threshold, 1.0)) < target
    with pytest.raises(ValueError):
        sensitivity_threshold(labels, scores, 0.0)
    with pytest.raises(ValueError):
        sensitivity_threshold(np.zeros(3), np.zeros(3), 0.9)


def test_framing_ranges_stretch_and_zoom_without_leaving_the_unit_range():
    import tensorflow as tf

    from training.augment import FRAMING_RANGES

    planes, seed = tf.constant(_planes()), tf.constant([8, 9], tf.int64)
    framed = augment_planes(planes, seed, FRAMING_RANGES).numpy()
    assert framed.shape == (6, 128, 128, 3) and framed.min() >= 0.0 and framed.max() <= 1.0
    assert np.array_equal(framed, augment_planes(planes, seed, FRAMING_RANGES).numpy()), "the same seed, the same draw"
    # Ranges without a stretch draw exactly what they drew before the stretch existed.
    assert np.array_equal(augment_planes(planes, seed, DEFAULT_RANGES).numpy(), augment_planes(planes, seed).numpy())


def test_mixup_blends_images_and_targets_alike():
    import tensorflow as tf

    from training.augment import mixup

    images = tf.constant(np.stack([np.zeros((4, 4, 3)), np.ones((4, 4, 3))]).astype(np.float32))
    targets = tf.constant(np.eye(2, dtype=np.float32))
    mixed, mixed_targets = (t.numpy() for t in mixup(images, targets, tf.constant([1, 2], tf.int64), 0.3))
    # Image 0 (all 0) blended with image 1 (all 1): its pixels are the share it took from image 1.
    share = mixed[0].mean()
    assert 0.0 <= share <= 0.5 and np.isclose(mixed_targets[0, 1], share, atol=1e-6)
    assert np.allclose(mixed_targets.sum(axis=1), 1.0)


def test_swap_borders_gives_an_image_the_next_ones_outer_band_and_keeps_its_middle():
    import tensorflow as tf

    from training.augment import SWAP_BAND, swap_borders

    images = tf.constant(np.stack([np.full((40, 40, 3), value) for value in (0.0, 0.5, 1.0)]).astype(np.float32))
    seed = tf.constant([3, 4], tf.int64)
    swapped = swap_borders(images, seed, probability=1.0).numpy()
    inner = round(40 * SWAP_BAND[1])
    for index in range(3):
        middle = swapped[index, inner:-inner, inner:-inner]
        assert np.all(middle == images[index].numpy()[0, 0, 0]), "the middle stays the image's own"
        outer = round(40 * SWAP_BAND[0])
        ring = np.concatenate([swapped[index, :outer].ravel(), swapped[index, -outer:].ravel()])
        assert np.all(ring == images[index - 1].numpy()[0, 0, 0]), "the band is the image before it in the batch"
    assert np.array_equal(swapped, swap_borders(images, seed, probability=1.0).numpy()), "the same seed, the same draw"
    assert np.array_equal(swap_borders(images, seed, probability=0.0).numpy(), images.numpy())
