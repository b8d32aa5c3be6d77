"""The real ``pneumoscan explain`` command: the Grad-CAM overlay, the feature-map grids, failures."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from tests.support import SCORE_EVERYTHING, run_cli
from tests.support.explanations import assert_explained


@pytest.fixture(scope="module")
def pneumonia_file(xray_files):
    return next(p for p in xray_files if p.parent.name == "PNEUMONIA")


def test_explain_writes_an_overlay_at_the_input_aspect(pneumonia_file, tmp_path):
    out = tmp_path / "nested" / "overlay.png"
    result = run_cli("explain", str(pneumonia_file), "--out", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    line = json.loads(result.stdout)
    assert line["file"] == str(pneumonia_file) and line["out"] == str(out)
    assert line["label"] == ("PNEUMONIA" if line["probability"] >= line["threshold"] else "NORMAL")
    # The line `predict` prints for the same file, and where the picture went.
    predicted = run_cli("predict", str(pneumonia_file))
    assert predicted.returncode == 0, predicted.stderr[-2000:]
    assert line == {**json.loads(predicted.stdout), "out": str(out)}
    with Image.open(out) as image:
        assert image.format == "PNG"
        pixels = np.asarray(assert_explained(image, Image.open(pneumonia_file).size), dtype=np.int16)
    assert np.abs(pixels[..., 0] - pixels[..., 2]).std() > 1, "the heatmap is blank"


def test_explain_feature_maps_of_the_seed_recipe(tiny_model_dir, pneumonia_file, tmp_path):
    out = tmp_path / "maps"
    result = run_cli(
        "explain",
        str(pneumonia_file),
        "--feature-maps",
        "--out",
        str(out),
        "--model",
        str(tiny_model_dir),
        env=SCORE_EVERYTHING,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    line = json.loads(result.stdout)
    assert line["out"] == str(out / "gradcam.png")
    names = ["01_conv1_relu.png", "02_pool1.png", "03_last_conv_relu.png", "04_pool2.png", "05_flatten.png"]
    assert [p.split("/")[-1] for p in line["feature_maps"]] == names
    assert sorted(p.name for p in out.iterdir()) == sorted([*names, "gradcam.png"])
    for path in out.iterdir():
        with Image.open(path) as image:
            image.verify()


def test_explain_failures_use_the_predict_exit_codes(xray_files, tmp_path):
    broken = tmp_path / "broken.jpeg"
    broken.write_bytes(b"not an x-ray at all")
    result = run_cli("explain", str(broken), "--out", str(tmp_path / "x.png"))
    assert result.returncode == 1, result.stderr[-2000:]
    line = json.loads(result.stdout)
    assert set(line) == {"file", "error"} and line["file"] == str(broken)
    assert line["error"]["code"] == "not_an_image" and line["error"]["detail"]
    assert not (tmp_path / "x.png").exists()
    missing_model = run_cli("explain", str(xray_files[0]), "--out", str(tmp_path / "y.png"), "--model", str(tmp_path))
    assert missing_model.returncode == 3
    assert "model error" in missing_model.stderr
