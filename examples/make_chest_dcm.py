"""Regenerates ``examples/chest.dcm``: a small DICOM chest radiograph made from a fixture X-ray.

    .venv/bin/python examples/make_chest_dcm.py

The pixels are ``tests/fixtures/xrays/PNEUMONIA/person596_bacteria_2446.jpeg`` (Kermany et al. 2018,
CC BY 4.0), its longest side scaled to 256 pixels, stored uncompressed (8-bit MONOCHROME2, Explicit VR
Little Endian) as a Digital X-Ray "for presentation": Modality DX, BodyPartExamined CHEST, ViewPosition
AP. The patient is made up; the UIDs are derived from fixed text, so every run writes the same file.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, DigitalXRayImageStorageForPresentation, ExplicitVRLittleEndian, generate_uid

HERE = Path(__file__).resolve().parent
SOURCE = HERE.parent / "tests" / "fixtures" / "xrays" / "PNEUMONIA" / "person596_bacteria_2446.jpeg"
TARGET = HERE / "chest.dcm"
LONGEST_SIDE = 256


def uid(name: str) -> UID:
    """A UID derived from fixed text: the same on every run."""
    return generate_uid(entropy_srcs=["pneumoscan examples/chest.dcm", name])


def chest_dicom(source: Path) -> Dataset:
    """The fixture as a frontal chest DX image, every element a PACS would send and the service checks."""
    image = Image.open(source).convert("L")
    image.thumbnail((LONGEST_SIDE, LONGEST_SIDE), Image.Resampling.LANCZOS)
    pixels = np.asarray(image, dtype=np.uint8)

    dataset = Dataset()
    dataset.file_meta = FileMetaDataset()
    dataset.file_meta.MediaStorageSOPClassUID = DigitalXRayImageStorageForPresentation
    dataset.file_meta.MediaStorageSOPInstanceUID = uid("instance")
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset.SOPClassUID = DigitalXRayImageStorageForPresentation
    dataset.SOPInstanceUID = dataset.file_meta.MediaStorageSOPInstanceUID
    dataset.StudyInstanceUID = uid("study")
    dataset.SeriesInstanceUID = uid("series")
    dataset.PatientName = "Example^Anonymous"
    dataset.PatientID = "EXAMPLE-0001"
    dataset.StudyDate = dataset.SeriesDate = "20260101"
    dataset.Modality = "DX"
    dataset.BodyPartExamined = "CHEST"
    dataset.ViewPosition = "AP"
    dataset.PresentationIntentType = "FOR PRESENTATION"
    dataset.Rows, dataset.Columns = pixels.shape
    dataset.SamplesPerPixel = 1
    dataset.PhotometricInterpretation = "MONOCHROME2"
    dataset.BitsAllocated = dataset.BitsStored = 8
    dataset.HighBit = 7
    dataset.PixelRepresentation = 0
    dataset.PixelData = pixels.tobytes()
    return dataset


def main() -> int:
    chest_dicom(SOURCE).save_as(TARGET, enforce_file_format=True)
    print(f"{TARGET.relative_to(HERE.parent)}: {TARGET.stat().st_size} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
