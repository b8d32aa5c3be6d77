"""A finished job scored again with another model version: corrections for the labels it changes.

``rescore`` scores the job's files with the new version and compares each answer with the one
that went out. Where the label changed, the result is sent again as **corrected**, under the
identity it first went out with (its HL7 filler order number and control ids, its FHIR
identifiers, its DICOM SR's series), carrying the new version's label, probability and version
(``pneumoscan.reports.verification.Verification.rescore``). Nothing is sent for a label that did
not change, for a file a reader has reviewed (the reader's word stands), or for a file either
version refused.

Each correction is recorded in the job's ``corrections.jsonl`` (appended, fsynced) before it is
queued; a file's corrections and reviews share one numbering, taken under the job's numbering
lock (``reviews.numbering``), so their messages follow each other in the outboxes and a review
stored while the job was being scored again still stands. Rescoring with the same version again
queues the recorded corrections once more, which the outboxes take only once: a run cut short
loses nothing and sends nothing twice.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, Field

from pneumoscan.delivery.destinations import Delivery
from pneumoscan.jobs.dicom_outputs import write_review
from pneumoscan.jobs.folder import load_job
from pneumoscan.jobs.results import read_results
from pneumoscan.jobs.reviews import Review, append_records, append_review, numbering, read_records, read_reviews
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


def version_numbers(reviews: list[Review], corrections: list[Correction]) -> Counter[str]:
    """How many reviews and corrections each file has had: the number the last of them took."""
    return Counter(review.file for review in reviews) + Counter(each.file for each in corrections)


def versions(job_dir: Path, file: str) -> int:
    """``version_numbers`` of one file of the job."""
    return version_numbers(read_reviews(job_dir), read_corrections(job_dir))[file]


def record_review(job_dir: Path, review: Review) -> tuple[Review, int]:
    """Append ``review`` (``append_review``) and give it the file's next version number, both under
    the job's numbering lock: the review as stored and its number."""
    with numbering(job_dir):
        stored = append_review(job_dir, review)
        return stored, versions(job_dir, stored.file)


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
    folder = Path(spec.input_folder)
    scored = [name for name, result in earlier.items() if result.prediction is not None]
    outcome.refused = [name for name, result in earlier.items() if result.prediction is None]
    if progress is not None and outcome.refused:
        progress(len(outcome.refused))
    paths = [folder / name for name in scored]
    answers = list(score_paths(predictor, paths, batch_size=batch_size, progress=progress))
    with numbering(job_dir):
        _settle(job_dir, outcome, [(earlier[name], new.prediction) for name, new in zip(scored, answers, strict=True)])
    for correction in outcome.corrected:
        _queue(spec, earlier[correction.file], correction, sending)
    return outcome


def _settle(job_dir: Path, outcome: Rescore, answers: list[tuple[Result, Prediction | None]]) -> None:
    """Under the numbering lock, sort each earlier result and its new answer into ``outcome`` and
    record the new corrections in one append, each numbered after the file's reviews and
    corrections so far (read once, here, so a review stored while the job was scored counts)."""
    reviews, corrections = read_reviews(job_dir), read_corrections(job_dir)
    reviewed = {review.file for review in reviews}
    recorded = {c.file: c for c in corrections if c.model_version == outcome.model_version}
    numbers = version_numbers(reviews, corrections)
    now, new = datetime.now(UTC), []
    for old, prediction in answers:
        name = old.file or ""
        if name in reviewed:
            outcome.reviewed.append(name)
        elif prediction is None:
            outcome.refused.append(name)
        elif name in recorded:
            outcome.corrected.append(recorded[name])
        elif Verification.rescore(old, prediction, now, 1) is None:
            outcome.unchanged.append(name)
        else:
            numbers[name] += 1
            earlier_label = old.prediction.label if old.prediction else ""
            correction = Correction(
                file=name,
                model_version=prediction.model_version,
                earlier_label=earlier_label,
                prediction=prediction,
                sequence=numbers[name],
                time=now,
            )
            new.append(correction)
            outcome.corrected.append(correction)
    if new:
        append_records(job_dir / CORRECTIONS_FILE, lambda: new)


def _queue(spec: JobSpec, old: Result, correction: Correction, sending: Sending) -> None:
    """Put one correction in every outbox it goes to (again: an outbox takes a message once)."""
    verification = Verification.rescore(old, correction.prediction, correction.time, correction.sequence)
    if verification is None:
        raise ValueError(f"The correction of {correction.file} does not change its label.")
    sending.delivery.queue_verification(old, verification)
    if sending.dicom and spec.dicom_outbox is not None:
        source = Path(spec.input_folder) / correction.file
        write_review(Path(spec.dicom_outbox), source, old, spec.model_version, verification, sending.organization)
