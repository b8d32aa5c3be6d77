"""The explanation picture's legend and its headers, rendered from one ``Result``."""

from __future__ import annotations

import numpy as np
import pytest

from pneumoscan.errors import NotAnImage
from pneumoscan.imaging.preprocess import decode
from pneumoscan.model.gradcam import overlay
from pneumoscan.model.legend import HEADERS, explained, explanation_headers, legend_panel
from pneumoscan.result import Result
from pneumoscan.schemas import Prediction
from tests.support import encode
from tests.support.explanations import assert_explained, colour_bar_rows

HEATMAP = np.zeros((8, 8), dtype=np.float32)
HEATMAP[2:5, 1:4] = 1.0


def prediction(label: str = "PNEUMONIA", **fields) -> Prediction:
    values = {"probability": 0.91 if label == "PNEUMONIA" else 0.12, "threshold": 0.6659, "ood_score": 0.4} | fields
    return Prediction(label=label, model_version="tuned-1-abc", **values)


def result(label: str = "PNEUMONIA", **fields) -> Result:
    return Result(prediction=prediction(label, **fields), file="x.jpeg")


@pytest.mark.parametrize("size", [(900, 700), (300, 640), (1800, 1200)])
def test_the_map_is_unchanged_on_top_of_banner_and_legend(xray_image, size):
    image = decode(encode(xray_image.resize(size), "PNG")).image
    picture = explained(image, HEATMAP, result())
    map_region = assert_explained(picture, size)
    assert np.array_equal(np.asarray(map_region), np.asarray(overlay(image, HEATMAP)))


def test_a_normal_result_says_what_the_map_shows_and_a_flag_is_shown():
    width = 640
    pneumonia = legend_panel(width, prediction())
    normal = legend_panel(width, prediction("NORMAL"))
    flagged = legend_panel(width, prediction("NORMAL", out_of_distribution=True, ood_score=1.3))
    empty = legend_panel(width, prediction("NORMAL"), empty_map=True)
    # The NORMAL legend carries the sentence that the map is evidence for pneumonia, not for NORMAL.
    assert pneumonia.height < normal.height < flagged.height and normal.height < empty.height
    warning = np.asarray(flagged)
    assert ((warning[..., 0] > 200) & (warning[..., 1] < 150)).any(), "the out-of-distribution line is red"
    assert colour_bar_rows(np.asarray(pneumonia)) and colour_bar_rows(np.asarray(normal))
    for panel in (pneumonia, normal):
        assert panel.width == width


def test_headers_carry_the_json_result_field_for_field():
    flagged = result(out_of_distribution=True, ood_score=1.25)
    headers = explanation_headers(flagged)
    assert list(headers) == [header for header, _ in HEADERS.values()]
    body = flagged.response("request").model_dump()
    parsed = {
        "label": headers["X-Pneumoscan-Label"],
        "probability": float(headers["X-Pneumoscan-Probability"]),
        "threshold": float(headers["X-Pneumoscan-Threshold"]),
        "model_version": headers["X-Pneumoscan-Model-Version"],
        "out_of_distribution": headers["X-Pneumoscan-Out-Of-Distribution"] == "true",
        "ood_score": float(headers["X-Pneumoscan-Ood-Score"]),
    }
    assert parsed == {field: body[field] for field in HEADERS}
    assert "X-Pneumoscan-Ood-Score" not in explanation_headers(result(ood_score=None))
    assert explanation_headers(result())["X-Pneumoscan-Out-Of-Distribution"] == "false"


def test_a_refusal_has_no_explanation(xray_image):
    refused = Result(error=NotAnImage("not an image"), file="x.jpeg")
    with pytest.raises(ValueError):
        explanation_headers(refused)
    with pytest.raises(ValueError):
        explained(xray_image, HEATMAP, refused)
