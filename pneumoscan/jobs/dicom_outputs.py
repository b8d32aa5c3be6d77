"""A DICOM-node job's results as DICOM, written to its outbox by the worker that scores a shard.

Per source instance: a TID 1500 Structured Report with the finding and probability, and an RGB
Secondary Capture of the Grad-CAM overlay with its burned-in banner; for a refused instance, an
SR stating that it was not analysed and why (``pneumoscan.dicom.results``). They are built from
what scoring decoded (``pneumoscan.model.scoring.Scan``): the file is not read or decoded again.
Their UIDs derive from the source instance and the model version, so scoring a shard again queues
nothing new, and the PACS sees no new instances. Files that are not DICOM, or whose header gives
no study or instance UID, get no DICOM result.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path

import pydicom
import pydicom.errors

from pneumoscan.delivery.cstore import DicomOutbox
from pneumoscan.dicom.store import is_uid
from pneumoscan.model.predictor import Predictor
from pneumoscan.model.scoring import Scan
from pneumoscan.reports.verification import Verification, message_id
from pneumoscan.result import Result

log = logging.getLogger("pneumoscan.jobs")


def part10_bytes(dataset: pydicom.Dataset) -> bytes:
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


class DicomResultWriter:
    """Writes the DICOM results of scored files into ``outbox``."""

    def __init__(self, predictor: Predictor, outbox: Path) -> None:
        self.predictor = predictor
        self.outbox = DicomOutbox.for_folder(outbox)

    def write(self, result: Result, scan: Scan | None) -> int:
        """The number of DICOM results queued for a scored file (none already queued or
        delivered), built from what scoring decoded (``scan``; None: not a DICOM file)."""
        from pneumoscan.dicom.results import not_analysed_report, secondary_capture, structured_report

        if scan is None:
            return 0
        source = scan.header
        if not (is_uid(source.get("StudyInstanceUID")) and is_uid(source.get("SOPInstanceUID"))):
            return 0
        version = self.predictor.model_version
        datasets: list[pydicom.Dataset] = []
        if result.error is not None:
            datasets.append(not_analysed_report(source, version, result.error.code, result.error.detail))
        if result.prediction is not None:
            datasets.append(structured_report(source, result.prediction))
            overlay = self._overlay(scan)
            if overlay is not None:
                datasets.append(secondary_capture(source, overlay, version))
        return sum(self.outbox.put(str(dataset.SOPInstanceUID), part10_bytes(dataset)) for dataset in datasets)

    def _overlay(self, scan: Scan):
        """The Grad-CAM overlay of the image (RGB), or None where Grad-CAM is unavailable."""
        import keras

        from pneumoscan.imaging.preprocess import plane_to_input
        from pneumoscan.model.gradcam import overlay

        if scan.plane is None or scan.display is None:
            return None
        if keras.backend.backend() != "tensorflow":
            log.warning("No Secondary Capture: Grad-CAM needs Keras' TensorFlow backend.")
            return None
        return overlay(scan.display, self.predictor.heatmap(plane_to_input(scan.plane)))


def write_review(
    outbox: Path,
    source_path: Path,
    result: Result,
    model_version: str,
    verification: Verification,
    organization: str,
) -> bool:
    """Queue the SR a reader's review makes of a result (``reviewed_report``) in ``outbox``,
    after the SR it replaces; False when the source is no DICOM file with study and instance UIDs."""
    from pneumoscan.dicom.results import derived_uid, reviewed_report

    try:
        source = pydicom.dcmread(source_path, stop_before_pixels=True)
    except (OSError, pydicom.errors.InvalidDicomError, ValueError, EOFError):
        return False
    if not (is_uid(source.get("StudyInstanceUID")) and is_uid(source.get("SOPInstanceUID"))):
        return False
    report = reviewed_report(source, result.prediction, model_version, verification, organization)
    preliminary = derived_uid(source.SOPInstanceUID, model_version, "sr" if result.prediction else "not-analysed")
    return DicomOutbox.for_folder(outbox).put(message_id(preliminary, verification), part10_bytes(report))
