"""The batch job summary plot: its bars and histogram are drawn from the results it is given."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from pneumoscan.errors import error_from_code
from pneumoscan.jobs.plot import ERROR_COLOUR, NORMAL_COLOUR, PNEUMONIA_COLOUR, summary_png
from pneumoscan.result import Result
from pneumoscan.schemas import Prediction


def row(probability: float | None, threshold: float = 0.6, error: str = "") -> Result:
    if probability is None:
        return Result(error=error_from_code(error, "Refused."), file="x.png")
    label = "PNEUMONIA" if probability >= threshold else "NORMAL"
    prediction = Prediction(label=label, probability=probability, threshold=threshold, model_version="tuned-1")
    return Result(prediction=prediction, file="x.png")


def pixel_counts(png: bytes) -> dict[tuple[int, int, int], int]:
    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).reshape(-1, 3)
    colours, counts = np.unique(pixels, axis=0, return_counts=True)
    return {tuple(int(v) for v in colour): int(count) for colour, count in zip(colours, counts, strict=False)}


def rgb(hex_colour: str) -> tuple[int, int, int]:
    return tuple(int(hex_colour[i : i + 2], 16) for i in (1, 3, 5))


@pytest.mark.parametrize(
    ("rows", "drawn", "absent"),
    [
        (
            [row(0.1), row(0.2), row(0.9), row(None, error="empty_image")],
            {NORMAL_COLOUR, PNEUMONIA_COLOUR, ERROR_COLOUR},
            set(),
        ),
        ([row(0.1), row(0.3)], {NORMAL_COLOUR}, {PNEUMONIA_COLOUR, ERROR_COLOUR}),
        ([row(None, error="not_an_image")], {ERROR_COLOUR}, {NORMAL_COLOUR, PNEUMONIA_COLOUR}),
        ([], set(), {NORMAL_COLOUR, PNEUMONIA_COLOUR, ERROR_COLOUR}),
    ],
)
def test_plot_draws_what_the_rows_hold(rows, drawn, absent):
    labels: dict[str, int] = {}
    errors: dict[str, int] = {}
    for item in rows:
        if item.prediction is not None:
            labels[item.prediction.label] = labels.get(item.prediction.label, 0) + 1
        else:
            errors[item.error.code] = errors.get(item.error.code, 0) + 1
    summary = {
        "job_id": "0123456789abcdef",
        "model_version": "tuned-1",
        "total": len(rows),
        "labels": labels,
        "error_codes": errors,
        "images_per_second": 12.5,
    }
    counts = pixel_counts(summary_png(rows, summary))
    # A bar covers hundreds of pixels of its exact colour; nothing else is drawn in these colours.
    assert all(counts.get(rgb(colour), 0) > 300 for colour in drawn), {c: counts.get(rgb(c)) for c in drawn}
    assert all(rgb(colour) not in counts for colour in absent)
