"""A seed ensemble folded into one network gives exactly the mean of its members' logits."""

from __future__ import annotations

import numpy as np
import pytest

from pneumoscan.model.architectures import ARCHITECTURES, LAST_CONV_LAYER, fold_ensemble
from pneumoscan.model.gradcam import GradCam


def _logits(model, inputs: np.ndarray) -> np.ndarray:
    probabilities = model.predict(inputs, verbose=0)
    return np.log(probabilities[:, 1]) - np.log(probabilities[:, 0])


def test_the_folded_model_gives_the_mean_logit_and_survives_saving(tmp_path):
    import keras

    rng = np.random.default_rng(0)
    members = []
    for _ in range(3):
        member = ARCHITECTURES["tuned"]()
        member.set_weights([w + rng.normal(0, 0.05, w.shape).astype(w.dtype) for w in member.get_weights()])
        members.append(member)
    inputs = rng.random((5, 128, 128, 3), dtype=np.float32)
    folded = fold_ensemble(members)
    expected = np.mean([_logits(member, inputs) for member in members], axis=0)
    assert _logits(folded, inputs) == pytest.approx(expected, abs=1e-4)
    folded.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras")
    assert _logits(loaded, inputs) == pytest.approx(expected, abs=1e-4)
    assert loaded.get_layer(LAST_CONV_LAYER).output.shape[-1] == 3 * 256
    probability, heatmap = GradCam(loaded)(inputs[0])
    assert 0.0 <= probability <= 1.0 and heatmap.shape == (8, 8)


def test_only_chains_fold():
    import keras
    from keras import layers

    inputs = keras.Input((128, 128, 3))
    x = layers.Add()([layers.Conv2D(4, 3, padding="same")(inputs), layers.Conv2D(4, 1)(inputs)])
    x = layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, layers.Dense(2, activation="softmax")(x))
    with pytest.raises(ValueError, match="chain"):
        fold_ensemble([model])


def test_a_distilled_student_learns_the_teachers_answer_not_only_the_labels():
    """Taught with all of its loss from a teacher that says P(pneumonia) = 0.7 to everything, a
    student given only NORMAL labels learns 0.7; with none of it, the labels' 0."""
    import keras

    from training.train import distiller

    rng = np.random.default_rng(0)
    inputs = rng.random((64, 4), dtype=np.float32)
    labels = np.tile(np.eye(2, dtype=np.float32)[0], (64, 1))
    teacher = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    teacher.set_weights([np.zeros((4, 2), np.float32), np.log(np.array([0.3, 0.7], np.float32))])

    def taught(weight: float) -> float:
        keras.utils.set_random_seed(1)
        student = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
        model = distiller(student, teacher, weight)
        model.compile(optimizer=keras.optimizers.Adam(0.1), loss="categorical_crossentropy")
        model.fit(inputs, labels, epochs=60, batch_size=64, verbose=0)
        assert model.predict(inputs, verbose=0) == pytest.approx(student.predict(inputs, verbose=0))
        return float(student.predict(inputs, verbose=0)[:, 1].mean())

    assert taught(1.0) == pytest.approx(0.7, abs=0.03)
    assert taught(0.0) < 0.1
    assert teacher.get_weights()[1] == pytest.approx(np.log([0.3, 0.7]), abs=1e-6), "the teacher is not trained"
