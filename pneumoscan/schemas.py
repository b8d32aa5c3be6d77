"""Pydantic models shared by the CLI, the service and the worker."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Label = Literal["NORMAL", "PNEUMONIA"]


class Prediction(BaseModel):
    """One X-ray's result."""

    model_config = ConfigDict(protected_namespaces=())

    label: Label
    probability: float = Field(ge=0.0, le=1.0, description="P(pneumonia) from the model.")
    threshold: float = Field(ge=0.0, le=1.0, description="PNEUMONIA when probability >= threshold.")
    model_version: str


class DicomIdentifiers(BaseModel):
    """The UIDs of a DICOM input, for matching a result to the PACS; null for JPEG and PNG."""

    study_instance_uid: str | None = None
    series_instance_uid: str | None = None
    sop_instance_uid: str | None = None


class ErrorInfo(BaseModel):
    code: str = Field(description="Stable machine-readable error code.")
    detail: str = Field(description="Human-readable explanation.")


class FilePrediction(DicomIdentifiers):
    """One line of ``pneumoscan predict``: a result or an error for one file."""

    file: str
    label: Label | None = None
    probability: float | None = None
    threshold: float | None = None
    error: ErrorInfo | None = None


class Confusion(BaseModel):
    tp: int
    fp: int
    tn: int
    fn: int


class EvaluationReport(BaseModel):
    """Metrics at the model's threshold; the positive class is PNEUMONIA."""

    n: int
    auc: float
    accuracy: float
    sensitivity: float
    specificity: float
    threshold: float
    confusion: Confusion


class ModelMetadata(BaseModel):
    """``metadata.json`` beside every saved ``model.keras``."""

    model_config = ConfigDict(protected_namespaces=())

    name: str = "pneumonia-cnn"
    version: str
    recipe: str
    class_names: list[str]
    input_shape: list[int]
    threshold: float = Field(ge=0.0, le=1.0)
    target_sensitivity: float
    epochs_run: int
    best_epoch: int
    seed: int
    validation: EvaluationReport
    train_images: int
    validation_images: int
    training_fingerprint: str = Field(description="sha256 of the sorted training file list.")
    created: datetime
    training_seconds: float
    versions: dict[str, str] = Field(description="Library versions used for training.")


class PredictionResponse(Prediction, DicomIdentifiers):
    """``POST /predict``: one X-ray's result and the request it answers."""

    request_id: str


class BatchItemError(BaseModel):
    filename: str | None = None
    error: ErrorInfo


class BatchItemResult(Prediction, DicomIdentifiers):
    filename: str | None = None


class BatchResponse(BaseModel):
    """``POST /predict_batch``: one entry per uploaded image, in upload order."""

    request_id: str
    results: list[BatchItemResult | BatchItemError]


class ErrorResponse(BaseModel):
    """Every HTTP error body."""

    error: str = Field(description="Stable machine-readable error code.")
    detail: str = Field(description="Human-readable explanation.")
