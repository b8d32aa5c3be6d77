"""The intended-use checks a DICOM file passes before any pixel is decoded.

The model was made for frontal (AP or PA) chest radiographs, CR/DX/DR, meant for presentation;
anything else is refused with a coded error, the same for every input path (HTTP, files, batch
jobs). Only the offending ViewPosition, BodyPartExamined or PresentationIntentType is quoted (cut
to the 16 characters a code string may hold); no other element reaches a message.
"""

from __future__ import annotations

import pydicom
from pydicom.multival import MultiValue
from pydicom.uid import (
    DigitalIntraOralXRayImageStorageForProcessing,
    DigitalMammographyXRayImageStorageForProcessing,
    DigitalXRayImageStorageForProcessing,
)

from pneumoscan.errors import (
    ImageTooLarge,
    MultiFrameImage,
    NoPixelData,
    NotForPresentation,
    UnsupportedBodyPart,
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
_PIXEL_DATA_TAGS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


def check_acceptable(
    dataset: pydicom.Dataset, *, modality: str | None, sop_class_uid: str | None, max_pixels: int
) -> None:
    """Refuse, with a coded error, a file that holds no image the model was made for."""
    if not any(tag in dataset for tag in _PIXEL_DATA_TAGS):
        raise NoPixelData(
            "The DICOM file has no pixel data: it holds no image (a report or presentation state) "
            "or it is cut short before the image."
        )
    if modality is None:
        raise UnsupportedModality(
            "The DICOM file has no Modality, so it cannot be told to be a radiograph; send CR or DX chest X-rays."
        )
    if modality.upper() not in ACCEPTED_MODALITIES:
        raise UnsupportedModality(f"DICOM modality {modality!r} is not a radiograph; send CR or DX chest X-rays.")
    _check_intended_use(dataset, sop_class_uid)
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


def _check_intended_use(dataset: pydicom.Dataset, sop_class_uid: str | None) -> None:
    """Refuse what is not a frontal chest radiograph meant for presentation."""
    intent = code_string(dataset, "PresentationIntentType")
    if intent == "FOR PROCESSING" or sop_class_uid in _FOR_PROCESSING_SOP_CLASSES:
        raise NotForPresentation(
            f"The DICOM image is {intent or 'FOR PROCESSING'!r} (raw detector data); only FOR PRESENTATION "
            "images are analysed."
        )
    body_part = code_string(dataset, "BodyPartExamined")
    if body_part is not None and not _is_chest(body_part):
        raise UnsupportedBodyPart(
            f"DICOM BodyPartExamined {body_part!r} is not the chest; only chest radiographs are analysed."
        )
    view = code_string(dataset, "ViewPosition")
    if view is not None and not _is_frontal(view):
        raise UnsupportedView(
            f"DICOM ViewPosition {view!r} is not a frontal view; only AP or PA chest radiographs are analysed "
            "(no lateral, decubitus or oblique views)."
        )


def code_string(dataset: pydicom.Dataset, keyword: str) -> str | None:
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
