"""DICOM Part 10 files -> the 8-bit grayscale image the rest of ``imaging`` works on.

A chest radiograph stored as DICOM goes through the display pipeline of the standard
(``pneumoscan.dicom.display``) before it joins the JPEG/PNG path. JPEG, JPEG-LS, JPEG 2000 and RLE
transfer syntaxes decode through pydicom's handlers and the pylibjpeg plugins.

Before any pixel is decoded, the file must be what the model was made for (its intended use, checked
by ``pneumoscan.dicom.intended_use``): a frontal (AP or PA) chest radiograph, CR/DX/DR, meant for
presentation. Anything else is refused with a coded error, the same for every input path (HTTP,
files, batch jobs).

Only the UIDs needed to cite the image (``DicomSource``) leave this module; patient fields are
never read into an error message or a log line.
"""

from __future__ import annotations

import io
import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pydicom
from PIL import Image
from pydicom.encaps import generate_frames
from pydicom.errors import InvalidDicomError
from pydicom.uid import JPEGBaseline8Bit

from pneumoscan import IMAGE_SIZE
from pneumoscan.dicom.display import check_display_transform, display_values
from pneumoscan.dicom.intended_use import check_acceptable
from pneumoscan.errors import BlankImage, NotAnImage, TruncatedImage, UnsupportedFormat

PREAMBLE_LENGTH = 128
MAGIC = b"DICM"

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
        check_acceptable(dataset, modality=source.modality, sop_class_uid=source.sop_class_uid, max_pixels=max_pixels)
        try:
            pixels = _pixels(dataset)
        except (NotImplementedError, RuntimeError) as exc:
            syntax = dataset.file_meta.get("TransferSyntaxUID")
            name = getattr(syntax, "name", None) or str(syntax)
            raise UnsupportedFormat(f"DICOM pixel data in transfer syntax {name!r} cannot be decoded here.") from exc
        except (ValueError, OSError, EOFError, KeyError, AttributeError, TypeError, SyntaxError, StopIteration) as exc:
            raise TruncatedImage(f"The DICOM pixel data is truncated or corrupt ({type(exc).__name__}).") from exc
        check_display_transform(dataset)
        try:
            display = display_values(pixels, dataset)
        except (ValueError, TypeError, IndexError, KeyError, AttributeError, OverflowError) as exc:
            raise BlankImage(
                f"The DICOM display transform (rescale, lookup table or window) cannot be applied "
                f"({type(exc).__name__}); the image has no displayable content."
            ) from exc
        return Image.fromarray(display, mode="L"), source


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


def _patient(dataset: pydicom.Dataset, text: Callable[[str], str | None]) -> PatientContext:
    """Patient ID and issuer, accession and order numbers, and the acquisition date-time."""
    acquired = text("AcquisitionDateTime")
    if acquired is None:
        for date, time_ in (
            ("AcquisitionDate", "AcquisitionTime"),
            ("ContentDate", "ContentTime"),
            ("StudyDate", "StudyTime"),
        ):
            if (day := text(date)) is not None:
                acquired = day + (text(time_) or "")
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
