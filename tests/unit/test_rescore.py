"""Rescoring a finished job: corrections numbered with the file's reviews under one lock, a review
stored while the job is scored again standing, and a rescore run again recording nothing twice."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest

from pneumoscan.delivery.destinations import Delivery
from pneumoscan.jobs.folder import load_job
from pneumoscan.jobs.rescore import CORRECTIONS_FILE, Sending, read_corrections, record_review, rescore
from pneumoscan.jobs.results import read_results
from pneumoscan.jobs.reviews import make_review
from pneumoscan.model.predictor import Predictor
from pneumoscan.result import Result
from pneumoscan.schemas import Prediction
from pneumoscan.settings import BUNDLED_MODEL_DIR
from tests.support import finished_job, xray_paths

NOT_SENT = Sending(Delivery(), dicom=False, organization="test")


@pytest.fixture(scope="module")
def bundled() -> Predictor:
    return Predictor.from_dir(BUNDLED_MODEL_DIR)


def _flagging_everything(base: Predictor, version: str) -> Predictor:
    """The bundled network at threshold 0 under another version: every X-ray it scores is PNEUMONIA."""
    return Predictor(base.model, threshold=0.0, model_version=version, gate=base.gate, temperature=base.temperature)


@pytest.fixture
def normal_job(tmp_path) -> Path:
    """A finished job of four fixture X-rays, each first answered NORMAL by version v1."""
    earlier = Prediction(label="NORMAL", probability=0.1, threshold=0.5, model_version="v1")
    job_dir = finished_job(tmp_path, [Result(prediction=earlier, file=f"x{n}.jpeg") for n in range(4)])
    folder = Path(load_job(job_dir).input_folder)
    for n, source in enumerate(xray_paths()[:4]):
        (folder / f"x{n}.jpeg").write_bytes(source.read_bytes())
    return job_dir


def _review(job_dir: Path, file: str, reader: str = "ada") -> int:
    row = next(result for result in read_results(job_dir) if result.file == file)
    return record_review(job_dir, make_review(row, "v1", reader, "agree", None))[1]


def test_corrections_and_reviews_share_one_numbering(normal_job, bundled):
    reviewed_meanwhile: list[int] = []

    def a_reader_meanwhile(_: int) -> None:
        if not reviewed_meanwhile:
            reviewed_meanwhile.append(_review(normal_job, "x0.jpeg"))

    first = rescore(
        normal_job, _flagging_everything(bundled, "v2"), NOT_SENT, batch_size=2, progress=a_reader_meanwhile
    )
    assert reviewed_meanwhile == [1]
    assert first.reviewed == ["x0.jpeg"], "a review stored while the job was scored again stands"
    assert [(c.file, c.sequence, c.earlier_label) for c in first.corrected] == [
        (f"x{n}.jpeg", 1, "NORMAL") for n in (1, 2, 3)
    ]
    assert _review(normal_job, "x1.jpeg") == 2, "a review after a correction is the version after it"

    second = rescore(normal_job, _flagging_everything(bundled, "v3"), NOT_SENT)
    assert second.reviewed == ["x0.jpeg", "x1.jpeg"]
    assert [(c.file, c.sequence) for c in second.corrected] == [("x2.jpeg", 2), ("x3.jpeg", 2)]

    lines = (normal_job / CORRECTIONS_FILE).read_bytes()
    again = rescore(normal_job, _flagging_everything(bundled, "v3"), NOT_SENT)
    assert again.corrected == second.corrected and (normal_job / CORRECTIONS_FILE).read_bytes() == lines
    assert len(read_corrections(normal_job)) == 5


def _review_many(job_dir: str, reader: str) -> None:
    numbers = [_review(Path(job_dir), "x2.jpeg", reader) for _ in range(30)]
    (Path(job_dir) / f"{reader}.numbers").write_text(" ".join(map(str, numbers)))


def test_readers_reviewing_at_once_never_share_a_number(normal_job):
    context = multiprocessing.get_context("fork")
    names = ("ada", "bob", "cy")
    readers = [context.Process(target=_review_many, args=(str(normal_job), name)) for name in names]
    for reader in readers:
        reader.start()
    for reader in readers:
        reader.join(120)
    numbers = [int(n) for name in names for n in (normal_job / f"{name}.numbers").read_text().split()]
    assert sorted(numbers) == list(range(1, 91)), "each review its own number, none shared"
