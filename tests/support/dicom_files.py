"""DICOM test files built with pydicom from the fixture X-rays: every variant the decoder meets."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)

PATIENT_NAME = "Testpatient^Confidential"
PATIENT_ID = "PID-7788991"


def make_dicom(
    image: Image.Image,
    *,
    bits: int = 8,
    photometric: str = "MONOCHROME2",
    transfer_syntax: str = ExplicitVRLittleEndian,
    modality: str | None = "DX",
    frames: int = 1,
    colour: bool = False,
    pixel_data: bool = True,
    window: tuple[float, float] | None = None,
    rescale: tuple[float, float] | None = None,
    body_part: str | None = "CHEST",
    view_position: str | None = "PA",
    presentation_intent: str | None = None,
    presentation_lut_shape: str | None = None,
    padding: tuple[int, int] | None = None,
    padding_range_limit: int | None = None,
) -> bytes:
    """A DICOM Part 10 file whose displayed image is ``image`` (8-bit "L").

    MONOCHROME1 (or ``presentation_lut_shape="INVERSE"``) stores the inverted values; 16-bit stores
    ``value * 257`` (or the inverse of ``rescale`` = (slope, intercept) when given) so that the
    display pipeline recovers ``image``.

    By default the file is a frontal chest radiograph as the decoder accepts it: BodyPartExamined
    CHEST and ViewPosition PA; pass another value, or None to leave the element out.
    ``presentation_intent`` writes PresentationIntentType when given. ``padding`` = (border, value)
    overwrites a border that many pixels wide with the stored value ``value`` and declares it as
    the PixelPaddingValue; with ``padding_range_limit`` the border's values run from ``value`` to
    that limit, declared as the PixelPaddingRangeLimit.
    """
    plane = np.asarray(image.convert("L"), dtype=np.uint16)
    if photometric == "MONOCHROME1" or presentation_lut_shape == "INVERSE":
        plane = 255 - plane
    if bits == 16:
        plane = plane * 257
    if rescale is not None:
        slope, intercept = rescale
        plane = np.rint((plane - intercept) / slope).astype(np.uint16)
    if padding is not None:
        border, value = padding
        stop = value if padding_range_limit is None else padding_range_limit
        fill = np.resize(np.linspace(value, stop, num=max(abs(stop - value) + 1, 2)).round(), plane.shape)
        inside = np.zeros(plane.shape, dtype=bool)
        inside[border:-border, border:-border] = True
        plane = np.where(inside, plane, fill).astype(np.uint16)
    dtype = np.uint8 if bits == 8 else np.uint16

    dataset = Dataset()
    dataset.file_meta = FileMetaDataset()
    dataset.file_meta.MediaStorageSOPClassUID = DigitalXRayImageStorageForPresentation
    dataset.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset.SOPClassUID = DigitalXRayImageStorageForPresentation
    dataset.SOPInstanceUID = dataset.file_meta.MediaStorageSOPInstanceUID
    dataset.StudyInstanceUID = generate_uid()
    dataset.SeriesInstanceUID = generate_uid()
    dataset.PatientName = PATIENT_NAME
    dataset.PatientID = PATIENT_ID
    dataset.PatientBirthDate = "20190101"
    if modality is not None:
        dataset.Modality = modality
    if body_part is not None:
        dataset.BodyPartExamined = body_part
    if view_position is not None:
        dataset.ViewPosition = view_position
    if presentation_intent is not None:
        dataset.PresentationIntentType = presentation_intent
    if presentation_lut_shape is not None:
        dataset.PresentationLUTShape = presentation_lut_shape
    if window is not None:
        dataset.WindowCenter, dataset.WindowWidth = window
    if rescale is not None:
        dataset.RescaleSlope, dataset.RescaleIntercept = rescale
    if not pixel_data:
        return _file_bytes(dataset)

    dataset.Rows, dataset.Columns = plane.shape
    dataset.BitsAllocated = dataset.BitsStored = bits
    dataset.HighBit = bits - 1
    dataset.PixelRepresentation = 0
    if padding is not None:
        dataset.PixelPaddingValue = padding[1]
        if padding_range_limit is not None:
            dataset.PixelPaddingRangeLimit = padding_range_limit
    if colour:
        pixels = np.repeat(plane[..., np.newaxis], 3, axis=-1).astype(dtype)
        dataset.SamplesPerPixel, dataset.PhotometricInterpretation, dataset.PlanarConfiguration = 3, "RGB", 0
    else:
        pixels = plane.astype(dtype)
        dataset.SamplesPerPixel, dataset.PhotometricInterpretation = 1, photometric
    if frames > 1:
        pixels = np.stack([pixels] * frames)
        dataset.NumberOfFrames = frames
    dataset.PixelData = pixels.tobytes()

    if transfer_syntax == JPEGBaseline8Bit:
        # As a modality would send it: the JPEG codestream itself, encapsulated.
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="JPEG", quality=95)
        dataset.PixelData = encapsulate([buffer.getvalue()])
        dataset["PixelData"].VR = "OB"
        dataset.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    elif transfer_syntax in (RLELossless, JPEG2000Lossless, JPEGLSLossless):
        dataset.compress(transfer_syntax)
    return _file_bytes(dataset)


def _file_bytes(dataset: Dataset) -> bytes:
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def dciodvfy_errors(dataset: Dataset, folder: Path) -> list[str]:
    """dicom3tools' ``dciodvfy`` errors on ``dataset``, saved as a Part 10 file in ``folder``."""
    path = folder / f"{dataset.SOPInstanceUID}.dcm"
    dataset.save_as(path, enforce_file_format=True)
    result = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
    return [line for line in (result.stdout + result.stderr).splitlines() if "Error" in line]
