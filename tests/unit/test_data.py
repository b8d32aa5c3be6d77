"""Patient ids, the patient-grouped split, fingerprints and the train/serve identity."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pneumoscan.errors import DataError
from pneumoscan.imaging.preprocess import load_image
from training.data import Example, find_examples, fingerprint, load_arrays, patient_id, split_by_patient


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("person1234_bacteria_5678.jpeg", "person1234"),
        ("person1234_virus_2.jpeg", "person1234"),
        ("PERSON7_bacteria_1.JPEG", "person7"),
        ("IM-0115-0001.jpeg", "im-0115"),
        ("NORMAL2-IM-0402-0001.jpeg", "normal2-im-0402"),
        ("scan.png", "scan"),
    ],
)
def test_patient_id(name, expected):
    assert patient_id(name) == expected


def _synthetic_examples() -> list[Example]:
    examples = []
    for patient in range(40):
        for image in range(1 + patient % 4):  # several images per pneumonia patient
            examples.append(Example(Path(f"PNEUMONIA/person{patient}_bacteria_{image}.jpeg"), 1))
    for study in range(20):
        examples.append(Example(Path(f"NORMAL/IM-{study:04d}-0001.jpeg"), 0))
    return examples


def test_split_keeps_each_patient_on_one_side():
    examples = _synthetic_examples()
    train, validation = split_by_patient(examples, 0.2, seed=3)
    assert len(train) + len(validation) == len(examples)
    assert not {e.patient_id for e in train} & {e.patient_id for e in validation}
    # Stratified: both classes on both sides, about the requested share of patients.
    for side in (train, validation):
        assert {e.label for e in side} == {0, 1}
    validation_patients = {e.patient_id for e in validation if e.label == 1}
    assert len(validation_patients) == 8


def test_split_is_deterministic_and_seeded():
    examples = _synthetic_examples()
    assert split_by_patient(examples, 0.2, seed=3) == split_by_patient(examples, 0.2, seed=3)
    assert split_by_patient(examples, 0.2, seed=3) != split_by_patient(examples, 0.2, seed=4)


def test_split_rejects_bad_fraction():
    with pytest.raises(ValueError):
        split_by_patient(_synthetic_examples(), 1.0, seed=0)


def test_find_examples_and_fingerprint(tiny_dataset):
    examples = find_examples(tiny_dataset)
    assert len(examples) == 24
    assert {e.label for e in examples} == {0, 1}
    assert all(e.path.parent.name == ("NORMAL", "PNEUMONIA")[e.label] for e in examples)
    assert fingerprint(examples, tiny_dataset) == fingerprint(list(reversed(examples)), tiny_dataset)
    assert fingerprint(examples[1:], tiny_dataset) != fingerprint(examples, tiny_dataset)


def test_find_examples_refuses_bad_layouts(tmp_path):
    with pytest.raises(DataError):
        find_examples(tmp_path / "missing")
    (tmp_path / "NORMAL").mkdir()
    with pytest.raises(DataError, match="PNEUMONIA"):
        find_examples(tmp_path)


def test_training_and_serving_tensors_are_identical(xray_files):
    """Training reads files through load_arrays; the service gets uploaded bytes."""
    examples = [Example(path, int(path.parent.name == "PNEUMONIA")) for path in xray_files]
    training_images, labels = load_arrays(examples)
    for index, path in enumerate(xray_files):
        serving = load_image(path.read_bytes())
        assert serving.dtype == training_images.dtype
        assert np.array_equal(training_images[index], serving)
    assert labels.tolist() == [e.label for e in examples]
