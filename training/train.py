"""``pneumoscan train``: patient-grouped split, fit, threshold on validation, save."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from pneumoscan import CLASS_NAMES
from pneumoscan.imaging.preprocess import plane_to_input
from pneumoscan.model.architectures import ARCHITECTURES
from pneumoscan.model.predictor import MODEL_FILE
from pneumoscan.schemas import ModelMetadata
from training.augment import RANGES, stressed_inputs, training_dataset
from training.data import DEFAULT_VALIDATION_FRACTION, Example, find_examples, load_planes, split_by_patient
from training.finalize import finalize
from training.recipes import Recipe, get_recipe, ranges_name

# Augmented copies of the validation split (fixed seeds) that early stopping, calibration, the
# threshold and the input gate are judged on, besides the clean split.
STRESSED_COPIES = 2
STRESS_SEED = 1000


def distiller(student, teacher, weight: float):
    """``student`` taught by ``teacher`` (Hinton et al., 2015, at temperature 1, as keras-io's
    knowledge-distillation example): the training loss is (1 - weight) x the compiled loss on the
    labels plus weight x the cross-entropy against the teacher's probabilities on the same
    augmented batch; validation and prediction are the student's alone."""
    import keras
    from keras import ops

    teacher.trainable = False

    class Distiller(keras.Model):
        def __init__(self):
            super().__init__(name=f"{student.name}_distilled")
            self.student, self.teacher = student, teacher

        def call(self, inputs, training=False):
            return self.student(inputs, training=training)

        def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
            hard = super().compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=training)
            if not training:
                return hard
            soft = keras.losses.categorical_crossentropy(ops.stop_gradient(self.teacher(x, training=False)), y_pred)
            if sample_weight is not None:
                soft = soft * ops.reshape(ops.cast(sample_weight, soft.dtype), ops.shape(soft))
            return (1.0 - weight) * hard + weight * ops.mean(soft)

    return Distiller()


def make_model(recipe: Recipe, steps_per_epoch: int, teacher=None):
    """Build and compile the recipe's model, taught by ``teacher`` when one is given (the
    ``distiller``; its ``student`` is the model); AUC is tracked for early stopping."""
    import keras

    model = ARCHITECTURES[recipe.architecture]()
    if teacher is not None:
        model = distiller(model, teacher, recipe.distill)
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
        optimizer = keras.optimizers.AdamW(
            learning_rate=learning_rate, weight_decay=recipe.weight_decay, use_ema=recipe.ema
        )
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


@dataclass(frozen=True)
class SplitData:
    """The patient-grouped split as uint8 planes, and the stressed validation copies."""

    examples: list[Example]
    train_planes: np.ndarray
    train_labels: np.ndarray
    validation_planes: np.ndarray
    validation_labels: np.ndarray
    stressed_inputs: np.ndarray  # STRESSED_COPIES augmented copies of validation, in order
    stressed_labels: np.ndarray


def load_split(data_dir: str | Path, validation_fraction: float, seed: int) -> tuple[SplitData, int, int]:
    """Find, split by patient and decode the data; (data, train count, validation count)."""
    examples = find_examples(data_dir)
    train_examples, validation_examples = split_by_patient(examples, validation_fraction, seed)
    train_planes, train_labels = load_planes(train_examples, "Loading training images")
    validation_planes, validation_labels = load_planes(validation_examples, "Loading validation images")
    stressed = np.concatenate(
        [stressed_inputs(validation_planes, STRESS_SEED + copy) for copy in range(STRESSED_COPIES)]
    )
    data = SplitData(
        examples=examples,
        train_planes=train_planes,
        train_labels=train_labels,
        validation_planes=validation_planes,
        validation_labels=validation_labels,
        stressed_inputs=stressed,
        stressed_labels=np.tile(validation_labels, STRESSED_COPIES),
    )
    return data, len(train_examples), len(validation_examples)


def fit(recipe: Recipe, data: SplitData, seed: int, verbose: int | str = "auto", teacher=None):
    """Train the recipe's model, taught by ``teacher`` if given; returns (model, history, seconds).
    Early stopping watches the AUC on validation plus its stressed copies, which rewards holding
    up under acquisition shift."""
    import keras

    one_hot = np.eye(len(CLASS_NAMES), dtype=np.float32)
    steps_per_epoch = int(np.ceil(len(data.train_labels) / recipe.batch_size))
    model = make_model(recipe, steps_per_epoch, teacher)
    monitor_inputs = np.concatenate([plane_to_input(data.validation_planes), data.stressed_inputs])
    monitor_labels = np.concatenate([data.validation_labels, data.stressed_labels])
    callbacks = [
        keras.callbacks.EarlyStopping(
            monitor="val_auc",
            mode="max",
            patience=recipe.early_stopping_patience,
            restore_best_weights=True,
            start_from_epoch=recipe.early_stopping_start,
        )
    ]
    dataset = training_dataset(
        data.train_planes,
        one_hot[data.train_labels],
        recipe.batch_size,
        seed,
        recipe.acquisition_augmentation,
        RANGES[ranges_name(recipe)],
        recipe.mixup_alpha,
        recipe.border_swap,
    )
    started = time.perf_counter()
    history = model.fit(
        dataset,
        epochs=recipe.epochs,
        validation_data=(monitor_inputs, one_hot[monitor_labels]),
        class_weight=class_weights_for(data.train_labels) if recipe.class_weights else None,
        callbacks=callbacks,
        shuffle=False,  # the dataset shuffles itself, afresh each epoch
        verbose=verbose,
    )
    return getattr(model, "student", model), history.history, time.perf_counter() - started


def train(
    data_dir: str | Path,
    out_dir: str | Path,
    recipe_name: str = "tuned",
    epochs: int | None = None,
    seed: int = 42,
    validation_fraction: float = DEFAULT_VALIDATION_FRACTION,
    verbose: int | str = "auto",
    split_seed: int | None = None,
    members: list[Path] | None = None,
) -> ModelMetadata:
    """Train a recipe on ``data_dir`` and write model.keras, metadata.json, the input gate,
    the plots and MODEL_CARD.md. ``split_seed`` (default ``seed``) draws the validation split, so
    models of several seeds can share one; an ensemble recipe trains its members, or folds the
    trained ones in ``members``."""
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
    data, _, _ = load_split(data_dir, validation_fraction, seed if split_seed is None else split_seed)
    history, described = None, None
    if recipe.member_seeds:
        model, described, training_seconds = ensemble(recipe, data, members, out_dir, verbose)
        if recipe.distill > 0:
            keras.utils.set_random_seed(seed)
            model, history, spent = fit(recipe, data, seed, verbose, teacher=model)
            training_seconds += spent
    else:
        model, history, training_seconds = fit(recipe, data, seed, verbose)
    model.save(out_dir / MODEL_FILE)
    return finalize(
        model,
        out_dir,
        recipe,
        data,
        data_dir,
        seed=seed,
        history=history,
        training_seconds=training_seconds,
        members=described,
    )


def ensemble(
    recipe: Recipe, data: SplitData, member_dirs: list[Path] | None, out_dir: Path, verbose: int | str = "auto"
):
    """(folded model, each member's version, seed, epochs and best epoch, seconds): the recipe's
    members trained on ``data`` one seed after another, or read from ``member_dirs`` (models of
    the member recipe, one per seed in order, trained with ``--split-seed`` on the same split).
    The members' training curves go one above the other into ``out_dir/training_curves.png``."""
    import keras

    from pneumoscan.model.architectures import fold_ensemble
    from pneumoscan.model.predictor import load_keras_model, load_metadata
    from training.plots import plot_training_curves, stack_images

    member_recipe = replace(get_recipe(recipe.members_of or ""), epochs=recipe.epochs)
    models, described, seconds, curves = [], [], 0.0, []
    if member_dirs:
        metadata = [load_metadata(folder) for folder in member_dirs]
        found = [(m.recipe, m.seed, m.validation_images) for m in metadata]
        wanted = [(member_recipe.name, s, len(data.validation_labels)) for s in recipe.member_seeds]
        if found != wanted:
            raise ValueError(
                f"{recipe.name} folds {wanted} (recipe, seed, validation images); the folders hold {found}."
            )
        models = [load_keras_model(folder) for folder in member_dirs]
        curves = [folder / "training_curves.png" for folder in member_dirs]
        described = [m.model_dump(include={"version", "seed", "epochs_run", "best_epoch"}) for m in metadata]
        seconds = sum(m.training_seconds for m in metadata)
    else:
        for member_seed in recipe.member_seeds:
            keras.utils.set_random_seed(member_seed)
            model, history, spent = fit(member_recipe, data, member_seed, verbose)
            models.append(model)
            curves.append(out_dir / f"training_curves_seed{member_seed}.png")
            plot_training_curves(history, curves[-1], title=f"{member_recipe.name} recipe, seed {member_seed}")
            best = int(np.argmax(history["val_auc"])) + 1
            described.append(
                {"version": None, "seed": member_seed, "epochs_run": len(history["val_auc"]), "best_epoch": best}
            )
            seconds += spent
    stack_images([each for each in curves if each.is_file()], out_dir / "training_curves.png")
    for each in curves:
        if each.parent == out_dir:
            each.unlink()
    return fold_ensemble(models), described, seconds
