"""One result shape: every output form is rendered from ``pneumoscan.result.Result``."""

from __future__ import annotations

import csv
import io

import pytest

from pneumoscan.dicom.decode import DicomSource
from pneumoscan.errors import BlankImage, NotAChestXray
from pneumoscan.jobs.folder import csv_bytes
from pneumoscan.reports.fhir import result_entries
from pneumoscan.result import RESULT_COLUMNS, Result
from pneumoscan.schemas import BatchItemError, BatchItemResult, Prediction, PredictionResponse

PREDICTION = Prediction(
    label="PNEUMONIA",
    probability=0.8125,
    threshold=0.6659,
    model_version="v1",
    out_of_distribution=True,
    ood_score=1.25,
)
DICOM = DicomSource(
    study_instance_uid="1.2.3",
    series_instance_uid="1.2.3.4",
    sop_instance_uid="1.2.3.4.5",
    sop_class_uid="1.2.840.10008.5.1.4.1.1.1.1",
    modality="DX",
)


def _through_csv(row: dict[str, str]) -> dict[str, str]:
    """The row as ``results.csv`` stores and reads it."""
    return next(csv.DictReader(io.StringIO(csv_bytes([row], header=True).decode())))


@pytest.mark.parametrize(
    "result",
    [
        Result(prediction=PREDICTION, file="a/b.dcm", sha256="ab" * 32, dicom=DICOM),
        Result(
            prediction=PREDICTION.model_copy(update={"ood_score": None, "out_of_distribution": False}), file="c.png"
        ),
        Result(error=NotAChestXray("Unlike the training X-rays."), file="d.png", sha256="cd" * 32),
    ],
    ids=["dicom", "png", "refused"],
)
def test_a_csv_row_reads_back_as_the_same_result(result):
    row = _through_csv(result.to_row("v1"))
    assert list(row) == RESULT_COLUMNS
    back = Result.from_row(row)
    assert (back.prediction, back.file, back.sha256, back.dicom) == (
        result.prediction,
        result.file,
        result.sha256,
        result.dicom,
    )
    assert type(back.error) is type(result.error)
    assert (back.error and back.error.to_dict()) == (result.error and result.error.to_dict())
    assert back.to_row("v1") == row, "a job's results.csv is its shards' rows read back and written again"


def test_json_renderings_agree_with_each_other():
    result = Result(prediction=PREDICTION, file="x.dcm", dicom=DICOM)
    response, item, line = result.response("r1"), result.batch_item(), result.file_line()
    assert isinstance(response, PredictionResponse) and isinstance(item, BatchItemResult)
    shared = ["label", "probability", "threshold", "out_of_distribution", "ood_score", "sop_instance_uid"]
    assert {f: getattr(response, f) for f in shared} == {f: getattr(item, f) for f in shared}
    assert {f: getattr(line, f) for f in shared} == {f: getattr(item, f) for f in shared}
    assert (item.filename, line.file, response.sop_instance_uid) == ("x.dcm", "x.dcm", "1.2.3.4.5")
    # The public shapes keep the fields they had: no SOP class or modality in the JSON.
    assert "modality" not in response.model_dump() and "model_version" not in line.model_dump()


def test_a_refusal_renders_as_an_error_everywhere():
    result = Result(error=BlankImage("Nothing to see."), file="blank.png")
    item, line = result.batch_item(), result.file_line()
    assert isinstance(item, BatchItemError) and item.error.code == line.error.code == "blank_image"
    assert line.label is None
    [(_, outcome)] = result_entries(result, report_id="1" * 32)
    assert outcome.get_resource_type() == "OperationOutcome"
    assert outcome.issue[0].details.coding[0].code == "blank_image"
    (_, report), *_ = result_entries(Result(prediction=PREDICTION, dicom=DICOM), report_id="0" * 32)
    assert report.get_resource_type() == "DiagnosticReport"
    assert report.conclusion.startswith("OUT OF DISTRIBUTION")


def test_a_result_is_a_prediction_or_an_error():
    with pytest.raises(ValueError):
        Result()
    with pytest.raises(ValueError):
        Result(prediction=PREDICTION, error=BlankImage("x"))
    assert Result.of(PREDICTION).ok and not Result.of(BlankImage("x")).ok
