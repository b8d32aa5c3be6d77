"""Score files offline with the shared pipeline: decoding errors become per-file results."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from pneumoscan.errors import PneumoscanError, UnreadableFile
from pneumoscan.imaging import DEFAULT_MAX_PIXELS, load_image_file
from pneumoscan.model import Predictor
from pneumoscan.schemas import ErrorInfo, FilePrediction


def read_input(path: Path, max_pixels: int) -> np.ndarray:
    """``load_image_file`` with unreadable paths reported as ``UnreadableFile``."""
    try:
        return load_image_file(path, max_pixels=max_pixels)
    except OSError as exc:
        raise UnreadableFile(f"Cannot read {path}: {exc.strerror or exc}") from exc


def predict_files(
    predictor: Predictor,
    paths: Iterable[str | Path],
    batch_size: int = 32,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> Iterator[FilePrediction]:
    """One ``FilePrediction`` per path, in order, ``batch_size`` images per model call."""
    paths = [Path(p) for p in paths]
    for start in range(0, len(paths), batch_size):
        chunk = paths[start : start + batch_size]
        arrays: list[np.ndarray] = []
        slots: list[FilePrediction | None] = []
        for path in chunk:
            try:
                arrays.append(read_input(path, max_pixels))
                slots.append(None)
            except PneumoscanError as exc:
                slots.append(FilePrediction(file=str(path), error=ErrorInfo(**exc.to_dict())))
        predictions = iter(predictor.predict(np.stack(arrays)) if arrays else [])
        for path, slot in zip(chunk, slots):
            if slot is None:
                prediction = next(predictions)
                slot = FilePrediction(
                    file=str(path),
                    label=prediction.label,
                    probability=prediction.probability,
                    threshold=prediction.threshold,
                )
            yield slot
