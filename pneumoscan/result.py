"""One image's result, whichever way it came in, and every form it goes out in.

A :class:`Result` is what scoring one input gives: the :class:`~pneumoscan.schemas.Prediction`
or the :class:`~pneumoscan.errors.PneumoscanError` that refused it, the sha256 of its bytes, and
the :class:`~pneumoscan.dicom.decode.DicomSource` of a DICOM input. The HTTP API, ``pneumoscan predict``,
batch jobs and FHIR all render from it:

- ``response``, ``batch_item`` and ``file_line``: the JSON bodies of ``/predict``,
  ``/predict_batch`` and ``pneumoscan predict`` (their schemas are in ``pneumoscan.schemas``);
- ``to_row`` and ``from_row``: a ``results.csv`` row and back;
- ``pneumoscan.reports.fhir.result_entries``: its FHIR resources (DiagnosticReport, Observation, Device,
  Provenance), or an OperationOutcome for a refusal.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, fields

from pneumoscan.dicom.decode import IDENTIFIER_FIELDS, DicomSource, PatientContext
from pneumoscan.errors import PneumoscanError, UnreadableFile, WorkerCrashed, error_from_code
from pneumoscan.schemas import (
    BatchItemError,
    BatchItemResult,
    DicomIdentifiers,
    ErrorInfo,
    FilePrediction,
    Prediction,
    PredictionResponse,
)

# A DICOM input's identifiers, for matching a row back to the PACS, and the patient and order
# context its result is filed under.
DICOM_COLUMNS = list(IDENTIFIER_FIELDS)
PATIENT_COLUMNS = [field.name for field in fields(PatientContext)]
# Errors that mean the input could not be read or scored at all, not that it was refused.
UNREADABLE_ERRORS = (UnreadableFile, WorkerCrashed)
RESULT_COLUMNS = [
    "path",
    "sha256",
    "label",
    "probability",
    "threshold",
    "out_of_distribution",
    "ood_score",
    "model_version",
    "status",
    "error_code",
    "error_detail",
    *DICOM_COLUMNS,
    *PATIENT_COLUMNS,
]
# What each results.csv column holds: the one description the docs' reference table is built from.
RESULT_COLUMN_DESCRIPTIONS: dict[str, str] = {
    "path": "The file's path, relative to the job's input folder.",
    "sha256": "SHA-256 of the file's bytes.",
    "label": "`PNEUMONIA` when `probability` reaches `threshold`, otherwise `NORMAL`; empty for an error row.",
    "probability": "The calibrated P(pneumonia); empty for an error row.",
    "threshold": "The decision threshold the label was given at.",
    "out_of_distribution": "`true` only for a result that `PNEUMOSCAN_OOD_POLICY=flag` let through the input gate.",
    "ood_score": "The image's distance from the training X-rays, as a multiple of the input gate's limit.",
    "model_version": "The model version that scored the file.",
    "status": "`ok`, or `error` for a file that was refused or could not be read.",
    "error_code": "The error code of an error row (see the error codes reference); empty when `ok`.",
    "error_detail": "The explanation of an error row, for humans; empty when `ok`.",
    "study_instance_uid": "Study Instance UID (DICOM files only).",
    "series_instance_uid": "Series Instance UID (DICOM files only).",
    "sop_instance_uid": "SOP Instance UID (DICOM files only).",
    "sop_class_uid": "SOP Class UID (DICOM files only).",
    "modality": "Modality, e.g. `CR` or `DX` (DICOM files only).",
    "patient_id": "PatientID (DICOM files only), for filing the result under the patient.",
    "patient_id_issuer": "IssuerOfPatientID (DICOM files only).",
    "accession_number": "AccessionNumber (DICOM files only).",
    "placer_order_number": "The placer order number (DICOM files only).",
    "filler_order_number": "The filler order number (DICOM files only).",
    "acquired": "When the image was taken, as a DICOM DT `YYYYMMDD[HHMMSS[.F]][+/-ZZXX]` (DICOM files only).",
}


@dataclass(frozen=True)
class Result:
    """A prediction or the error that refused the input; ``file`` is the input's identity: the
    file's path or the upload's filename, when there is one (``path`` in ``results.csv``,
    ``filename`` in ``/predict_batch``, ``file`` in ``pneumoscan predict``)."""

    prediction: Prediction | None = None
    error: PneumoscanError | None = None
    file: str | None = None
    sha256: str = ""
    dicom: DicomSource | None = None

    def __post_init__(self) -> None:
        if (self.prediction is None) == (self.error is None):
            raise ValueError("A Result holds either a prediction or an error.")

    @classmethod
    def of(cls, outcome: Prediction | PneumoscanError, **fields) -> Result:
        """The result for a prediction or an error, whichever ``outcome`` is."""
        if isinstance(outcome, PneumoscanError):
            return cls(error=outcome, **fields)
        return cls(prediction=outcome, **fields)

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def unreadable(self) -> bool:
        """An input that could not be read or scored at all (missing, no permission, or one that kept
        killing workers), as opposed to one the model refused."""
        return isinstance(self.error, UNREADABLE_ERRORS)

    @property
    def refused(self) -> bool:
        """An input that was read and refused: not what the model was made for, or undecodable."""
        return self.error is not None and not self.unreadable

    @property
    def image_identity(self) -> str:
        """What the image is, whatever it was called: its SOP Instance UID, or the SHA-256 of its
        bytes; its file name only for a file that could not be read."""
        if self.dicom is not None and self.dicom.sop_instance_uid:
            return f"sop:{self.dicom.sop_instance_uid}"
        if self.sha256:
            return f"sha256:{self.sha256}"
        # "name:" is part of the report id's input, so it stays as report ids have always had it.
        return f"name:{self.file or ''}"

    @property
    def report_id(self) -> str:
        """The identity of this result's report and messages (HL7 control id, FHIR identifiers):
        a UUID from the image, the model version and the threshold that labelled it. Two different
        images never share it; the same image scored again the same way keeps it, whatever the file
        was called and however often it was sent, so its report goes out once."""
        scored = "" if self.prediction is None else f"{self.prediction.model_version}:{self.prediction.threshold!r}"
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"urn:pneumoscan:result:{self.image_identity}:{scored}"))

    def identifiers(self) -> dict[str, str | None]:
        """The ``DicomIdentifiers`` fields; empty for JPEG and PNG."""
        if self.dicom is None:
            return {}
        return {name: getattr(self.dicom, name) for name in DicomIdentifiers.model_fields}

    def _scored(self) -> Prediction:
        """The prediction; ``ValueError`` for a result that holds an error."""
        if self.prediction is None:
            raise ValueError("This result holds an error, not a prediction.")
        return self.prediction

    # --- JSON -------------------------------------------------------------------------------------

    def response(self, request_id: str) -> PredictionResponse:
        """``POST /predict``'s body; the caller raises ``error`` instead."""
        return PredictionResponse(**self._scored().model_dump(), **self.identifiers(), request_id=request_id)

    def batch_item(self) -> BatchItemResult | BatchItemError:
        """One entry of ``POST /predict_batch``'s ``results``."""
        if self.error is not None:
            return BatchItemError(filename=self.file, error=ErrorInfo(**self.error.to_dict()))
        return BatchItemResult(**self._scored().model_dump(), **self.identifiers(), filename=self.file)

    def file_line(self) -> FilePrediction:
        """One line of ``pneumoscan predict``."""
        if self.error is not None:
            return FilePrediction(file=self.file, error=ErrorInfo(**self.error.to_dict()))
        values = self._scored().model_dump(exclude={"model_version"})
        return FilePrediction(file=self.file, **values, **self.identifiers())

    # --- results.csv ------------------------------------------------------------------------------

    def to_row(self, model_version: str) -> dict[str, str]:
        """The ``results.csv`` row; ``model_version`` is the scoring model's, for refused files."""
        identifiers = {column: (self.dicom and getattr(self.dicom, column)) or "" for column in DICOM_COLUMNS}
        patient = self.dicom.patient if self.dicom is not None else None
        context = {column: (patient and getattr(patient, column)) or "" for column in PATIENT_COLUMNS}
        row = {"path": self.file or "", "sha256": self.sha256, **identifiers, **context}
        if self.error is not None:
            return {
                **row,
                "label": "",
                "probability": "",
                "threshold": "",
                "out_of_distribution": "",
                "ood_score": "",
                "model_version": model_version,
                "status": "error",
                "error_code": self.error.code,
                "error_detail": self.error.detail,
            }
        prediction = self._scored()
        return {
            **row,
            "label": prediction.label,
            "probability": repr(prediction.probability),
            "threshold": repr(prediction.threshold),
            "out_of_distribution": str(prediction.out_of_distribution).lower(),
            "ood_score": "" if prediction.ood_score is None else repr(prediction.ood_score),
            "model_version": prediction.model_version,
            "status": "ok",
            "error_code": "",
            "error_detail": "",
        }

    @classmethod
    def from_row(cls, row: dict[str, str]) -> Result:
        """The result a ``results.csv`` row records; the error's class is found from its code."""
        dicom = None
        if any(row.get(column) for column in (*DICOM_COLUMNS, *PATIENT_COLUMNS)):
            context = {column: row.get(column) or None for column in PATIENT_COLUMNS}
            patient = PatientContext(**context) if any(context.values()) else None
            dicom = DicomSource(**{column: row.get(column) or None for column in DICOM_COLUMNS}, patient=patient)
        file, sha256 = row["path"], row.get("sha256", "")
        if row["status"] != "ok":
            error = error_from_code(row["error_code"], row["error_detail"])
            return cls(error=error, file=file, sha256=sha256, dicom=dicom)
        prediction = Prediction(
            label=row["label"],
            probability=float(row["probability"]),
            threshold=float(row["threshold"]),
            model_version=row["model_version"],
            out_of_distribution=row.get("out_of_distribution") == "true",
            ood_score=float(row["ood_score"]) if row.get("ood_score") else None,
        )
        return cls(prediction=prediction, file=file, sha256=sha256, dicom=dicom)
