"""A finished job scored again with another model version: corrections for the labels it changes.

``rescore`` scores the job's files with the new version and compares each answer with the one
that went out. Where the label changed, the result is sent again as **corrected**, under the
identity it first went out with (its HL7 filler order number and control ids, its FHIR
identifiers, its DICOM SR's series), carrying the new version's label, probability and version
(``pneumoscan.reports.verification.Verification.rescore``). Nothing is sent for a label that did
not change, for a file a reader has reviewed (the reader's word stands), or for a file either
version refused.

Each correction is recorded in the job's ``corrections.jsonl`` (appended, fsynced) before it is
queued; a file's corrections and reviews share one numbering, so their messages follow each
other in the outboxes. Rescoring with the same version again queues the recorded corrections
once more, which the outboxes take only once: a run cut short loses nothing and sends nothing twice.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, Field

from pneumoscan.delivery.destinations import Delivery
from pneumoscan.jobs.dicom_outputs import write_review
from pneumoscan.jobs.folder import load_job
from pneumoscan.jobs.results import read_results
from pneumoscan.jobs.reviews import append_record, latest_reviews, read_records, read_reviews
from pneumoscan.model.predictor import Predictor
from pneumoscan.model.scoring import score_paths
from pneumoscan.reports.verification import Verification
from pneumoscan.result import Result
from pneumoscan.schemas import JobSpec, Prediction

CORRECTIONS_FILE = "corrections.jsonl"


class Correction(BaseModel):
    """One result a new model version corrected (one line of ``corrections.jsonl``)."""

    file: str = Field(description="The file, as results.csv's path names it.")
    model_version: str = Field(description="The version that corrected it.")
    earlier_label: str = Field(description="The label the result went out with.")
    prediction: Prediction = Field(description="The new version's answer.")
    sequence: int = Field(description="The file's version number, shared with its reviews.")
    time: datetime


def read_corrections(job_dir: Path) -> list[Correction]:
    return read_records(job_dir / CORRECTIONS_FILE, Correction)


def versions(job_dir: Path, file: str) -> int:
    """How many reviews and corrections the file has had: the number the last of them took."""
    reviews = sum(review.file == file for review in read_reviews(job_dir))
    return reviews + sum(each.file == file for each in read_corrections(job_dir))


@dataclass
class Rescore:
    """What a rescore found, by file: the corrections queued and the files left alone, with why."""

    model_version: str
    corrected: list[Correction] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    reviewed: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"{len(self.corrected)} corrected, {len(self.unchanged)} unchanged, {len(self.reviewed)} kept "
            f"(a reader reviewed them), {len(self.refused)} not compared (refused by either version)"
        )


@dataclass(frozen=True)
class Sending:
    """Where corrections go: the HL7/FHIR routes, and a DICOM-node job's SRs (``dicom``)."""

    delivery: Delivery
    dicom: bool
    organization: str


def rescore(
    job_dir: Path,
    predictor: Predictor,
    sending: Sending,
    *,
    batch_size: int = 32,
    progress: Callable[[int], None] | None = None,
) -> Rescore:
    """Score a finished job's files with ``predictor`` and queue a correction for each label it changes.

    ``ValueError`` when ``predictor`` is the version that scored the job; ``JobNotFinished``
    before the job is done. The queued messages are not delivered here (``Delivery.deliver``)."""
    spec = load_job(job_dir)
    if predictor.model_version == spec.model_version:
        raise ValueError(f"The job was scored with {spec.model_version}; rescore it with another version.")
    outcome = Rescore(predictor.model_version)
    earlier = {result.file or "": result for result in read_results(job_dir)}
    reviewed = latest_reviews(read_reviews(job_dir))
    recorded = {c.file: c for c in read_corrections(job_dir) if c.model_version == predictor.model_version}
    folder = Path(spec.input_folder)
    scored = [name for name, result in earlier.items() if result.prediction is not None]
    outcome.refused = [name for name, result in earlier.items() if result.prediction is None]
    if progress is not None and outcome.refused:
        progress(len(outcome.refused))
    paths = [folder / name for name in scored]
    for name, new in zip(scored, score_paths(predictor, paths, batch_size=batch_size, progress=progress), strict=True):
        old = earlier[name]
        if name in reviewed:
            outcome.reviewed.append(name)
        elif new.prediction is None:
            outcome.refused.append(name)
        elif name in recorded:
            outcome.corrected.append(recorded[name])
        elif Verification.rescore(old, new.prediction, datetime.now(UTC), 1) is None:
            outcome.unchanged.append(name)
        else:
            outcome.corrected.append(_record(job_dir, old, new.prediction))
    for correction in outcome.corrected:
        _queue(spec, earlier[correction.file], correction, sending)
    return outcome


def _record(job_dir: Path, old: Result, new: Prediction) -> Correction:
    """Append the correction under the lock, numbered after the file's reviews and corrections."""
    name, earlier_label = old.file or "", old.prediction.label if old.prediction else ""
    return append_record(
        job_dir / CORRECTIONS_FILE,
        lambda: Correction(
            file=name,
            model_version=new.model_version,
            earlier_label=earlier_label,
            prediction=new,
            sequence=versions(job_dir, name) + 1,
            time=datetime.now(UTC),
        ),
    )


def _queue(spec: JobSpec, old: Result, correction: Correction, sending: Sending) -> None:
    """Put one correction in every outbox it goes to (again: an outbox takes a message once)."""
    verification = Verification.rescore(old, correction.prediction, correction.time, correction.sequence)
    if verification is None:
        raise ValueError(f"The correction of {correction.file} does not change its label.")
    sending.delivery.queue_verification(old, verification)
    if sending.dicom and spec.dicom_outbox is not None:
        source = Path(spec.input_folder) / correction.file
        write_review(Path(spec.dicom_outbox), source, old, spec.model_version, verification, sending.organization)
