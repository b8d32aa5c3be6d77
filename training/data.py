"""Finding, splitting and loading a labelled chest X-ray folder (``DIR/{NORMAL,PNEUMONIA}/*``)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from pneumoscan import CLASS_NAMES, IMAGE_SIZE
from pneumoscan.errors import DataError
from pneumoscan.imaging.preprocess import IMAGE_SUFFIXES, load_plane, plane_to_input

# person1234_bacteria_5678.jpeg -> person1234; IM-0115-0001.jpeg -> IM-0115;
# NORMAL2-IM-0402-0001.jpeg -> NORMAL2-IM-0402 (one study id per normal file).
_PNEUMONIA_PATIENT = re.compile(r"^(person\d+)_", re.IGNORECASE)
_NORMAL_STUDY = re.compile(r"^((?:NORMAL2-)?IM-\d+)-", re.IGNORECASE)


@dataclass(frozen=True)
class Example:
    path: Path
    label: int  # index into CLASS_NAMES

    @property
    def patient_id(self) -> str:
        return patient_id(self.path.name)


DEFAULT_VALIDATION_FRACTION = 0.15
"""Share of the training folder's patients held out for validation (``pneumoscan train``)."""


def patient_id(file_name: str) -> str:
    """The patient (or study) a Kermany file name belongs to; unknown names stand alone."""
    for pattern in (_PNEUMONIA_PATIENT, _NORMAL_STUDY):
        match = pattern.match(file_name)
        if match:
            return match.group(1).lower()
    return Path(file_name).stem.lower()


def find_examples(data_dir: str | Path) -> list[Example]:
    """Every image under ``data_dir/NORMAL`` and ``data_dir/PNEUMONIA``, sorted by path."""
    root = Path(data_dir)
    if not root.is_dir():
        raise DataError(f"Data folder {root} does not exist.")
    examples: list[Example] = []
    for label, class_name in enumerate(CLASS_NAMES):
        class_dir = root / class_name
        if not class_dir.is_dir():
            raise DataError(f"{root} has no {class_name}/ folder; expected DIR/{{NORMAL,PNEUMONIA}}/.")
        examples += [
            Example(path, label)
            for path in sorted(class_dir.rglob("*"))
            if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES
        ]
    if not examples:
        raise DataError(f"No .jpeg/.jpg/.png images under {root}.")
    return examples


def split_by_patient(
    examples: Sequence[Example], validation_fraction: float, seed: int
) -> tuple[list[Example], list[Example]]:
    """Train/validation split with every patient on one side only, stratified by class."""
    if not 0.0 < validation_fraction < 1.0:
        raise ValueError(f"validation_fraction must be in (0, 1), got {validation_fraction}.")
    rng = np.random.default_rng(seed)
    validation_patients: set[str] = set()
    for label in range(len(CLASS_NAMES)):
        patients = sorted({e.patient_id for e in examples if e.label == label})
        rng.shuffle(patients)
        count = max(1, round(len(patients) * validation_fraction)) if len(patients) > 1 else 0
        validation_patients.update(patients[:count])
    train = [e for e in examples if e.patient_id not in validation_patients]
    validation = [e for e in examples if e.patient_id in validation_patients]
    return train, validation


def fingerprint(examples: Sequence[Example], root: str | Path) -> str:
    """sha256 of the sorted ``CLASS/relative/path`` list: which files a model was trained on."""
    digest = hashlib.sha256()
    for line in sorted(f"{e.path.relative_to(root).as_posix()}" for e in examples):
        digest.update(line.encode() + b"\n")
    return digest.hexdigest()


def load_planes(
    examples: Sequence[Example], description: str = "Loading images", workers: int = 2
) -> tuple[np.ndarray, np.ndarray]:
    """Decode every example with the shared pipeline: uint8 (n, 128, 128) planes and labels (n,)."""
    planes = np.empty((len(examples), *IMAGE_SIZE), dtype=np.uint8)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        decoded = pool.map(lambda e: load_plane(e.path.read_bytes()), examples)
        for index, plane in enumerate(tqdm(decoded, total=len(examples), desc=description, unit="img")):
            planes[index] = plane
    labels = np.array([e.label for e in examples], dtype=np.int64)
    return planes, labels


def load_arrays(
    examples: Sequence[Example], description: str = "Loading images", workers: int = 2
) -> tuple[np.ndarray, np.ndarray]:
    """Decode every example into model inputs: (n, 128, 128, 3) float32 and labels (n,)."""
    planes, labels = load_planes(examples, description, workers)
    return plane_to_input(planes), labels
