"""The DICOM node's files: received instances, grouped by study.

``incoming/<StudyInstanceUID>/<SOPInstanceUID>.dcm`` holds every instance the node acknowledged:
written to a temporary name, fsynced and renamed (and the folder fsynced) before the C-STORE
response goes out, so an acknowledged instance survives a crash. A study is ready to score once
none of its instances has arrived for the quiet time.

The results go out through ``pneumoscan.delivery.cstore.DicomOutbox`` on the same folder.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TypeGuard

from pydicom.uid import (
    JPEG2000,
    ComputedRadiographyImageStorage,
    DeflatedExplicitVRLittleEndian,
    DigitalXRayImageStorageForPresentation,
    DigitalXRayImageStorageForProcessing,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)

from pneumoscan.files import durable_write

INCOMING, OUTBOX = "incoming", "outbox"
# What the store takes, by C-STORE or STOW-RS: CR and DX radiographs (DX For Processing is stored,
# then refused by the intended-use checks as every other input is).
STORAGE_CLASSES = (
    ComputedRadiographyImageStorage,
    DigitalXRayImageStorageForPresentation,
    DigitalXRayImageStorageForProcessing,
)
# What the core pipeline decodes (pydicom with pylibjpeg and pyjpegls).
TRANSFER_SYNTAXES = [
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    JPEG2000Lossless,
    JPEG2000,
    RLELossless,
]

# A DICOM UID: digits and dots, at most 64 characters; used as a file name, so checked first.
UID = re.compile(r"[0-9]+(\.[0-9]+)*")


class InvalidInstance(ValueError):
    """An instance the node cannot file: a missing or malformed study or SOP instance UID."""


def is_uid(value: object) -> TypeGuard[str]:
    return isinstance(value, str) and len(value) <= 64 and UID.fullmatch(value) is not None


@dataclass(frozen=True)
class Study:
    folder: Path
    instances: int
    newest: float  # mtime of the newest instance

    @property
    def signature(self) -> tuple[int, float]:
        return self.instances, self.newest


class DicomStore:
    """The node's ``incoming`` and ``outbox`` folders under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.incoming = root / INCOMING
        self.outbox = root / OUTBOX

    def put(self, study_uid: object, sop_uid: object, encoded: bytes) -> tuple[Path, bool]:
        """File one received instance (Part 10 bytes); (its path, False when the same bytes were
        already there, so a re-sent study does not change its folder)."""
        if not is_uid(study_uid) or not is_uid(sop_uid):
            raise InvalidInstance("The instance lacks a valid StudyInstanceUID or SOPInstanceUID.")
        path = self.incoming / study_uid / f"{sop_uid}.dcm"
        try:
            if path.read_bytes() == encoded:
                return path, False
        except FileNotFoundError:
            pass
        durable_write(path, encoded)
        return path, True

    def studies(self) -> list[Study]:
        found: list[Study] = []
        if not self.incoming.is_dir():
            return found
        for folder in sorted(self.incoming.iterdir()):
            times = [path.stat().st_mtime for path in folder.glob("*.dcm")]
            if times:
                found.append(Study(folder, len(times), max(times)))
        return found

    def quiet_studies(self, quiet_s: float, now: float | None = None) -> list[Study]:
        """Studies none of whose instances arrived in the last ``quiet_s`` seconds."""
        now = time.time() if now is None else now
        return [study for study in self.studies() if now - study.newest >= quiet_s]
