"""Folds by patient, the grouping they use and the choice of epochs for ``pneumoscan adapt``."""

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
