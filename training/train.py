"""``pneumoscan train``: patient-grouped split, fit, threshold on validation, save."""

from __future__ import annotations

import hashlib
import platform
import time
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from pneumoscan import CLASS_NAMES
from pneumoscan.model import ARCHITECTURES, INPUT_SHAPE, MODEL_FILE, Predictor, save_metadata
from pneumoscan.schemas import ModelMetadata
from training.data import find_examples, fingerprint, load_arrays, split_by_patient
from training.metrics import choose_threshold, evaluate_predictions
from training.recipes import Recipe, get_recipe

DEFAULT_VALIDATION_FRACTION = 0.15
DEFAULT_TARGET_SENSITIVITY = 0.95


def make_model(recipe: Recipe, steps_per_epoch: int):
    """Build and compile the recipe's model; AUC is tracked for early stopping."""
    import keras

    model = ARCHITECTURES[recipe.architecture]()
    learning_rate = recipe.learning_rate
    if recipe.cosine_decay:
        total_steps = max(1, recipe.epochs * steps_per_epoch)
        warmup_steps = recipe.warmup_epochs * steps_per_epoch
        learning_rate = keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=recipe.learning_rate / 10 if warmup_steps else recipe.learning_rate,
            decay_steps=max(1, total_steps - warmup_steps),
            warmup_target=recipe.learning_rate if warmup_steps else None,
            warmup_steps=warmup_steps,
        )
    if recipe.optimizer == "rmsprop":
        optimizer = keras.optimizers.RMSprop(learning_rate=learning_rate)
    elif recipe.optimizer == "adamw":
        optimizer = keras.optimizers.AdamW(learning_rate=learning_rate, weight_decay=recipe.weight_decay)
    else:
        raise ValueError(f"Unknown optimizer {recipe.optimizer!r}.")
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=recipe.label_smoothing),
        metrics=["accuracy", keras.metrics.AUC(name="auc")],
    )
    return model


def class_weights_for(labels: np.ndarray) -> dict[int, float]:
    """Inverse-frequency weights, so each class contributes equally to the loss."""
    counts = np.bincount(labels, minlength=len(CLASS_NAMES))
    if np.any(counts == 0):
        raise ValueError(f"Both classes are needed for training; counts are {counts.tolist()}.")
    return {index: len(labels) / (len(CLASS_NAMES) * count) for index, count in enumerate(counts)}


def train(
    data_dir: str | Path,
    out_dir: str | Path,
    recipe_name: str = "tuned",
    epochs: int | None = None,
    seed: int = 42,
    validation_fraction: float = DEFAULT_VALIDATION_FRACTION,
    target_sensitivity: float = DEFAULT_TARGET_SENSITIVITY,
    verbose: int | str = "auto",
) -> ModelMetadata:
    """Train a recipe on ``data_dir`` and write model.keras, metadata.json and training_curves.png."""
    import keras
    import tensorflow as tf

    recipe = get_recipe(recipe_name)
    if epochs is not None:
        if epochs < 1:
            raise ValueError(f"epochs must be at least 1, got {epochs}.")
        recipe = replace(recipe, epochs=epochs)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()

    examples = find_examples(data_dir)
    train_examples, validation_examples = split_by_patient(examples, validation_fraction, seed)
    train_images, train_labels = load_arrays(train_examples, "Loading training images")
    validation_images, validation_labels = load_arrays(validation_examples, "Loading validation images")
    one_hot = np.eye(len(CLASS_NAMES), dtype=np.float32)

    steps_per_epoch = int(np.ceil(len(train_examples) / recipe.batch_size))
    model = make_model(recipe, steps_per_epoch)
    callbacks = [
        keras.callbacks.EarlyStopping(
            monitor="val_auc", mode="max", patience=recipe.early_stopping_patience, restore_best_weights=True
        )
    ]
    started = time.perf_counter()
    history = model.fit(
        train_images,
        one_hot[train_labels],
        batch_size=recipe.batch_size,
        epochs=recipe.epochs,
        validation_data=(validation_images, one_hot[validation_labels]),
        class_weight=class_weights_for(train_labels) if recipe.class_weights else None,
        callbacks=callbacks,
        shuffle=True,
        verbose=verbose,
    )
    training_seconds = time.perf_counter() - started

    model_path = out_dir / MODEL_FILE
    model.save(model_path)
    validation_auc = history.history["val_auc"]
    created = datetime.now(timezone.utc)
    model_hash = hashlib.sha256(model_path.read_bytes()).hexdigest()

    # Score validation through the serving path, so the threshold matches what is deployed.
    predictor = Predictor(model, threshold=0.5, model_version="unsaved")
    validation_probabilities = predictor.predict_proba(validation_images)
    threshold = choose_threshold(validation_labels, validation_probabilities, target_sensitivity)
    report = evaluate_predictions(validation_labels, validation_probabilities, threshold)

    metadata = ModelMetadata(
        version=f"{recipe.name}-{created:%Y%m%d%H%M}-{model_hash[:8]}",
        recipe=recipe.name,
        class_names=list(CLASS_NAMES),
        input_shape=list(INPUT_SHAPE),
        threshold=threshold,
        target_sensitivity=target_sensitivity,
        epochs_run=len(validation_auc),
        best_epoch=int(np.argmax(validation_auc)) + 1,
        seed=seed,
        validation=report,
        train_images=len(train_examples),
        validation_images=len(validation_examples),
        training_fingerprint=fingerprint(examples, data_dir),
        created=created,
        training_seconds=round(training_seconds, 1),
        versions={
            "python": platform.python_version(),
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
            "numpy": np.__version__,
        },
    )
    save_metadata(out_dir, metadata)

    from training.model_card import write_model_card
    from training.plots import plot_training_curves

    plot_training_curves(history.history, out_dir / "training_curves.png", title=f"{recipe.name} recipe")
    write_model_card(out_dir, metadata)
    return metadata

