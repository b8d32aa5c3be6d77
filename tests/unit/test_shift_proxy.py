"""The shift-proxy harness: the held-out view, Wilson intervals, and a measurement of a real
(tiny) model on a folder with a held-out series."""

from __future__ import annotations

import os

import pytest

from pneumoscan.model.predictor import load_metadata, save_metadata
from training.data import find_examples
from training.model_card import render_model_card
from training.shift_proxy import held_out, measure, proxy_view, wilson


@pytest.fixture(scope="module")
def series_dataset(tmp_path_factory, tiny_dataset):
    """The tiny dataset with its first four normal studies renamed into a NORMAL2- series."""
    root = tmp_path_factory.mktemp("series-data")
    normals = 0
    for example in find_examples(tiny_dataset):
        name = example.path.name
        if example.label == 0 and normals < 4:
            name, normals = f"NORMAL2-{name}", normals + 1
        target = root / example.path.parent.name / name
        target.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(example.path, target)
    return root


def test_held_out_series_by_name():
    assert held_out("NORMAL2-IM-0402-0001.jpeg") and held_out("normal2-im-1-1.jpeg")
    assert not held_out("IM-0115-0001.jpeg") and not held_out("person1_bacteria_1.jpeg")


def test_proxy_view_leaves_the_series_out(series_dataset, tmp_path):
    view = proxy_view(series_dataset, tmp_path / "view")
    names = [example.path.name for example in find_examples(view)]
    assert len(names) == len(find_examples(series_dataset)) - 4
    assert not any(held_out(name) for name in names)
    proxy_view(series_dataset, tmp_path / "view")  # a second call reuses the links


def test_wilson_interval():
    estimate = wilson(93, 100)
    assert estimate["value"] == pytest.approx(0.93)
    low, high = estimate["ci"]
    assert low == pytest.approx(0.8626, abs=1e-3) and high == pytest.approx(0.9657, abs=1e-3)
    assert wilson(0, 0)["value"] is None


def test_measure_a_model_and_render_the_card(tiny_model_dir, series_dataset, tmp_path):
    figures = measure(tiny_model_dir, series_dataset, series_dataset, grad_cam_images=2, threshold_rule="youden")
    saved = figures["saved_threshold"]
    assert saved["threshold"] == figures["threshold_rules"]["youden"]["threshold"]
    assert saved["specificity_held_out_series"]["n"] == 4
    assert saved["sensitivity_validation"]["n"] > 0
    assert set(figures["threshold_rules"]) == {"youden", "sensitivity:0.93", "sensitivity:0.95", "sensitivity:0.97"}
    cam = figures["grad_cam"]["held_out_series"]
    assert cam["n"] == 2 and 0.0 <= cam["central_share"] <= 1.0
    assert figures["fullres"]["sensitivity"]["n"] == 12

    proxy = {**figures, "variants": {"other": figures}}
    metadata = load_metadata(tiny_model_dir).model_copy(update={"shift_proxy": proxy})
    save_metadata(tmp_path, metadata)
    card = render_model_card(load_metadata(tmp_path))
    assert "## Shift proxy" in card and "| other |" in card and "peaks in the border" in card
