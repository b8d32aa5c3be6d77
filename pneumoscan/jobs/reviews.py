"""Readers' reviews of a finished job's results: an append-only ``reviews.jsonl`` in the job folder.

A reader looks at one image of a job and its result and either agrees or disagrees with the
model, or states the truth (``NORMAL``, ``PNEUMONIA``, or ``not_a_chest_xray``). Each review is
one JSON line appended under an exclusive lock and fsynced before it is acknowledged, so a reload
loses nothing and two readers never overwrite each other: every review is kept, and for each file
the latest review (the last line, whoever wrote it) is the one that counts.

From the latest reviews come the reader-vs-model agreement (sensitivity and specificity of the
model against the readers' truth, with Wilson 95% intervals) and the ``file,label`` CSV that
``pneumoscan validate`` and ``calibrate`` read (files the readers found not to be chest X-rays,
and files without a truth, are left out).
"""

from __future__ import annotations

import csv
import fcntl
import io
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Final, Literal, TypeVar, cast

from pydantic import BaseModel, Field, ValidationError

from pneumoscan.errors import FolderNotAllowed, ResultNotFound
from pneumoscan.intervals import wilson_interval
from pneumoscan.jobs.folder import MANIFEST_FILE
from pneumoscan.result import Result

REVIEWS_FILE = "reviews.jsonl"
NUMBERING_LOCK = ".reviews.lock"
NOT_A_CHEST_XRAY: Final = "not_a_chest_xray"
Verdict = Literal["agree", "disagree"]
Truth = Literal["NORMAL", "PNEUMONIA", "not_a_chest_xray"]
LABELS = ("NORMAL", "PNEUMONIA")
M = TypeVar("M", bound=BaseModel)

log = logging.getLogger("pneumoscan.jobs")


class Review(BaseModel):
    """One reader's judgement of one file of a job, as stored (one line of ``reviews.jsonl``)."""

    file: str = Field(description="The file, relative to the job's input folder (results.csv's path).")
    reader: str = Field(description="Who reviewed it, as they gave their name.")
    verdict: Verdict = Field(description="Whether the reader agrees with the model's answer.")
    truth: Truth | None = Field(description="What the image shows, in the reader's judgement; null when unknown.")
    model_label: str | None = Field(description="The model's label; null for a refused file.")
    model_error: str | None = Field(description="The refusal's code for a file the model refused.")
    model_version: str = Field(description="The model version that produced the result reviewed.")
    time: datetime = Field(description="When the review was stored (UTC).")


def _model_answer(result: Result) -> tuple[Truth | None, str | None]:
    """The model's label (None for a refused file) and the refusal's code (None for a scored one)."""
    if result.prediction is not None:
        return cast(Truth, result.prediction.label), None
    return None, (result.error.code if result.error is not None else None) or None


def judge(result: Result, verdict: Verdict | None, truth: Truth | None) -> tuple[Verdict, Truth | None]:
    """The verdict and truth of a review of ``result`` (a results.csv row read back) from either or both.

    Agreeing with a label makes it the truth; disagreeing with one makes the other label the
    truth (the model has two). Agreeing with a ``not_a_chest_xray`` refusal makes that the truth;
    other refusals leave the truth open unless stated. A stated truth wins over the one a verdict
    implies, and decides the verdict: agree when it is the model's answer."""
    if verdict is None and truth is None:
        raise ValueError("A review needs a verdict (agree, disagree) or a truth.")
    label, error = _model_answer(result)
    if label is not None:
        implied: Truth | None = label if verdict == "agree" else cast(Truth, LABELS[1 - LABELS.index(label)])
    else:
        implied = NOT_A_CHEST_XRAY if verdict == "agree" and error == NOT_A_CHEST_XRAY else None
    if truth is None:
        return verdict, implied  # type: ignore[return-value]
    model_answer = label or (NOT_A_CHEST_XRAY if error == NOT_A_CHEST_XRAY else None)
    return ("agree" if truth == model_answer else "disagree"), truth


def make_review(
    result: Result,
    model_version: str,
    reader: str,
    verdict: Verdict | None,
    truth: Truth | None,
    time: datetime | None = None,
) -> Review:
    """The review of ``result`` by ``reader`` (time: now unless given). ``model_version`` is the
    job's model, recorded for a refused file (whose result names none), as results.csv records it."""
    reader = " ".join(reader.split())
    if not reader:
        raise ValueError("A review needs the reader's name.")
    verdict, truth = judge(result, verdict, truth)
    label, error = _model_answer(result)
    return Review(
        file=result.file or "",
        reader=reader,
        verdict=verdict,
        truth=truth,
        model_label=label,
        model_error=error,
        model_version=result.prediction.model_version if result.prediction is not None else model_version,
        time=time or datetime.now(UTC),
    )


def append_review(job_dir: Path, review: Review) -> Review:
    """Append ``review`` to the job's ``reviews.jsonl`` under an exclusive lock, fsynced; its time
    is set under the lock, so the file's order is the order of the times."""
    return append_record(job_dir / REVIEWS_FILE, lambda: review.model_copy(update={"time": datetime.now(UTC)}))


@contextmanager
def numbering(job_dir: Path) -> Iterator[None]:
    """Hold the job's numbering lock (``.reviews.lock``, exclusive): a file's reviews and
    corrections share one numbering, so each is appended and numbered under it, and no two take
    the same number, whichever process or thread writes them."""
    descriptor = os.open(job_dir / NUMBERING_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)  # releases the lock


def append_record(path: Path, make: Callable[[], M]) -> M:
    """Append the record ``make()`` builds, as one JSON line, to ``path`` under an exclusive lock,
    fsynced (the folder too when the file is new); ``make`` runs under the lock."""
    return append_records(path, lambda: [make()])[0]


def append_records(path: Path, make: Callable[[], list[M]]) -> list[M]:
    """Append the records ``make()`` builds, one JSON line each, to ``path`` in one write under an
    exclusive lock, fsynced once (the folder too when the file is new); ``make`` runs under the lock."""
    created = not path.exists()
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        stored = make()
        lines = b"".join(record.model_dump_json().encode() + b"\n" for record in stored)
        size = os.fstat(descriptor).st_size
        if lines and size and _last_byte(path, size) != b"\n":
            lines = b"\n" + lines  # a line cut short by a crash stays a line of its own
        os.write(descriptor, lines)
        os.fsync(descriptor)
    finally:
        os.close(descriptor)  # releases the lock
    if created:
        folder = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
    return stored


def _last_byte(path: Path, size: int) -> bytes:
    with path.open("rb") as handle:
        handle.seek(size - 1)
        return handle.read(1)


def read_reviews(job_dir: Path) -> list[Review]:
    """Every review of the job, oldest first; a line cut short by a crash is skipped."""
    return read_records(job_dir / REVIEWS_FILE, Review)


def read_records(path: Path, kind: type[M]) -> list[M]:
    """Every record of a JSON-lines file ``append_record`` writes, oldest first; a line cut short
    by a crash is skipped; none when there is no file."""
    try:
        lines = path.read_bytes().splitlines()
    except FileNotFoundError:
        return []
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            records.append(kind.model_validate_json(line))
        except ValidationError:
            log.warning("Skipped line %d of %s: not a complete record.", number, path)
    return records


def latest_reviews(reviews: Iterable[Review]) -> dict[str, Review]:
    """The latest review of each file (later lines win), by file."""
    latest: dict[str, Review] = {}
    for review in reviews:
        latest.pop(review.file, None)
        latest[review.file] = review
    return latest


class Rate(BaseModel):
    """A proportion with its n and Wilson 95% interval (null when n is 0)."""

    value: float | None
    n: int
    low: float | None
    high: float | None


def wilson(successes: int, n: int) -> Rate:
    """``successes / n`` with its 95% Wilson interval (``pneumoscan.intervals``)."""
    interval = wilson_interval(successes, n)
    if interval is None:
        return Rate(value=None, n=0, low=None, high=None)
    return Rate(value=successes / n, n=n, low=interval[0], high=interval[1])


class Agreement(BaseModel):
    """The model against the readers' truth, over the latest review of each file."""

    files: int = Field(description="Files in the job.")
    reviewed: int = Field(description="Files with at least one review.")
    agreed: int = Field(description="Files whose latest review agrees with the model.")
    true_positive: int
    false_negative: int
    true_negative: int
    false_positive: int
    refused_xrays: int = Field(description="Files the model refused that readers labelled NORMAL or PNEUMONIA.")
    scored_not_xrays: int = Field(description="Files the model scored that readers found not to be chest X-rays.")
    sensitivity: Rate = Field(description="PNEUMONIA answers among the files readers labelled PNEUMONIA.")
    specificity: Rate = Field(description="NORMAL answers among the files readers labelled NORMAL.")


def agreement(results: list[Result], latest: dict[str, Review]) -> Agreement:
    """Reader-vs-model agreement for a job's results (its results.csv read back) and its latest reviews."""
    counts = {"tp": 0, "fn": 0, "tn": 0, "fp": 0, "refused": 0, "not_xray": 0}
    reviewed = agreed = 0
    for result in results:
        review = latest.get(result.file or "")
        if review is None:
            continue
        reviewed += 1
        agreed += review.verdict == "agree"
        scored = result.prediction is not None
        if review.truth == NOT_A_CHEST_XRAY:
            counts["not_xray"] += scored
        elif review.truth in LABELS and result.prediction is None:
            counts["refused"] += 1
        elif review.truth in LABELS and result.prediction is not None:
            positive_truth, positive_answer = review.truth == "PNEUMONIA", result.prediction.label == "PNEUMONIA"
            key = ("tp" if positive_answer else "fn") if positive_truth else ("fp" if positive_answer else "tn")
            counts[key] += 1
    return Agreement(
        files=len(results),
        reviewed=reviewed,
        agreed=agreed,
        true_positive=counts["tp"],
        false_negative=counts["fn"],
        true_negative=counts["tn"],
        false_positive=counts["fp"],
        refused_xrays=counts["refused"],
        scored_not_xrays=counts["not_xray"],
        sensitivity=wilson(counts["tp"], counts["tp"] + counts["fn"]),
        specificity=wilson(counts["tn"], counts["tn"] + counts["fp"]),
    )


def labels_csv(latest: dict[str, Review]) -> str:
    """``file,label`` for ``pneumoscan validate``/``calibrate``: each file whose latest review
    says NORMAL or PNEUMONIA, sorted by file; not-an-X-ray and unknown truths are left out."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["file", "label"])
    for name in sorted(latest):
        if latest[name].truth in LABELS:
            writer.writerow([name, latest[name].truth])
    return buffer.getvalue()


def input_file(job_dir: Path, input_folder: Path, name: str, allowed_roots: list[Path] | None) -> Path:
    """The job's input file ``name`` (a manifest entry), resolved; refused when it is not in the
    manifest, or when it resolves (symlinks and '..' followed) outside the job's input folder or
    outside every allowed input root."""
    if allowed_roots is None:
        raise FolderNotAllowed("Input files are not served: the operator has not set PNEUMOSCAN_INPUT_ROOTS.")
    try:
        listed = name in (job_dir / MANIFEST_FILE).read_text().splitlines()
    except FileNotFoundError:
        listed = False
    if not listed or not name:
        raise ResultNotFound("The job has no such input file; its results.csv lists the files it has.")
    try:
        folder = input_folder.resolve(strict=True)
        path = (folder / name).resolve(strict=True)
    except (OSError, RuntimeError, ValueError) as exc:
        raise ResultNotFound("The input file no longer exists or cannot be read.") from exc
    roots = [Path(root).resolve() for root in allowed_roots]
    if not path.is_relative_to(folder) or not any(path.is_relative_to(root) for root in roots):
        raise FolderNotAllowed("The input file lies outside the job's input folder or the input roots.")
    if not path.is_file():
        raise ResultNotFound("The input file is not a file.")
    return path
