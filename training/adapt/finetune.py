"""Fine-tuning a trained model on a few hundred of a site's X-rays, keeping what it knew.

What keeps the model close to the one it starts from:
- the first stages (``FROZEN_STAGES``) and every batch norm's statistics and scale stay as they
  were; only the later convolutions and the classifier move;
- L2-SP (Li et al., 2018): the loss adds ``l2_sp`` times the squared distance of the moving weights
  from their starting values, instead of weight decay toward zero;
- a small learning rate, few epochs (chosen out of fold by ``training.adapt.pipeline``), and, when
  training X-rays are given, as many of them as site X-rays mixed into every epoch.

Each batch gets the acquisition augmentation the recipes train with (``training.augment``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from pneumoscan import CLASS_NAMES
from pneumoscan.imaging.preprocess import plane_to_input

FROZEN_STAGES = ("stem", "conv1")


@dataclass(frozen=True)
class FineTuning:
    """How a model is fine-tuned; recorded in the adapted version's metadata."""

    learning_rate: float = 3e-4
    l2_sp: float = 1e-2
    batch_size: int = 32
    label_smoothing: float = 0.05
    frozen_stages: tuple[str, ...] = FROZEN_STAGES
    # The weights after each epoch averaged (Izmailov et al., 2018): smoother than the last epoch's,
    # and sound here because the batch norms stay frozen.
    average_weights: bool = True
    # training.augment.RANGES key: the acquisition draws, and the site's own framing and markers
    # pasted into both classes so the few hundred X-rays cannot teach them.
    ranges: str = "shortcuts"


def _stage(layer_name: str) -> str:
    # An ensemble's members name their stages m1_stem, m2_stem, ...
    return re.sub(r"^m\d+_", "", layer_name).removesuffix("_bn").removesuffix("_relu")


def stages(model) -> list[str]:
    """The stages of ``model`` that hold weights, in order, all but the last layer (the classifier)."""
    names: list[str] = []
    for layer in model.layers[:-1]:
        if layer.weights and _stage(layer.name) not in names:
            names.append(_stage(layer.name))
    return names


def _freeze(model, frozen_stages: tuple[str, ...]) -> None:
    import keras

    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization) or _stage(layer.name) in frozen_stages:
            layer.trainable = False


DEFAULT_FINE_TUNING = FineTuning()


def class_weights(labels: np.ndarray) -> np.ndarray:
    """Per-image loss weights that give each class half of the loss."""
    counts = np.bincount(labels, minlength=len(CLASS_NAMES)).astype(np.float64)
    return (len(labels) / (len(CLASS_NAMES) * np.maximum(counts, 1)))[labels].astype(np.float32)


def fine_tune(
    model,
    planes: np.ndarray,
    labels: np.ndarray,
    epochs: int,
    seed: int,
    settings: FineTuning = DEFAULT_FINE_TUNING,
    *,
    extra: tuple[np.ndarray, np.ndarray] | None = None,
    after_epoch: Callable[[int, object], None] | None = None,
):
    """Fine-tune ``model`` (changed in place and returned) on uint8 ``planes`` for ``epochs``;
    ``extra`` (planes, labels) are training X-rays, as many drawn afresh each epoch as there are
    site X-rays; ``after_epoch(epoch, model)`` runs after each epoch (1-based), with the model
    holding the weights it would end with after that many epochs (the average, with
    ``settings.average_weights``)."""
    import keras
    import tensorflow as tf

    from training.augment import RANGES, augment_planes

    if epochs < 0:
        raise ValueError(f"epochs must be at least 0, got {epochs}.")
    _freeze(model, settings.frozen_stages)
    trainable = model.trainable_variables
    anchors = [tf.constant(np.asarray(variable)) for variable in trainable]
    optimizer = keras.optimizers.Adam(learning_rate=settings.learning_rate)
    one_hot = np.eye(len(CLASS_NAMES), dtype=np.float32)

    @tf.function(reduce_retracing=True)
    def step(inputs, targets, weights):
        with tf.GradientTape() as tape:
            probabilities = model(inputs, training=True)
            loss = keras.losses.categorical_crossentropy(
                targets, probabilities, label_smoothing=settings.label_smoothing
            )
            loss = tf.reduce_sum(loss * weights) / tf.reduce_sum(weights)
            drift = tf.add_n([tf.reduce_sum(tf.square(v - a)) for v, a in zip(trainable, anchors, strict=True)])
            total = loss + settings.l2_sp * drift
        gradients = tape.gradient(total, trainable)
        optimizer.apply(gradients, trainable)
        return loss

    rng = np.random.default_rng(seed)
    totals = [np.zeros(variable.shape, dtype=np.float64) for variable in trainable]
    for epoch in range(1, epochs + 1):
        epoch_planes, epoch_labels = planes, labels
        if extra is not None and len(extra[0]):
            picked = rng.choice(len(extra[0]), size=min(len(planes), len(extra[0])), replace=False)
            epoch_planes = np.concatenate([planes, extra[0][picked]])
            epoch_labels = np.concatenate([labels, extra[1][picked]])
        weights = class_weights(epoch_labels)
        order = rng.permutation(len(epoch_planes))
        for batch_index, start in enumerate(range(0, len(order), settings.batch_size)):
            chosen = order[start : start + settings.batch_size]
            draw = tf.constant([seed * 1000 + epoch, batch_index], dtype=tf.int64)
            inputs = augment_planes(tf.constant(epoch_planes[chosen]), draw, RANGES[settings.ranges])
            step(inputs, tf.constant(one_hot[epoch_labels[chosen]]), tf.constant(weights[chosen]))
        if not settings.average_weights:
            if after_epoch is not None:
                after_epoch(epoch, model)
            continue
        current = [np.asarray(variable) for variable in trainable]
        for total, value in zip(totals, current, strict=True):
            total += value
        for variable, total in zip(trainable, totals, strict=True):
            variable.assign(total / epoch)
        if after_epoch is not None:
            after_epoch(epoch, model)
        if epoch < epochs:
            for variable, value in zip(trainable, current, strict=True):
                variable.assign(value)
    return model


def softmax_of(model, planes: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """The model's softmax (n, 2) on uint8 planes, without augmentation."""
    if len(planes) == 0:
        return np.zeros((0, len(CLASS_NAMES)), dtype=np.float32)
    return np.concatenate(
        [
            np.asarray(model(plane_to_input(planes[start : start + batch_size]), training=False))
            for start in range(0, len(planes), batch_size)
        ]
    )
