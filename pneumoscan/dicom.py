"""DICOM Part 10 files -> the 8-bit grayscale image the rest of ``imaging`` works on.

A chest radiograph stored as DICOM goes through the display pipeline of the standard
(PS3.4 N.2) before it joins the JPEG/PNG path: the modality LUT or rescale, then the VOI LUT
or window (when the file carries one), scaled to 0..255 over the range that transform can
produce (or the image's own range when there is none), and MONOCHROME1 (or a Presentation LUT
Shape of INVERSE) inverted so that bone is bright as in MONOCHROME2. Padding pixels (Pixel Padding
Value / Pixel Padding Range Limit) take no part in that scaling and are shown black. JPEG, JPEG-LS,
JPEG 2000 and RLE transfer syntaxes decode through pydicom's handlers and the pylibjpeg plugins.

Before any pixel is decoded, the file must be what the model was made for (its intended use): a
frontal (AP or PA) chest radiograph, CR/DX/DR, meant for presentation. Anything else is refused
with a coded error, the same for every input path (HTTP, files, batch jobs).

Only the UIDs needed to cite the image (``DicomSource``) leave this module; patient fields are
never read into an error message or a log line.
"""

from __future__ import annotations

import io
import logging
import warnings
from dataclasses import dataclass, field

import numpy as np
import pydicom
from PIL import Image
from pydicom.encaps import generate_frames
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.pixels import apply_modality_lut, apply_voi_lut
from pydicom.pixels.processing import apply_windowing
from pydicom.uid import (
    DigitalIntraOralXRayImageStorageForProcessing,
    DigitalMammographyXRayImageStorageForProcessing,
    DigitalXRayImageStorageForProcessing,
    JPEGBaseline8Bit,
)

from pneumoscan import IMAGE_SIZE
from pneumoscan.errors import (
    BlankImage,
    ImageTooLarge,
    MultiFrameImage,
    NoPixelData,
    NotAnImage,
    NotForPresentation,
    TruncatedImage,
    UnsupportedBodyPart,
    UnsupportedFormat,
    UnsupportedModality,
    UnsupportedMode,
    UnsupportedView,
)

# Computed and digital radiography; "DR" is not a defined term but some vendors write it.
ACCEPTED_MODALITIES: frozenset[str] = frozenset({"CR", "DX", "DR"})
# BodyPartExamined values that name the chest: DICOM's terms and the words sites write in their
# own language (compared upper-cased, without surrounding spaces, as the value or its first word:
# "CHEST PA"). Another value is evidence of another part and is refused; an empty or absent one
# says nothing, so the image gate judges the pixels alone, as it does for a JPEG.
ACCEPTED_BODY_PARTS: frozenset[str] = frozenset(
    {
        "CHEST",
        "THORAX",
        "LUNG",
        "LUNGS",
        "TORAX",
        "TÓRAX",
        "BRUST",
        "BRUSTKORB",
        "POITRINE",
        "PECHO",
        "TORACE",
    }
)
# ViewPosition: the frontal projections the model was trained on. An empty or absent ViewPosition
# is accepted (many CR files leave it out); any other value (LL, RL, LATERAL, the decubitus and
# oblique views RLD, LLD, RLO, LLO, ...) is refused, as is a frontal value qualified by one of them
# ("AP LLD", a decubitus film).
FRONTAL_VIEWS: frozenset[str] = frozenset({"AP", "PA"})
_NOT_FRONTAL_WORDS: frozenset[str] = frozenset(
    {"LAT", "LATERAL", "DECUBITUS", "OBLIQUE", "LAO", "RAO", "LPO", "RPO", "XTABLE", "SWIMMERS"}
)
# SOP classes whose images are raw detector data, even when PresentationIntentType is missing.
_FOR_PROCESSING_SOP_CLASSES = frozenset(
    {
        DigitalXRayImageStorageForProcessing,
        DigitalMammographyXRayImageStorageForProcessing,
        DigitalIntraOralXRayImageStorageForProcessing,
    }
)
# A code string (CS) holds at most 16 characters; a longer value is cut there before it is quoted.
_QUOTED_LENGTH = 16
PREAMBLE_LENGTH = 128
MAGIC = b"DICM"
_PIXEL_DATA_TAGS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
# Integer images whose values span fewer than this many levels are mapped through a table.
LOOKUP_TABLE_LIMIT = 1 << 17

# pydicom logs and warns about odd element values, quoting them; none of that may reach a log.
logging.getLogger("pydicom").setLevel(logging.CRITICAL)


@dataclass(frozen=True)
class PatientContext:
    """The patient and order a DICOM image belongs to, so that a result can be filed under them
    (the DICOM node's SR, HL7 and FHIR); read from the file, never logged or put in an error."""

    patient_id: str | None = None
    patient_id_issuer: str | None = None
    accession_number: str | None = None
    placer_order_number: str | None = None
    filler_order_number: str | None = None
    acquired: str | None = None  # DICOM DT, YYYYMMDD[HHMMSS[.F]][+/-ZZXX]: when the image was taken


@dataclass(frozen=True)
class DicomSource:
    """The identifiers of a DICOM image, for citing it in a report, and its patient context."""

    study_instance_uid: str | None
    series_instance_uid: str | None
    sop_instance_uid: str | None
    sop_class_uid: str | None
    modality: str | None
    patient: PatientContext | None = field(default=None, repr=False)


def split_datetime(value: str) -> tuple[str, str]:
    """A DICOM DT (YYYYMMDD[HHMMSS[.F]][+/-ZZXX]) as (the date and time, the UTC offset or "")."""
    for sign in "+-":
        if sign in value[8:]:
            body, _, zone = value.rpartition(sign)
            return body, sign + zone
    return value, ""


# The identifiers of DicomSource, without the patient context.
IDENTIFIER_FIELDS = ("study_instance_uid", "series_instance_uid", "sop_instance_uid", "sop_class_uid", "modality")


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
        patient=_patient(dataset, text),
    )


def _patient(dataset: pydicom.Dataset, text) -> PatientContext:
    """Patient ID and issuer, accession and order numbers, and the acquisition date-time."""
    acquired = text("AcquisitionDateTime")
    if acquired is None:
        for date, time_ in (
            ("AcquisitionDate", "AcquisitionTime"),
            ("ContentDate", "ContentTime"),
            ("StudyDate", "StudyTime"),
        ):
            if text(date):
                acquired = text(date) + (text(time_) or "")
                break
        offset = text("TimezoneOffsetFromUTC")
        if acquired is not None and offset is not None and len(acquired) > 8:
            acquired += offset if offset[0] in "+-" else f"+{offset}"
    return PatientContext(
        patient_id=text("PatientID"),
        patient_id_issuer=text("IssuerOfPatientID"),
        accession_number=text("AccessionNumber"),
        placer_order_number=text("PlacerOrderNumberImagingServiceRequest"),
        filler_order_number=text("FillerOrderNumberImagingServiceRequest"),
        acquired=acquired,
    )


def _check_acceptable(dataset: pydicom.Dataset, source: DicomSource, max_pixels: int) -> None:
    if not any(tag in dataset for tag in _PIXEL_DATA_TAGS):
        raise NoPixelData(
            "The DICOM file has no pixel data: it holds no image (a report or presentation state) "
            "or it is cut short before the image."
        )
    if source.modality is None:
        raise UnsupportedModality(
            "The DICOM file has no Modality, so it cannot be told to be a radiograph; send CR or DX chest X-rays."
        )
    if source.modality.upper() not in ACCEPTED_MODALITIES:
        raise UnsupportedModality(
            f"DICOM modality {source.modality!r} is not a radiograph; send CR or DX chest X-rays."
        )
    _check_intended_use(dataset, source)
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


def _check_intended_use(dataset: pydicom.Dataset, source: DicomSource) -> None:
    """Refuse what is not a frontal chest radiograph meant for presentation.

    Only the offending ViewPosition, BodyPartExamined or PresentationIntentType is quoted (cut to
    the 16 characters a code string may hold); no other element reaches the message.
    """
    intent = _code_string(dataset, "PresentationIntentType")
    if intent == "FOR PROCESSING" or source.sop_class_uid in _FOR_PROCESSING_SOP_CLASSES:
        raise NotForPresentation(
            f"The DICOM image is {intent or 'FOR PROCESSING'!r} (raw detector data); only FOR PRESENTATION "
            "images are analysed."
        )
    body_part = _code_string(dataset, "BodyPartExamined")
    if body_part is not None and not _is_chest(body_part):
        raise UnsupportedBodyPart(
            f"DICOM BodyPartExamined {body_part!r} is not the chest; only chest radiographs are analysed."
        )
    view = _code_string(dataset, "ViewPosition")
    if view is not None and not _is_frontal(view):
        raise UnsupportedView(
            f"DICOM ViewPosition {view!r} is not a frontal view; only AP or PA chest radiographs are analysed "
            "(no lateral, decubitus or oblique views)."
        )


def _code_string(dataset: pydicom.Dataset, keyword: str) -> str | None:
    """A code string element, upper-cased and stripped; None when absent or empty."""
    value = dataset.get(keyword)
    if isinstance(value, MultiValue):
        value = "\\".join(str(v) for v in value)
    text = str(value).strip().upper() if value is not None else ""
    return text[:_QUOTED_LENGTH] or None


def _is_chest(body_part: str) -> bool:
    """The value, or its first word ("CHEST PA", "THORAX_AP"), names the chest."""
    words = body_part.replace("\\", " ").replace("_", " ").replace("-", " ").split()
    return bool(words) and words[0] in ACCEPTED_BODY_PARTS


def _is_frontal(view: str) -> bool:
    """AP or PA, possibly qualified ("AP SUPINE"), but not by a lateral, decubitus or oblique term."""
    words = [word for word in view.replace("\\", " ").replace("_", " ").replace("-", " ").split() if word]
    if not words or words[0] not in FRONTAL_VIEWS:
        return False
    # LL, RL, LLD, RLD, LLO, RLO, ...: left/right followed by L(ateral).
    return not any(word in _NOT_FRONTAL_WORDS or (word[0] in "LR" and word[1:2] == "L") for word in words[1:])


def _display_values(pixels: np.ndarray, dataset: pydicom.Dataset) -> np.ndarray:
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
            table = _transform(np.arange(low, high + 1, dtype=np.int64), dataset, present)
            return _black_out(np.take(table, index), padding)
    return _black_out(_transform(pixels, dataset, None if padding is None else ~padding), padding)


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
    if _inverted(dataset):
        scaled = 1.0 - scaled
    return np.rint(scaled * 255.0).astype(np.uint8)


def _inverted(dataset: pydicom.Dataset) -> bool:
    """MONOCHROME1, or a Presentation LUT Shape of INVERSE: low values are shown bright.

    The DX and CR modules require INVERSE with MONOCHROME1 and IDENTITY with MONOCHROME2: for
    MONOCHROME1 the two name the same inversion, which is applied once, not twice.
    """
    photometric = str(dataset.get("PhotometricInterpretation", "")).strip()
    return photometric == "MONOCHROME1" or _code_string(dataset, "PresentationLUTShape") == "INVERSE"


def _voi_output_range(dataset: pydicom.Dataset) -> tuple[float, float]:
    """The darkest and brightest values the file's VOI transform can produce."""
    if dataset.get("VOILUTSequence"):
        bits = int(dataset.VOILUTSequence[0].LUTDescriptor[2])
        return 0.0, float(2**bits - 1)
    # A window clips to its output range, so the extremes of any input reveal it.
    low, high = apply_windowing(np.array([-1e18, 1e18]), dataset)
    return float(low), float(high)
