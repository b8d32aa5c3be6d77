"""DICOM Part 10 files -> the 8-bit grayscale image the rest of ``imaging`` works on.

A chest radiograph stored as DICOM goes through the display pipeline of the standard
(PS3.4 N.2) before it joins the JPEG/PNG path: the modality LUT or rescale, then the VOI LUT
or window (when the file carries one), scaled to 0..255 over the range that transform can
produce (or the image's own range when there is none), and MONOCHROME1 inverted so that bone is
bright as in MONOCHROME2. JPEG, JPEG-LS, JPEG 2000 and RLE transfer syntaxes decode through
pydicom's handlers and the pylibjpeg plugins.

Only the UIDs needed to cite the image (``DicomSource``) leave this module; patient fields are
never read into an error message or a log line.
"""

from __future__ import annotations

import io
import logging
import warnings
from dataclasses import dataclass

import numpy as np
import pydicom
from PIL import Image
from pydicom.encaps import generate_frames
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.pixels import apply_modality_lut, apply_voi_lut
from pydicom.pixels.processing import apply_windowing
from pydicom.uid import JPEGBaseline8Bit

from pneumoscan import IMAGE_SIZE
from pneumoscan.errors import (
    BlankImage,
    ImageTooLarge,
    MultiFrameImage,
    NoPixelData,
    NotAnImage,
    TruncatedImage,
    UnsupportedFormat,
    UnsupportedModality,
    UnsupportedMode,
)

# Computed and digital radiography; "DR" is not a defined term but some vendors write it.
ACCEPTED_MODALITIES: frozenset[str] = frozenset({"CR", "DX", "DR"})
PREAMBLE_LENGTH = 128
MAGIC = b"DICM"
_PIXEL_DATA_TAGS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
# Integer images whose values span fewer than this many levels are mapped through a table.
LOOKUP_TABLE_LIMIT = 1 << 17

# pydicom logs and warns about odd element values, quoting them; none of that may reach a log.
logging.getLogger("pydicom").setLevel(logging.CRITICAL)


@dataclass(frozen=True)
class DicomSource:
    """The identifiers of a DICOM image, for citing it in a report; no patient data."""

    study_instance_uid: str | None
    series_instance_uid: str | None
    sop_instance_uid: str | None
    sop_class_uid: str | None
    modality: str | None


def is_dicom(data: bytes) -> bool:
    """True for a DICOM Part 10 file: a 128-byte preamble followed by ``DICM``."""
    return data[PREAMBLE_LENGTH : PREAMBLE_LENGTH + len(MAGIC)] == MAGIC


def decode_dicom(data: bytes, *, max_pixels: int) -> tuple[Image.Image, DicomSource]:
    """An upright 8-bit grayscale ("L") image at full size, and the image's UIDs."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dataset = _read(data)
        source = _source(dataset)
        _check_acceptable(dataset, source, max_pixels)
        try:
            pixels = _pixels(dataset)
        except (NotImplementedError, RuntimeError) as exc:
            syntax = dataset.file_meta.get("TransferSyntaxUID")
            name = getattr(syntax, "name", None) or str(syntax)
            raise UnsupportedFormat(f"DICOM pixel data in transfer syntax {name!r} cannot be decoded here.") from exc
        except (ValueError, OSError, EOFError, KeyError, AttributeError, TypeError, SyntaxError, StopIteration) as exc:
            raise TruncatedImage(f"The DICOM pixel data is truncated or corrupt ({type(exc).__name__}).") from exc
        _check_display_transform(dataset)
        try:
            display = _display_values(pixels, dataset)
        except (ValueError, TypeError, IndexError, KeyError, AttributeError, OverflowError) as exc:
            raise BlankImage(
                f"The DICOM display transform (rescale, lookup table or window) cannot be applied "
                f"({type(exc).__name__}); the image has no displayable content."
            ) from exc
        return Image.fromarray(display, mode="L"), source


def _check_display_transform(dataset: pydicom.Dataset) -> None:
    """``BlankImage`` for a rescale or window that is not finite or maps every pixel to one value."""
    def numbers(keyword: str) -> list[float]:
        value = dataset.get(keyword)
        if value is None:
            return []
        try:
            return [float(v) for v in (value if isinstance(value, MultiValue) else [value])]
        except (TypeError, ValueError) as exc:
            raise BlankImage(f"The DICOM {keyword} is not a number.") from exc

    for keyword in ("RescaleSlope", "RescaleIntercept", "WindowCenter", "WindowWidth"):
        if not all(np.isfinite(numbers(keyword))):
            raise BlankImage(f"The DICOM {keyword} is not a finite number; the image cannot be displayed.")
    if any(slope == 0 for slope in numbers("RescaleSlope")):
        raise BlankImage("The DICOM RescaleSlope is 0, which maps every pixel to one value.")
    if any(width <= 0 for width in numbers("WindowWidth")):
        raise BlankImage("The DICOM WindowWidth is not positive, so the window shows no grey levels.")


def _pixels(dataset: pydicom.Dataset) -> np.ndarray:
    """The stored values; 8-bit baseline JPEG frames are reduced while decoding.

    A baseline JPEG frame is an ordinary JPEG codestream, so Pillow can decode it with the same
    DCT-domain downscaling (``draft``) as a JPEG upload: ~6x faster on a full-size radiograph.
    """
    if dataset.file_meta.get("TransferSyntaxUID") == JPEGBaseline8Bit:
        codestream = next(generate_frames(dataset.PixelData, number_of_frames=1))
        with Image.open(io.BytesIO(codestream)) as image:
            image.draft("L", IMAGE_SIZE[::-1])
            return np.asarray(image.convert("L"))
    return dataset.pixel_array


def _read(data: bytes) -> pydicom.Dataset:
    try:
        return pydicom.dcmread(io.BytesIO(data))
    except InvalidDicomError as exc:
        raise NotAnImage("The data is not a DICOM Part 10 file.") from exc
    except (ValueError, OSError, EOFError, KeyError, AttributeError, TypeError, OverflowError) as exc:
        raise TruncatedImage(f"The DICOM file is truncated or corrupt ({type(exc).__name__}).") from exc


def _source(dataset: pydicom.Dataset) -> DicomSource:
    def text(keyword: str) -> str | None:
        value = dataset.get(keyword)
        return (str(value).strip() or None) if value is not None else None

    return DicomSource(
        study_instance_uid=text("StudyInstanceUID"),
        series_instance_uid=text("SeriesInstanceUID"),
        sop_instance_uid=text("SOPInstanceUID"),
        sop_class_uid=text("SOPClassUID"),
        modality=text("Modality"),
    )


def _check_acceptable(dataset: pydicom.Dataset, source: DicomSource, max_pixels: int) -> None:
    if not any(tag in dataset for tag in _PIXEL_DATA_TAGS):
        raise NoPixelData(
            "The DICOM file has no pixel data: it holds no image (a report or presentation state) "
            "or it is cut short before the image."
        )
    if source.modality is not None and source.modality.upper() not in ACCEPTED_MODALITIES:
        raise UnsupportedModality(
            f"DICOM modality {source.modality!r} is not a radiograph; send CR or DX chest X-rays."
        )
    if int(dataset.get("NumberOfFrames") or 1) > 1:
        raise MultiFrameImage(
            f"The DICOM file has {int(dataset.NumberOfFrames)} frames; send single-frame radiographs."
        )
    photometric = str(dataset.get("PhotometricInterpretation", "")).strip()
    samples = int(dataset.get("SamplesPerPixel") or 1)
    if samples != 1 or photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise UnsupportedMode(
            f"DICOM photometric interpretation {photometric or 'unknown'!r} with {samples} samples per "
            "pixel is not supported; send grayscale (MONOCHROME1 or MONOCHROME2) radiographs."
        )
    if "FloatPixelData" in dataset or "DoubleFloatPixelData" in dataset:
        raise UnsupportedMode("Floating-point DICOM pixel data is not supported.")
    rows, columns = int(dataset.get("Rows") or 0), int(dataset.get("Columns") or 0)
    if rows * columns > max_pixels:
        raise ImageTooLarge(
            f"The image is {columns}x{rows} = {rows * columns:,} pixels; the limit is {max_pixels:,} pixels."
        )


def _display_values(pixels: np.ndarray, dataset: pydicom.Dataset) -> np.ndarray:
    """Stored values -> presentation values 0..255 (uint8), bright = dense.

    The transform is pointwise, so integer data go through it once per distinct stored value
    (a lookup table over the image's value range) instead of once per pixel: the same result,
    several times faster on a full-size 16-bit radiograph.
    """
    if pixels.dtype.kind in "iu":
        low, high = int(pixels.min()), int(pixels.max())
        if high - low < LOOKUP_TABLE_LIMIT:
            # Unsigned values minus their minimum cannot wrap around; signed ones might.
            index = pixels - pixels.dtype.type(low) if pixels.dtype.kind == "u" else pixels.astype(np.int32) - low
            present = None
            if dataset.get("ModalityLUTSequence") and not _has_voi(dataset):
                # A modality table need not be monotonic: its range over the image is the range
                # over the values that occur, not over the table's ends.
                present = np.bincount(index.ravel(), minlength=high - low + 1) > 0
            table = _transform(np.arange(low, high + 1, dtype=np.int64), dataset, present)
            return np.take(table, index)
    return _transform(pixels, dataset)


def _has_voi(dataset: pydicom.Dataset) -> bool:
    return bool(dataset.get("VOILUTSequence")) or ("WindowCenter" in dataset and "WindowWidth" in dataset)


def _transform(stored: np.ndarray, dataset: pydicom.Dataset, present: np.ndarray | None = None) -> np.ndarray:
    """The display pipeline on an array of stored values; ``present`` marks the values that
    occur in the image when ``stored`` is a table of candidates rather than the image itself."""
    values = apply_modality_lut(stored, dataset)
    if not np.all(np.isfinite(values)):
        raise BlankImage("The DICOM modality transform gives values that are not finite numbers.")
    if _has_voi(dataset):
        low, high = _voi_output_range(dataset)
        values = apply_voi_lut(values, dataset, prefer_lut=True)
    else:
        occurring = values if present is None else values[present]
        low, high = float(np.min(occurring)), float(np.max(occurring))
    span = high - low
    scaled = (np.asarray(values, dtype=np.float64) - low) / span if span > 0 else np.zeros(values.shape)
    scaled = np.clip(scaled, 0.0, 1.0)
    if str(dataset.PhotometricInterpretation).strip() == "MONOCHROME1":
        scaled = 1.0 - scaled
    return np.rint(scaled * 255.0).astype(np.uint8)


def _voi_output_range(dataset: pydicom.Dataset) -> tuple[float, float]:
    """The darkest and brightest values the file's VOI transform can produce."""
    if dataset.get("VOILUTSequence"):
        bits = int(dataset.VOILUTSequence[0].LUTDescriptor[2])
        return 0.0, float(2**bits - 1)
    # A window clips to its output range, so the extremes of any input reveal it.
    low, high = apply_windowing(np.array([-1e18, 1e18]), dataset)
    return float(low), float(high)
