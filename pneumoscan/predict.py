"""Score files offline with the shared pipeline: decoding errors become per-file results.

``score_paths`` is the one file-scoring loop: the CLI's ``predict`` and the batch-job worker
both call it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from pneumoscan.dicom import DicomSource
from pneumoscan.errors import PneumoscanError, UnreadableFile
from pneumoscan.imaging import DEFAULT_MAX_PIXELS, decode, plane_to_input, resize_plane
from pneumoscan.model import Predictor
from pneumoscan.result import Result
from pneumoscan.schemas import FilePrediction


def read_file(path: Path) -> bytes:
    """The bytes of an input file; ``UnreadableFile`` when it is missing, a folder or forbidden."""
    try:
        return path.read_bytes()
    except OSError as exc:
        raise UnreadableFile(f"Cannot read {path.name}: {exc.strerror or exc}") from exc


def read_and_decode(
    path: Path, max_pixels: int
) -> tuple[str, np.ndarray | PneumoscanError, DicomSource | None]:
    """(sha256, model input, DICOM UIDs) for a file, or (sha256 or "", the error, None)."""
    try:
        data = read_file(path)
    except UnreadableFile as exc:
        return "", exc, None
    sha256 = hashlib.sha256(data).hexdigest()
    try:
        decoded = decode(data, max_pixels=max_pixels)
        model_input = plane_to_input(resize_plane(decoded.image))
    except PneumoscanError as exc:
        return sha256, exc, None
    return sha256, model_input, decoded.dicom


def score_paths(
    predictor: Predictor,
    paths: Iterable[str | Path],
    *,
    batch_size: int = 32,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    decode_threads: int = 1,
    before_batch: Callable[[list[Path]], None] | None = None,
    progress: Callable[[int], None] | None = None,
) -> Iterator[Result]:
    """One ``Result`` per path (named by the path), in order; decoding in threads overlaps the model's batches."""
    paths = [Path(p) for p in paths]
    with ThreadPoolExecutor(max_workers=decode_threads) as pool:
        decoded = pool.map(lambda path: read_and_decode(path, max_pixels), paths)
        for start in range(0, len(paths), batch_size):
            chunk = paths[start : start + batch_size]
            if before_batch is not None:
                before_batch(chunk)
            outcomes = [next(decoded) for _ in chunk]
            good = [i for i, (_, outcome, _) in enumerate(outcomes) if isinstance(outcome, np.ndarray)]
            judged = predictor.judge(predictor.score(np.stack([outcomes[i][1] for i in good]))) if good else []
            by_index = dict(zip(good, judged))
            if progress is not None:
                progress(len(chunk))
            for i, path in enumerate(chunk):
                sha256, outcome, dicom = outcomes[i]
                result = by_index.get(i, outcome)
                yield Result.of(result, name=str(path), sha256=sha256, dicom=dicom)


def predict_files(
    predictor: Predictor,
    paths: Iterable[str | Path],
    batch_size: int = 32,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> Iterator[FilePrediction]:
    """One ``FilePrediction`` per path, in order, ``batch_size`` images per model call."""
    for result in score_paths(predictor, paths, batch_size=batch_size, max_pixels=max_pixels):
        yield result.file_line()
