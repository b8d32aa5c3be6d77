"""Readers' reviews of a job: the verdict/truth rules, the append-only file, agreement, the CSV,
and the input files a review page may be served."""

from __future__ import annotations

import csv
import io
import multiprocessing
import os
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from pneumoscan.errors import FolderNotAllowed, NotAChestXray, ResultNotFound, TruncatedImage
from pneumoscan.jobs.folder import load_job
from pneumoscan.jobs.results import read_results
from pneumoscan.jobs.reviews import (
    REVIEWS_FILE,
    Review,
    agreement,
    append_review,
    input_file,
    judge,
    labels_csv,
    latest_reviews,
    make_review,
    read_reviews,
    wilson,
)
from pneumoscan.result import Result
from pneumoscan.schemas import Prediction
from tests.support import finished_job

PNEUMONIA = Result(
    prediction=Prediction(label="PNEUMONIA", probability=0.9, threshold=0.5, model_version="v1"), file="a/p.jpeg"
)
NORMAL = Result(
    prediction=Prediction(label="NORMAL", probability=0.1, threshold=0.5, model_version="v1"), file="a/n.jpeg"
)
PHOTO = Result.of(NotAChestXray("A photograph."), file="photo.jpg")
CORRUPT = Result.of(TruncatedImage("Cut short."), file="bad.png")


def test_a_verdict_or_a_truth_decides_the_other():
    assert judge(PNEUMONIA, "agree", None) == ("agree", "PNEUMONIA")
    assert judge(PNEUMONIA, "disagree", None) == ("disagree", "NORMAL")
    assert judge(NORMAL, None, "NORMAL") == ("agree", "NORMAL")
    assert judge(NORMAL, None, "not_a_chest_xray") == ("disagree", "not_a_chest_xray")
    assert judge(NORMAL, "agree", "PNEUMONIA") == ("disagree", "PNEUMONIA"), "a stated truth wins"
    assert judge(PHOTO, "agree", None) == ("agree", "not_a_chest_xray")
    assert judge(PHOTO, "disagree", None) == ("disagree", None)
    assert judge(PHOTO, None, "NORMAL") == ("disagree", "NORMAL")
    assert judge(CORRUPT, "agree", None) == ("agree", None)
    with pytest.raises(ValueError):
        judge(NORMAL, None, None)


def test_a_review_names_its_reader_model_and_time():
    review = make_review(PNEUMONIA, "v1", "  Dr   Ada ", "agree", None)
    assert (review.reader, review.model_label, review.model_version, review.model_error) == (
        "Dr Ada",
        "PNEUMONIA",
        "v1",
        None,
    )
    assert review.time.tzinfo is not None
    assert make_review(PHOTO, "v1", "b", "agree", None).model_error == "not_a_chest_xray"
    with pytest.raises(ValueError):
        make_review(PNEUMONIA, "v1", "   ", "agree", None)


def test_a_review_records_the_model_version_results_csv_records(tmp_path):
    job_dir = finished_job(tmp_path, [PNEUMONIA, PHOTO], model_version="v2")
    rows = {row["path"]: row for row in csv.DictReader(io.StringIO((job_dir / "results.csv").read_text()))}
    for result in read_results(job_dir):
        review = make_review(result, load_job(job_dir).model_version, "ada", "agree", None)
        assert review.model_version == rows[review.file]["model_version"]
        assert (review.model_label, review.model_error) == (
            rows[review.file]["label"] or None,
            rows[review.file]["error_code"] or None,
        )
    assert rows["a/p.jpeg"]["model_version"] == "v1" and rows["photo.jpg"]["model_version"] == "v2"


def test_reviews_are_appended_and_the_latest_per_file_wins(tmp_path):
    first = append_review(tmp_path, make_review(PNEUMONIA, "v1", "ada", "agree", None))
    append_review(tmp_path, make_review(NORMAL, "v1", "ada", "agree", None))
    append_review(tmp_path, make_review(PNEUMONIA, "v1", "bob", "disagree", None))
    stored = read_reviews(tmp_path)
    assert [(r.file, r.reader, r.verdict) for r in stored] == [
        ("a/p.jpeg", "ada", "agree"),
        ("a/n.jpeg", "ada", "agree"),
        ("a/p.jpeg", "bob", "disagree"),
    ]
    assert stored[0] == first and [r.time for r in stored] == sorted(r.time for r in stored)
    latest = latest_reviews(stored)
    assert latest["a/p.jpeg"].reader == "bob" and latest["a/p.jpeg"].truth == "NORMAL"
    assert read_reviews(tmp_path / "nowhere") == []


def test_a_line_cut_short_by_a_crash_costs_only_itself(tmp_path):
    append_review(tmp_path, make_review(PNEUMONIA, "v1", "ada", "agree", None))
    with (tmp_path / REVIEWS_FILE).open("ab") as handle:
        handle.write(b'{"file": "a/n.jpeg", "rea')
    append_review(tmp_path, make_review(NORMAL, "v1", "ada", "agree", None))
    assert [r.file for r in read_reviews(tmp_path)] == ["a/p.jpeg", "a/n.jpeg"]


def _append_many(folder: str, reader: str) -> None:
    for _ in range(40):
        append_review(Path(folder), make_review(PNEUMONIA, "v1", reader, "agree", None))


def test_two_processes_appending_at_once_lose_nothing(tmp_path):
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_append_many, args=(str(tmp_path), name)) for name in ("ada", "bob")]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    stored = read_reviews(tmp_path)
    assert len(stored) == 80 and {r.reader for r in stored} == {"ada", "bob"}
    assert len((tmp_path / REVIEWS_FILE).read_bytes().splitlines()) == 80


def test_agreement_against_the_readers_truth():
    rows = [PNEUMONIA, NORMAL, PHOTO, CORRUPT, replace(NORMAL, file="c.jpeg"), replace(NORMAL, file="unreviewed.jpeg")]
    reviews = [
        make_review(PNEUMONIA, "v1", "ada", "agree", None),  # true positive
        make_review(NORMAL, "v1", "ada", "disagree", None),  # truth PNEUMONIA: false negative
        make_review(NORMAL, "v1", "bob", "agree", None),  # ... then bob's latest: true negative
        make_review(PHOTO, "v1", "ada", "agree", None),  # not an X-ray, refused: not counted
        make_review(CORRUPT, "v1", "ada", None, "NORMAL"),  # an X-ray the model refused
        make_review(replace(NORMAL, file="c.jpeg"), "v1", "ada", None, "not_a_chest_xray"),
    ]
    result = agreement(rows, latest_reviews(reviews))
    assert (result.files, result.reviewed, result.agreed) == (6, 5, 3)
    assert (result.true_positive, result.false_negative, result.true_negative, result.false_positive) == (1, 0, 1, 0)
    assert (result.refused_xrays, result.scored_not_xrays) == (1, 1)
    assert result.sensitivity.value == 1.0 and result.sensitivity.n == 1
    assert 0.0 < result.sensitivity.low < 1.0 and result.sensitivity.high == 1.0
    assert agreement(rows, {}).sensitivity.value is None


def test_wilson_interval():
    rate = wilson(45, 50)
    assert (
        rate.value == 0.9
        and rate.low == pytest.approx(0.7864, abs=1e-3)
        and rate.high == pytest.approx(0.9565, abs=1e-3)
    )


def test_labels_csv_is_what_validate_reads():
    reviews = [
        make_review(PNEUMONIA, "v1", "ada", "agree", None),
        make_review(NORMAL, "v1", "ada", None, "PNEUMONIA"),
        make_review(PHOTO, "v1", "ada", "agree", None),
        make_review(CORRUPT, "v1", "ada", "disagree", None),
    ]
    rows = list(csv.DictReader(io.StringIO(labels_csv(latest_reviews(reviews)))))
    assert rows == [{"file": "a/n.jpeg", "label": "PNEUMONIA"}, {"file": "a/p.jpeg", "label": "PNEUMONIA"}]
    assert labels_csv({}) == "file,label\n"


def test_reviews_survive_as_json_lines(tmp_path):
    review = Review(
        file="x",
        reader="r",
        verdict="agree",
        truth=None,
        model_label=None,
        model_error="blank_image",
        model_version="v1",
        time=datetime(2026, 12, 3, tzinfo=UTC),
    )
    append_review(tmp_path, review)
    assert read_reviews(tmp_path)[0].model_dump(exclude={"time"}) == review.model_dump(exclude={"time"})


def test_input_files_stay_inside_the_input_folder_and_the_roots(tmp_path):
    prediction = Prediction(label="NORMAL", probability=0.1, threshold=0.5, model_version="v1")
    job_dir = finished_job(
        tmp_path,
        [Result(prediction=prediction, file="NORMAL/a.jpeg"), Result.of(NotAChestXray("photo"), file="link.jpeg")],
    )
    folder = Path(load_job(job_dir).input_folder)
    secret = tmp_path / "secret.jpeg"
    secret.write_bytes(b"outside")
    (folder / "link.jpeg").unlink()
    os.symlink(secret, folder / "link.jpeg")
    assert input_file(job_dir, folder, "NORMAL/a.jpeg", [tmp_path]) == (folder / "NORMAL/a.jpeg").resolve()
    with pytest.raises(FolderNotAllowed):
        input_file(job_dir, folder, "link.jpeg", [tmp_path]), "a symlink out of the input folder"
    with pytest.raises(FolderNotAllowed):
        input_file(job_dir, folder, "NORMAL/a.jpeg", [tmp_path / "elsewhere"]), "outside every root"
    with pytest.raises(FolderNotAllowed):
        input_file(job_dir, folder, "NORMAL/a.jpeg", None)
    for name in ("../secret.jpeg", "NORMAL/../../secret.jpeg", "/etc/passwd", "", "missing.jpeg"):
        with pytest.raises(ResultNotFound):
            input_file(job_dir, folder, name, [tmp_path])
