"""``pneumoscan split``: a labelled folder into a calibration part and a held-out part, stratified
by class and grouped by patient, as links (or copies) in ``OUT/calibration`` and ``OUT/held_out``.

A site calibrates on the first part and validates on the second, so the figures it signs off
were not measured on the images the threshold was chosen on.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

from pneumoscan import CLASS_NAMES
from pneumoscan.errors import DataError
from training.data import Example
from training.site.data import relative_name, site_examples

PARTS = ("calibration", "held_out")


def split_site(
    data_dir: str | Path,
    out_dir: str | Path,
    fraction: float,
    *,
    labels_csv: str | Path | None = None,
    seed: int = 0,
    copy: bool = False,
) -> dict[str, dict[str, int]]:
    """Put ``fraction`` of each class's patients in ``calibration``, the rest in ``held_out``;
    returns the image counts per part and class. Files keep their path relative to DATA."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}.")
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise DataError(f"{out_dir} already exists and is not empty.")
    examples = site_examples(data_dir, labels_csv)
    labels = np.array([e.label for e in examples])
    chosen = calibration_patients(labels, [e.patient_id for e in examples], fraction, np.random.default_rng(seed))
    counts = {part: dict.fromkeys(CLASS_NAMES, 0) for part in PARTS}
    for example in examples:
        part = PARTS[0] if example.patient_id in chosen else PARTS[1]
        _place(example, data_dir, out_dir / part, copy)
        counts[part][CLASS_NAMES[example.label]] += 1
    return counts


def calibration_patients(
    labels: np.ndarray, patients: list[str], fraction: float, rng: np.random.Generator
) -> set[str]:
    """``fraction`` of each class's patients (``patients[i]`` is image i's), drawn with ``rng``."""
    chosen: set[str] = set()
    for label in range(len(CLASS_NAMES)):
        of_class = sorted({patient for patient, own in zip(patients, labels, strict=True) if own == label})
        rng.shuffle(of_class)
        chosen.update(of_class[: round(len(of_class) * fraction)])
    return chosen


def _place(example: Example, data_dir: str | Path, part_dir: Path, copy: bool) -> None:
    """Under ``part_dir/CLASS/``, so that the part is a folder ``validate`` and ``calibrate`` take."""
    relative = Path(relative_name(example.path, data_dir))
    if relative.parts[0] in CLASS_NAMES:
        relative = Path(*relative.parts[1:])
    target = part_dir / CLASS_NAMES[example.label] / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    if copy:
        shutil.copy2(example.path, target)
    else:
        os.symlink(os.path.abspath(example.path), target)
