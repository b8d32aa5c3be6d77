"""Folds by patient, the grouping they use, the choice of epochs and the refitted classifier of ``pneumoscan adapt``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from training.adapt.folds import choose_epochs, grouping, no_gain, patient_folds
from training.data import Example


def test_a_lone_peak_does_not_choose_the_epochs():
    # Epoch 2 alone is highest; epochs 5-7 are high together.
    assert choose_epochs([0.90, 0.91, 0.96, 0.91, 0.93, 0.95, 0.95, 0.95]) == 6
    assert choose_epochs([0.9, 0.95, 0.95, 0.95]) == 1, "ties go to fewer epochs"
    assert choose_epochs([0.9, 0.8]) == 1
    with pytest.raises(ValueError):
        choose_epochs([0.9])


def test_adapting_warns_when_the_chosen_epochs_rank_no_better_than_the_parent():
    assert no_gain([0.970, 0.975, 0.978], epochs=2) is None
    warning = no_gain([0.977, 0.971, 0.972, 0.973], epochs=3)
    assert warning is not None and "AUC 0.977 before, 0.973 after 3 epoch(s)" in warning
    assert "pneumoscan calibrate" in warning
    assert no_gain([0.95, 0.95], epochs=1) is not None, "a tie is no gain"


def test_folds_keep_each_patient_in_one_fold_and_both_classes_in_each():
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(60), 3)
    labels = (groups % 3 == 0).astype(int)
    order = rng.permutation(len(groups))
    groups, labels = groups[order], labels[order]
    assignment = patient_folds(labels, groups, folds=5, seed=1)
    for patient in np.unique(groups):
        assert len(set(assignment[groups == patient])) == 1
    for fold in range(5):
        assert set(labels[assignment == fold]) == {0, 1}


def test_grouping_says_where_the_patients_came_from(tmp_path):
    named = [
        Example(tmp_path / "PNEUMONIA" / "person12_bacteria_1.jpeg", 1),
        Example(tmp_path / "PNEUMONIA" / "person12_virus_2.jpeg", 1),
        Example(tmp_path / "NORMAL" / "NORMAL2-IM-0105-0001.jpeg", 0),
    ]
    by_name = grouping(named, None)
    assert by_name.source == "file names" and by_name.count == 2
    other = [Example(Path("a/scan1.png"), 0), Example(Path("a/scan2.png"), 1)]
    assert grouping(other, None).source == "one file per group" and grouping(other, None).count == 2
    patients = {other[0].path: "P1", other[1].path: "P1"}
    assert grouping(other, patients).source == "patient column" and grouping(other, patients).count == 1


def test_a_refitted_classifiers_correction_folds_into_its_softmax_layer():
    import keras

    from pneumoscan.imaging.preprocess import plane_to_input
    from training.adapt.classifier import apply_correction, features_and_logits, fit_correction

    rng = np.random.default_rng(0)
    inputs = keras.Input(shape=(128, 128, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(
        keras.layers.Conv2D(4, 3, activation="relu", kernel_initializer=keras.initializers.GlorotUniform(seed=1))(
            inputs
        )
    )
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(pooled))
    planes = rng.integers(0, 256, size=(40, 128, 128), dtype=np.uint8)
    labels = np.repeat([0, 1], 20)
    features, logits = features_and_logits(model, planes)
    assert features.shape == (40, 4) and logits.shape == (40,)
    probabilities = np.asarray(model.predict(plane_to_input(planes), verbose=0), dtype=np.float64)
    np.testing.assert_allclose(logits, np.log(probabilities[:, 1] / probabilities[:, 0]), atol=1e-4)
    correction = fit_correction(features, logits, labels, strength=0.01)
    apply_correction(model, correction)
    _, corrected_logits = features_and_logits(model, planes)
    np.testing.assert_allclose(corrected_logits, logits + features @ correction.weights + correction.bias, atol=1e-4)


def test_the_l2_sp_strength_holds_the_classifier_near_the_parent():
    from sklearn.metrics import roc_auc_score

    from training.adapt.classifier import fit_correction, out_of_fold_classifier

    rng = np.random.default_rng(1)
    labels = np.repeat([0, 1], 50)
    features = rng.normal(size=(100, 3))
    features[:, 0] += 2.0 * labels
    features[:, 2] = 5.0  # a feature that never varies gets no weight
    logits = rng.normal(size=100)  # the parent knows nothing
    strong, weak = (fit_correction(features, logits, labels, strength) for strength in (1e3, 1e-3))
    assert np.abs(strong.weights).max() < 1e-3 < np.abs(weak.weights[0])
    assert weak.weights[2] == 0.0
    assert roc_auc_score(labels, logits + features @ weak.weights) > 0.9
    oof = out_of_fold_classifier(features, logits, labels, np.arange(100), folds=5, seed=0)
    assert oof.softmax.shape == (7, 100, 2) and np.allclose(oof.softmax.sum(axis=2), 1.0)
    assert oof.auc_by_epoch[0] == roc_auc_score(labels, logits) and oof.auc_by_epoch[oof.epochs] > 0.9
