"""What ``pneumoscan validate`` measures, as ``report.json`` holds it (schema: ``ValidationReport``)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from pneumoscan.schemas import Confusion, SiteEstimate
from training.calibration import ECE_BINS

REPORT_FILE = "report.json"


class ModelFacts(BaseModel):
    version: str
    threshold: float
    temperature: float
    site_calibrated: bool
    site_rule: str | None = None


class DataFacts(BaseModel):
    folder: str
    labels_csv: str | None
    fingerprint: str = Field(description="sha256 of the sorted label, file and content-hash lines.")
    files: int = Field(description="Labelled files, scored or refused.")


class RefusedFile(BaseModel):
    file: str
    label: str
    code: str
    detail: str


class AtThreshold(BaseModel):
    threshold: float
    confusion: Confusion
    sensitivity: SiteEstimate
    specificity: SiteEstimate
    ppv: SiteEstimate
    npv: SiteEstimate


class ReliabilityBin(BaseModel):
    low: float
    high: float
    n: int
    mean_predicted: float | None
    observed: float | None


class CalibrationFacts(BaseModel):
    ece: float = Field(description=f"Expected calibration error over {ECE_BINS} equal-width bins.")
    bins: list[ReliabilityBin]


class OperatingPoint(BaseModel):
    rule: str
    description: str
    reachable: bool = Field(description="Whether the whole sample reaches the rule's target.")
    threshold: float | None
    in_sample: AtThreshold | None = Field(description="At the threshold chosen on the whole sample (optimistic).")
    out_of_sample_sensitivity: SiteEstimate | None = Field(
        default=None, description="Chosen on k-1 folds, counted on the held fold, pooled over the folds."
    )
    out_of_sample_specificity: SiteEstimate | None = None
    folds: int | None = None


class GradCamFacts(BaseModel):
    margin: float = Field(description="The border left out of the central region, as a share of each side.")
    n: int = Field(description="Scored images whose heatmap shows any evidence for pneumonia.")
    central_share_mean: float | None
    central_share_ci: tuple[float, float] | None = Field(description="Bootstrap 95% interval of the mean.")
    peak_in_border: SiteEstimate
    by_class: dict[str, float | None] = Field(description="Mean central share per true class.")


class ValidationReport(BaseModel):
    """``report.json`` of ``pneumoscan validate``."""

    command: str
    created: datetime
    model: ModelFacts
    data: DataFacts
    n: dict[str, int] = Field(description="Scored images per class.")
    refused: dict[str, int] = Field(description="Refused images by error code (not in n).")
    refused_files: list[RefusedFile]
    auc: float | None
    auc_ci: tuple[float, float] | None
    bootstrap: dict[str, int]
    at_threshold: AtThreshold
    calibration: CalibrationFacts
    operating_points: list[OperatingPoint]
    gradcam: GradCamFacts | None = None
