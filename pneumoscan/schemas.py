"""Pydantic models shared by the CLI, the service and the worker."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, computed_field

Label = Literal["NORMAL", "PNEUMONIA"]


class Prediction(BaseModel):
    """One X-ray's result."""

    model_config = ConfigDict(protected_namespaces=())

    label: Label
    probability: float = Field(ge=0.0, le=1.0, description="P(pneumonia) from the model.")
    threshold: float = Field(ge=0.0, le=1.0, description="PNEUMONIA when probability >= threshold.")
    model_version: str
    out_of_distribution: bool = Field(
        default=False,
        description="True when the input gate found the image unlike the training X-rays and "
        "PNEUMOSCAN_OOD_POLICY=flag let it through: do not trust the label.",
    )
    ood_score: float | None = Field(
        default=None,
        description="Distance from the training X-rays as a multiple of the gate's limit (above 1: out of "
        "distribution); null for a model without a gate.",
    )


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
    out_of_distribution: bool | None = None
    ood_score: float | None = None
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
    refused: dict[str, int] = Field(default_factory=dict, description="Refused images by code (not in n).")


class GateRefusals(BaseModel):
    n: int
    refused: int
    nearest: float | None = Field(
        default=None,
        description="The image nearest the limit, as distance / limit: the largest for X-rays, the smallest for "
        "non-X-ray images that reached the distance check (blank images do not).",
    )

    @property
    def rate(self) -> float:
        return self.refused / self.n if self.n else float("nan")


class GateInfo(BaseModel):
    """The out-of-distribution gate saved with a model (``gate.npz``)."""

    threshold: float = Field(gt=0.0, description="Largest accepted Mahalanobis distance.")
    rule: str = Field(description="How the threshold was chosen.")
    sha256: str = Field(description="sha256 of gate.npz.")
    layers: list[str] = Field(description="Layers whose pooled activations the distance is measured on.")
    features: int
    refusals: dict[str, GateRefusals] = Field(
        description="Refused / scored per image set: validation X-rays (clean and stressed) and each "
        "kind of non-X-ray image."
    )


class CalibrationInfo(BaseModel):
    temperature: float = Field(gt=0.0, description="Softmax temperature fitted on stressed validation.")
    ece_before: dict[str, float] = Field(description="Expected calibration error (10 bins) before scaling.")
    ece_after: dict[str, float] = Field(description="Expected calibration error (10 bins) after scaling.")


class SiteEstimate(BaseModel):
    """A proportion with its 95% interval and the counts it rests on."""

    value: float | None = Field(description="The point estimate; null when its denominator is 0.")
    ci: tuple[float, float] | None = Field(description="95% interval [low, high] (Wilson); null with no data.")
    successes: int
    n: int


class SiteCalibration(BaseModel):
    """``metadata.json``'s ``site`` block: where and how a site set its own operating point."""

    rule: str = Field(description="`youden`, `sensitivity:X` or `specificity:X`.")
    threshold: float = Field(ge=0.0, le=1.0, description="The site's threshold on calibrated P(pneumonia).")
    previous_threshold: float = Field(description="The threshold of the model it was calibrated from.")
    parent_version: str = Field(description="The version of the model it was calibrated from.")
    temperature: float = Field(gt=0.0, description="The softmax temperature this version applies.")
    temperature_refitted: bool = Field(description="Whether the temperature was refitted on the site's data.")
    n: dict[str, int] = Field(description="Scored images per class (refused images left out).")
    refused: dict[str, int] = Field(default_factory=dict, description="Images the input gate refused, by code.")
    data_fingerprint: str = Field(description="sha256 of the sorted `file,label` list the site data gave.")
    folds: int = Field(description="Cross-validation folds the out-of-sample estimates come from.")
    sensitivity: SiteEstimate = Field(description="Out of sample: chosen on k-1 folds, counted on the held fold.")
    specificity: SiteEstimate = Field(description="Out of sample, as sensitivity.")
    auc: float | None = None
    auc_ci: tuple[float, float] | None = None
    gate_extended: bool = Field(default=False, description="Whether the site's X-rays were added to the gate.")
    created: datetime


class AdaptationFigures(BaseModel):
    """One model's figures on a site's sample: the parent as it was, or the adapted version out of fold."""

    auc: float
    auc_ci: tuple[float, float]
    threshold: float = Field(description="The operating point the sensitivity and specificity are counted at.")
    sensitivity: SiteEstimate
    specificity: SiteEstimate
    rule_sensitivity: SiteEstimate | None = Field(
        default=None, description="Out of sample at the adaptation's rule (chosen on k-1 folds, counted on the held)."
    )
    rule_specificity: SiteEstimate | None = None


class SiteAdaptation(BaseModel):
    """``metadata.json``'s ``adaptation`` block: how `pneumoscan adapt` adapted this version."""

    parent_version: str
    method: Literal["classifier", "fine-tune"] = Field(
        default="fine-tune", description="`classifier`: only the last layer refitted; `fine-tune`: later stages too."
    )
    epochs: int = Field(description="Fine-tuning epochs, chosen out of fold (0 with `classifier`).")
    max_epochs: int
    auc_by_epoch: list[float] = Field(description="Pooled out-of-fold AUC after 0 (the parent), 1, ... epochs.")
    l2_sp_tried: list[float] = Field(default_factory=list, description="`classifier`: strengths, strongest first.")
    auc_by_l2_sp: list[float] = Field(default_factory=list, description="`classifier`: pooled out-of-fold AUC of each.")
    learning_rate: float = Field(description="Adam's, fine-tuning (0 with `classifier`, fitted by L-BFGS).")
    l2_sp: float = Field(description="Weight of the squared distance from the parent's weights in the loss.")
    frozen: list[str] = Field(description="Stages whose weights stayed; every batch norm stayed as well.")
    folds: int
    grouping: str = Field(description="How images were grouped into patients for the folds.")
    groups: int
    training_images_mixed: int = Field(description="Training X-rays mixed into each epoch (0 without --train-data).")
    before: AdaptationFigures = Field(description="The parent on the whole sample at its own threshold.")
    after: AdaptationFigures = Field(description="Out of fold, at the threshold chosen on the out-of-fold answers.")
    validation_before: EvaluationReport | None = Field(
        default=None, description="The parent on its own validation split (with --train-data)."
    )
    validation_after: EvaluationReport | None = Field(
        default=None, description="The adapted version on the same split, at its own threshold and temperature."
    )
    gate_site_refused: int = Field(description="Site X-rays the gate refuses with the adapted features.")
    gate_non_xrays_passing: int = Field(description="Images of the non-X-ray check set it would let through.")
    seconds: float


class ModelMetadata(BaseModel):
    """``metadata.json`` beside every saved ``model.keras``."""

    model_config = ConfigDict(protected_namespaces=())

    name: str = "pneumonia-cnn"
    version: str
    recipe: str
    class_names: list[str]
    input_shape: list[int]
    threshold: float = Field(ge=0.0, le=1.0)
    target_sensitivity: float | None = Field(
        default=None, description="Earlier models: the validation sensitivity the threshold was set for."
    )
    epochs_run: int
    best_epoch: int
    seed: int
    members: list[dict[str, Any]] | None = None  # an ensemble's: version, seed, epochs_run, best_epoch
    validation: EvaluationReport
    train_images: int
    validation_images: int
    training_fingerprint: str = Field(description="sha256 of the sorted training file list.")
    created: datetime
    training_seconds: float
    versions: dict[str, str] = Field(description="Library versions used for training.")
    threshold_rule: str | None = Field(default=None, description="How the threshold was chosen.")
    stressed_validation: EvaluationReport | None = Field(
        default=None, description="Validation metrics on augmented copies of the validation split."
    )
    calibration: CalibrationInfo | None = None
    gate: GateInfo | None = None
    shift_proxy: dict | None = Field(
        default=None, description="The figures `training.shift_proxy` measured (the model card's shift-proxy section)."
    )
    candidates: dict | None = Field(
        default=None, description="Recipes compared on a later period (`training.site.candidates`, the card's section)."
    )
    site: SiteCalibration | None = Field(
        default=None, description="Set by `pneumoscan calibrate` and `adapt`: the site's operating point and its data."
    )
    adaptation: SiteAdaptation | None = Field(
        default=None, description="Set by `pneumoscan adapt`: how it adapted the weights to the site's X-rays."
    )


class ServedModel(BaseModel):
    """``GET /version``: the model version this service scores with, and its operating point."""

    model_config = ConfigDict(protected_namespaces=())

    name: str
    version: str = Field(description="Every result, FHIR Device, HL7 message and DICOM SR names this version.")
    recipe: str
    threshold: float = Field(description="The threshold in use (PNEUMOSCAN_THRESHOLD overrides the model's).")
    threshold_overridden: bool = Field(description="Whether PNEUMOSCAN_THRESHOLD replaces the model's own threshold.")
    threshold_rule: str | None = None
    site_calibrated: bool = Field(
        description="Whether `pneumoscan calibrate` or `adapt` set this version's operating point."
    )
    adapted: bool = Field(default=False, description="Whether `pneumoscan adapt` adapted this version's weights.")
    site: SiteCalibration | None = None
    ood_threshold: float | None = Field(default=None, description="The input gate's limit; null without a gate.")
    ood_policy: str

    @classmethod
    def of(cls, metadata: ModelMetadata, threshold: float, ood_policy: str) -> ServedModel:
        return cls(
            name=metadata.name,
            version=metadata.version,
            recipe=metadata.recipe,
            threshold=threshold,
            threshold_overridden=threshold != metadata.threshold,
            threshold_rule=metadata.threshold_rule,
            site_calibrated=metadata.site is not None,
            adapted=metadata.adaptation is not None,
            site=metadata.site,
            ood_threshold=metadata.gate.threshold if metadata.gate else None,
            ood_policy=ood_policy,
        )


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


JobState = Literal["queued", "running", "done", "failed"]


class JobSpec(BaseModel):
    """``job.json``: what a batch job scores, with which model, in shards of what size."""

    job_id: str
    input_folder: str
    model_version: str
    shard_size: int
    total: int
    shards: int
    created: datetime
    dicom_outbox: str | None = Field(
        default=None,
        description="For studies received by the DICOM node: the folder the results go to as DICOM "
        "(an SR per image and a Secondary Capture per scored image), to be sent to the PACS.",
    )
    # A job over a PACS's studies: the DICOMweb query its files come from (fetched as shards are scored).
    source: dict[str, Any] | None = None


class JobStatus(BaseModel):
    """A job's progress, read from its folder (``pneumoscan status --json``, ``GET /jobs/{id}``)."""

    job_id: str
    state: JobState = Field(description="`failed` means the job itself cannot be read, never that files were refused.")
    total: int = 0
    done: int = Field(default=0, description="Files finished so far: scored, refused or unreadable.")
    refused: int = Field(
        default=0, description="Files the model refused (not what it was made for, or not decodable), by now."
    )
    unreadable: int = Field(
        default=0,
        description="Files that could not be read or scored at all (missing, no permission, crashed workers).",
    )
    images_per_second: float | None = None
    eta_seconds: float | None = None
    output: str | None = None
    input_folder: str | None = None
    created: datetime | None = None
    detail: str | None = None

    @computed_field(  # type: ignore[prop-decorator]
        description="Deprecated, to be removed in the next release: `refused` + `unreadable`, the count's old name."
    )
    @property
    def failed(self) -> int:
        return self.refused + self.unreadable
