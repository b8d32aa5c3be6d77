"""The sample ``pneumoscan adapt`` fine-tunes on: the site's X-rays the parent scored (refused
ones left out and counted), decoded once, grouped by patient, and refused before any training
when too small; with ``--train-data``, the parent's own training X-rays and validation split."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pneumoscan import CLASS_NAMES
from pneumoscan.errors import DataError
from pneumoscan.model.predictor import Predictor
from pneumoscan.schemas import ModelMetadata
from training.adapt.folds import Grouping, grouping
from training.data import Example, find_examples, load_planes, split_by_patient
from training.site.calibrate import MIN_PER_CLASS, SampleTooSmall
from training.site.data import read_patients, site_examples
from training.site.scores import SiteScores, score_site


def check_sample(labels: np.ndarray, groups: np.ndarray, folds: int, minimum: int = MIN_PER_CLASS) -> None:
    """``SampleTooSmall`` saying how many more X-rays (or patients) of which class are needed."""
    short, have = [], []
    for label, name in enumerate(CLASS_NAMES):
        count = int(np.sum(labels == label))
        patients = len(set(groups[labels == label].tolist()))
        have.append(f"{count} {name} ({patients} patients)")
        if count < minimum:
            short.append(f"{minimum - count} more {name}")
        elif patients < folds:
            short.append(f"{name} X-rays of {folds - patients} more patients")
    if short:
        raise SampleTooSmall(
            f"Adapting needs at least {minimum} scored X-rays of each class from at least {folds} patients each; "
            f"the sample has {' and '.join(have)}. Add {' and '.join(short)} (refused images do not count). "
            "Nothing was written."
        )


def validation_split(metadata: ModelMetadata, train_data: Path) -> tuple[list[Example], list[Example]]:
    """The parent's own training and validation split of ``train_data``, as ``train`` made it."""
    from training.data import DEFAULT_VALIDATION_FRACTION, fingerprint

    examples = find_examples(train_data)
    if fingerprint(examples, train_data) != metadata.training_fingerprint:
        raise DataError(
            f"{train_data} is not the folder {metadata.version} was trained on (its file list differs); "
            "--train-data needs the model's own training folder."
        )
    return split_by_patient(examples, DEFAULT_VALIDATION_FRACTION, metadata.seed)


@dataclass(frozen=True)
class SiteSample:
    """The site's scored X-rays, decoded once, with their patients and the optional training data."""

    examples: list[Example]  # every labelled file, refused ones included
    scores: SiteScores  # the parent's answers
    planes: np.ndarray  # the scored X-rays, in the order of ``scores``
    labels: np.ndarray
    grouped: Grouping
    extra: tuple[np.ndarray, np.ndarray] | None  # the parent's training X-rays (--train-data)
    validation: tuple[np.ndarray, np.ndarray] | None  # the parent's validation split (--train-data)


def load_sample(
    base: Predictor,
    parent: ModelMetadata,
    data_dir: str | Path,
    labels_csv: str | Path | None,
    train_data: str | Path | None,
    folds: int,
    batch_size: int,
    training_images: bool = True,
) -> SiteSample:
    """Score the site's X-rays with the parent, refuse a sample too small, decode what training needs
    (with ``train_data``, its validation split, and its training X-rays unless ``training_images`` is False)."""
    examples = site_examples(data_dir, labels_csv)
    patients = read_patients(data_dir, labels_csv) if labels_csv is not None else None
    scores = score_site(base, examples, data_dir, batch_size=batch_size)
    scored_paths = set(scores.paths)
    scored = [e for e in examples if e.path in scored_paths]
    grouped = grouping(scored, patients)
    check_sample(scores.labels, grouped.groups, folds)
    planes, labels = load_planes(scored, "Loading site images")
    extra = validation = None
    if train_data is not None:
        train_examples, validation_examples = validation_split(parent, Path(train_data))
        if training_images:
            extra = load_planes(train_examples, "Loading training images")
        validation = load_planes(validation_examples, "Loading validation images")
    return SiteSample(examples, scores, planes, labels, grouped, extra, validation)
