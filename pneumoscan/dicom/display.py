"""The DICOM display pipeline (PS3.4 N.2): stored values -> the 8-bit grey levels a reader sees.

The modality LUT or rescale, then the VOI LUT or window (when the file carries one), scaled to
0..255 over the range that transform can produce (or the image's own range when there is none),
and MONOCHROME1 (or a Presentation LUT Shape of INVERSE) inverted so that bone is bright as in
MONOCHROME2. Padding pixels (Pixel Padding Value / Pixel Padding Range Limit) take no part in that
scaling and are shown black.
"""

from __future__ import annotations

import numpy as np
import pydicom
from pydicom.multival import MultiValue
from pydicom.pixels import apply_modality_lut, apply_voi_lut
from pydicom.pixels.processing import apply_windowing

from pneumoscan.dicom.intended_use import code_string
from pneumoscan.errors import BlankImage

# Integer images whose values span fewer than this many levels are mapped through a table.
LOOKUP_TABLE_LIMIT = 1 << 17


def check_display_transform(dataset: pydicom.Dataset) -> None:
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


def display_values(pixels: np.ndarray, dataset: pydicom.Dataset) -> np.ndarray:
    """Stored values -> presentation values 0..255 (uint8), bright = dense.

    The transform is pointwise, so integer data go through it once per distinct stored value
    (a lookup table over the image's value range) instead of once per pixel: the same result,
    several times faster on a full-size 16-bit radiograph.

    Padding pixels (``_padding``) are left out of the range the image is scaled over, so that a
    border of an extreme value does not squash the contrast, and are shown black.
    """
    padding = _padding(pixels, dataset)
    if padding is not None and padding.all():
        raise BlankImage("Every pixel of the DICOM image is padding (PixelPaddingValue); there is no image.")
    if pixels.dtype.kind in "iu":
        kept = pixels if padding is None else pixels[~padding]
        low, high = int(kept.min()), int(kept.max())
        if high - low < LOOKUP_TABLE_LIMIT:
            if padding is not None:
                # Padding may lie outside low..high; it indexes any entry and is blacked out below.
                pixels = np.where(padding, pixels.dtype.type(low), pixels)
            # Unsigned values minus their minimum cannot wrap around; signed ones might.
            index = pixels - pixels.dtype.type(low) if pixels.dtype.kind == "u" else pixels.astype(np.int32) - low
            present = None
            if dataset.get("ModalityLUTSequence") and not _has_voi(dataset):
                # A modality table need not be monotonic: its range over the image is the range
                # over the values that occur, not over the table's ends.
                occurring = index if padding is None else index[~padding]
                present = np.bincount(occurring.ravel(), minlength=high - low + 1) > 0
            table = transform(np.arange(low, high + 1, dtype=np.int64), dataset, present)
            return _black_out(np.take(table, index), padding)
    return _black_out(transform(pixels, dataset, None if padding is None else ~padding), padding)


def _padding(pixels: np.ndarray, dataset: pydicom.Dataset) -> np.ndarray | None:
    """Where the stored value is the Pixel Padding Value (or within the range it spans with the
    Pixel Padding Range Limit); None when the file declares no padding or no pixel is padding."""
    value, limit = dataset.get("PixelPaddingValue"), dataset.get("PixelPaddingRangeLimit")
    if value is None or pixels.dtype.kind not in "iu":
        return None
    try:
        value, limit = int(value), (None if limit is None else int(limit))
    except (TypeError, ValueError):
        return None  # an unreadable padding value pads nothing
    info = np.iinfo(pixels.dtype)
    if pixels.dtype.kind == "i":
        # Written as US by some vendors although the pixels are signed.
        value, limit = (v - (1 << info.bits) if v is not None and v > info.max else v for v in (value, limit))
    low, high = (value, value) if limit is None else (min(value, limit), max(value, limit))
    if high < info.min or low > info.max:
        return None
    low, high = max(low, int(info.min)), min(high, int(info.max))
    mask = pixels == pixels.dtype.type(low) if low == high else (pixels >= low) & (pixels <= high)
    return mask if mask.any() else None


def _black_out(display: np.ndarray, padding: np.ndarray | None) -> np.ndarray:
    if padding is not None:
        display[padding] = 0
    return display


def _has_voi(dataset: pydicom.Dataset) -> bool:
    return bool(dataset.get("VOILUTSequence")) or ("WindowCenter" in dataset and "WindowWidth" in dataset)


def transform(stored: np.ndarray, dataset: pydicom.Dataset, present: np.ndarray | None = None) -> np.ndarray:
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
    if _inverted(dataset):
        scaled = 1.0 - scaled
    return np.rint(scaled * 255.0).astype(np.uint8)


def _inverted(dataset: pydicom.Dataset) -> bool:
    """MONOCHROME1, or a Presentation LUT Shape of INVERSE: low values are shown bright.

    The DX and CR modules require INVERSE with MONOCHROME1 and IDENTITY with MONOCHROME2: for
    MONOCHROME1 the two name the same inversion, which is applied once, not twice.
    """
    photometric = str(dataset.get("PhotometricInterpretation", "")).strip()
    return photometric == "MONOCHROME1" or code_string(dataset, "PresentationLUTShape") == "INVERSE"


def _voi_output_range(dataset: pydicom.Dataset) -> tuple[float, float]:
    """The darkest and brightest values the file's VOI transform can produce."""
    if dataset.get("VOILUTSequence"):
        bits = int(dataset.VOILUTSequence[0].LUTDescriptor[2])
        return 0.0, float(2**bits - 1)
    # A window clips to its output range, so the extremes of any input reveal it.
    low, high = apply_windowing(np.array([-1e18, 1e18]), dataset)
    return float(low), float(high)
