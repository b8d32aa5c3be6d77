"""Score files offline with the shared pipeline: decoding errors become per-file results.

``score_paths`` is the one file-scoring loop: the CLI's ``predict`` and the batch-job worker
both call it. ``score_paths_keeping_scans`` is the same loop, also giving back what decoding a
DICOM file made (its header, the plane the model saw, the grey image at the overlay's size), so
the DICOM results are built without reading or decoding the file again.
"""

from __future__ import annotations

import hashlib
import io
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image
from pydicom.errors import InvalidDicomError

from pneumoscan.dicom.decode import DicomSource, is_dicom
from pneumoscan.errors import PneumoscanError, UnreadableFile
from pneumoscan.imaging.preprocess import DEFAULT_MAX_PIXELS, decode, plane_to_input, resize_plane
from pneumoscan.model.gradcam import display_image
from pneumoscan.model.predictor import Predictor
from pneumoscan.result import Result
from pneumoscan.schemas import FilePrediction


def read_file(path: Path) -> bytes:
    """The bytes of an input file; ``UnreadableFile`` when it is missing, a folder or forbidden."""
    try:
        return path.read_bytes()
    except OSError as exc:
        raise UnreadableFile(f"Cannot read {path.name}: {exc.strerror or exc}") from exc


@dataclass(frozen=True)
class Scan:
    """What decoding a DICOM file made, kept for its DICOM results."""

    header: pydicom.Dataset  # the file's attributes, without its pixels
    plane: np.ndarray | None = None  # the uint8 plane the model scored; None when decoding refused it
    display: Image.Image | None = None  # the grey image at the size the Grad-CAM overlay is drawn


Decoded = tuple[str, "np.ndarray | PneumoscanError", "DicomSource | None", "Scan | None"]


def read_and_decode(path: Path, max_pixels: int, keep_scan: bool = False) -> Decoded:
    """(sha256, uint8 plane, DICOM UIDs, the scan) for a file, or (sha256 or "", the error, None,
    None). Planes (16 KiB) rather than model inputs (192 KiB) wait for their batch: decoding runs
    ahead. With ``keep_scan``, a DICOM file's ``Scan`` comes too (about 1 MB)."""
    try:
        data = read_file(path)
    except UnreadableFile as exc:
        return "", exc, None, None
    sha256 = hashlib.sha256(data).hexdigest()
    header = _header(data) if keep_scan else None
    try:
        decoded = decode(data, max_pixels=max_pixels)
        plane = resize_plane(decoded.image)
    except PneumoscanError as exc:
        return sha256, exc, None, Scan(header) if header is not None else None
    scan = Scan(header, plane, display_image(decoded.image)) if header is not None else None
    return sha256, plane, decoded.dicom, scan


def _header(data: bytes) -> pydicom.Dataset | None:
    """A DICOM file's attributes without its pixels; None for a file that is not DICOM."""
    if not is_dicom(data):
        return None
    try:
        return pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    except (InvalidDicomError, ValueError, TypeError, AttributeError, EOFError):
        return None


def score_paths(
    predictor: Predictor,
    paths: Iterable[str | Path],
    *,
    batch_size: int = 32,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    decode_threads: int = 1,
    overlap: bool = True,
    before_batch: Callable[[list[Path]], None] | None = None,
    progress: Callable[[int], None] | None = None,
) -> Iterator[Result]:
    """One ``Result`` per path (named by the path), in order.

    With ``overlap``, the next batch decodes in ``decode_threads`` threads while the model scores
    the current one: one batch ahead, so memory stays bounded however many paths there are.
    ``before_batch`` is given every file in flight (the batch about to be scored and the one
    decoding ahead), so a crash is pinned on files that were being read. Without ``overlap`` each
    batch is decoded and then scored, and nothing else is in flight."""
    for result, _ in score_paths_keeping_scans(
        predictor,
        paths,
        batch_size=batch_size,
        max_pixels=max_pixels,
        decode_threads=decode_threads,
        overlap=overlap,
        before_batch=before_batch,
        progress=progress,
        keep=False,
    ):
        yield result


def score_paths_keeping_scans(
    predictor: Predictor,
    paths: Iterable[str | Path],
    *,
    batch_size: int = 32,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    decode_threads: int = 1,
    overlap: bool = True,
    before_batch: Callable[[list[Path]], None] | None = None,
    progress: Callable[[int], None] | None = None,
    keep: bool = True,
) -> Iterator[tuple[Result, Scan | None]]:
    """``score_paths``, each result with its file's ``Scan`` (None for a file that is not DICOM,
    and for every file when ``keep`` is False)."""
    files = [Path(p) for p in paths]
    ahead = batch_size if overlap else 0
    with ThreadPoolExecutor(max_workers=decode_threads) as pool:
        pending: deque[Future[Decoded]] = deque()
        for start in range(0, len(files), batch_size):
            chunk = files[start : start + batch_size]
            # Decoding goes on while the model scores; the window is this batch and the next.
            while start + len(pending) < min(start + len(chunk) + ahead, len(files)):
                path = files[start + len(pending)]
                args = (path, max_pixels, True) if keep else (path, max_pixels)
                pending.append(pool.submit(read_and_decode, *args))
            if before_batch is not None:
                before_batch(files[start : start + len(pending)])
            outcomes = [pending.popleft().result() for _ in chunk]
            planes = {i: outcome for i, (_, outcome, _, _) in enumerate(outcomes) if isinstance(outcome, np.ndarray)}
            judged = predictor.judge(predictor.score(plane_to_input(np.stack(list(planes.values()))))) if planes else []
            by_index = dict(zip(planes, judged, strict=False))
            if progress is not None:
                progress(len(chunk))
            for i, path in enumerate(chunk):
                sha256, decoded, dicom, scan = outcomes[i]
                outcome = by_index[i] if isinstance(decoded, np.ndarray) else decoded
                yield Result.of(outcome, file=str(path), sha256=sha256, dicom=dicom), scan


def predict_files(
    predictor: Predictor,
    paths: Iterable[str | Path],
    batch_size: int = 32,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> Iterator[FilePrediction]:
    """One ``FilePrediction`` per path, in order, ``batch_size`` images per model call."""
    for result in score_paths(predictor, paths, batch_size=batch_size, max_pixels=max_pixels):
        yield result.file_line()
