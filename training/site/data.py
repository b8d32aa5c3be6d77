"""A site's labelled X-rays: ``DATA/{NORMAL,PNEUMONIA}/`` folders, or any folder with a
``file,label`` CSV (what a reader's review exports), files relative to DATA."""

from __future__ import annotations

import csv
import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

from pneumoscan import CLASS_NAMES
from pneumoscan.errors import DataError
from training.data import Example, find_examples

LABELS_COLUMNS = ("file", "label")
_SHOWN = 5  # problems listed in an error message before "and N more"


def absolute(path: str | Path) -> Path:
    """``path`` made absolute and normalised by its text alone: ``..`` is resolved, links are not
    (a site's folder may link to its archive)."""
    return Path(os.path.normpath(os.path.abspath(path)))


def relative_name(path: str | Path, data_dir: str | Path) -> str:
    """``path`` relative to the data folder, as the labels CSV and the reports name it."""
    return absolute(path).relative_to(absolute(data_dir)).as_posix()


def _listing(problems: Sequence[str]) -> str:
    shown = "; ".join(problems[:_SHOWN])
    return shown + (f"; and {len(problems) - _SHOWN} more" if len(problems) > _SHOWN else "")


def _labels_reader(labels_csv: str | Path) -> csv.DictReader:
    """The labels CSV's rows, under its column names stripped and lower-cased."""
    try:
        text = Path(labels_csv).read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise DataError(f"Cannot read the labels file {labels_csv}: {exc.strerror or exc}") from exc
    reader = csv.DictReader(text.splitlines())
    reader.fieldnames = [name.strip().lower() for name in reader.fieldnames or []]
    return reader


def read_labels(data_dir: str | Path, labels_csv: str | Path) -> list[Example]:
    """The examples a ``file,label`` CSV names, in its order; ``DataError`` for a missing column, an
    unknown label, a file outside DATA or missing, or a file listed twice."""
    root = absolute(data_dir)
    if not root.is_dir():
        raise DataError(f"Data folder {data_dir} does not exist.")
    reader = _labels_reader(labels_csv)
    columns = list(reader.fieldnames or [])
    if not set(LABELS_COLUMNS) <= set(columns):
        raise DataError(
            f"{labels_csv} needs the columns {','.join(LABELS_COLUMNS)}; it has {','.join(columns) or 'none'}."
        )
    examples: list[Example] = []
    problems: list[str] = []
    seen: set[Path] = set()
    for line, row in enumerate(reader, start=2):
        name, label = (row.get("file") or "").strip(), (row.get("label") or "").strip().upper()
        if not name:
            problems.append(f"line {line}: no file")
            continue
        if label not in CLASS_NAMES:
            problems.append(f"line {line}: label {label or '(empty)'!r} is not {' or '.join(CLASS_NAMES)}")
            continue
        path = absolute(root / name)
        if not path.is_relative_to(root):
            problems.append(f"line {line}: {name} is outside {data_dir}")
        elif not path.is_file():
            problems.append(f"line {line}: {name} does not exist")
        elif path in seen:
            problems.append(f"line {line}: {name} is listed twice")
        else:
            seen.add(path)
            examples.append(Example(path, CLASS_NAMES.index(label)))
    if problems:
        raise DataError(f"{labels_csv}: {len(problems)} row(s) cannot be used: {_listing(problems)}.")
    if not examples:
        raise DataError(f"{labels_csv} lists no images.")
    return examples


def read_patients(data_dir: str | Path, labels_csv: str | Path) -> dict[Path, str] | None:
    """The ``patient`` column of a labels CSV by file (as ``read_labels`` resolves it), or None
    when the file has no such column; a row with an empty patient stands alone."""
    root = absolute(data_dir)
    reader = _labels_reader(labels_csv)
    if "patient" not in (reader.fieldnames or []):
        return None
    patients: dict[Path, str] = {}
    for row in reader:
        name = (row.get("file") or "").strip()
        if name:
            patients[absolute(root / name)] = (row.get("patient") or "").strip() or f"file:{name}"
    return patients


def site_examples(data_dir: str | Path, labels_csv: str | Path | None = None) -> list[Example]:
    """The labelled images of DATA: by its class folders, or by ``labels_csv`` when given."""
    if labels_csv is not None:
        return read_labels(data_dir, labels_csv)
    return find_examples(data_dir)


def data_fingerprint(examples: Sequence[Example], data_dir: str | Path) -> str:
    """sha256 of the sorted ``label,relative path,sha256 of the file`` lines: which images, with
    which truth, a site figure rests on (renaming a folder does not change it; editing an image does)."""
    lines = []
    for example in examples:
        content = hashlib.sha256(example.path.read_bytes()).hexdigest()
        relative = relative_name(example.path, data_dir)
        lines.append(f"{CLASS_NAMES[example.label]},{relative},{content}")
    digest = hashlib.sha256()
    for line in sorted(lines):
        digest.update(line.encode() + b"\n")
    return digest.hexdigest()
