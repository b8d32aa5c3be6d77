"""Grad-CAM, the overlay and the feature-map grids on real X-rays, for both architectures."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from pneumoscan.imaging.preprocess import decode, load_image, plane_to_input, resize_plane
from pneumoscan.model.gradcam import GradCam, feature_maps, grad_cam, overlay, save_feature_map_grids, stage_layers
from pneumoscan.model.predictor import Predictor, load_keras_model
from pneumoscan.settings import BUNDLED_MODEL_DIR
from tests.support import encode


@pytest.fixture(scope="module")
def seed_model(tiny_model_dir):
    """The seed recipe after one epoch on the tiny data set (an untrained CNN can show no evidence)."""
    return load_keras_model(tiny_model_dir)


@pytest.fixture(scope="module")
def tuned_model():
    return load_keras_model(BUNDLED_MODEL_DIR)


@pytest.fixture(scope="module")
def pneumonia_bytes(xray_files) -> bytes:
    return next(p for p in xray_files if p.parent.name == "PNEUMONIA").read_bytes()


@pytest.mark.parametrize(("recipe", "grid"), [("seed", (61, 61)), ("tuned", (8, 8))])
def test_heatmap_covers_the_last_conv_grid_and_is_not_constant(request, recipe, grid, pneumonia_bytes):
    model = request.getfixturevalue(f"{recipe}_model")
    heatmap = grad_cam(model, load_image(pneumonia_bytes))
    assert heatmap.shape == grid and heatmap.dtype == np.float32
    assert heatmap.min() >= 0.0 and heatmap.max() == pytest.approx(1.0)
    assert heatmap.std() > 0.05


def test_grad_cam_probability_is_the_served_probability(tuned_model, xray_files):
    explainer = GradCam(tuned_model)
    predictor = Predictor(tuned_model, threshold=0.5, model_version="test")
    for path in xray_files[:3]:
        model_input = load_image(path.read_bytes())
        probability, _ = explainer(model_input)
        assert probability == pytest.approx(predictor.predict_proba(model_input[np.newaxis])[0], abs=1e-5)


def test_overlay_keeps_the_input_aspect_and_shows_the_heat(tuned_model, xray_files):
    for path in xray_files:
        width, height = Image.open(path).size
        decoded = decode(path.read_bytes()).image
        image = overlay(decoded, grad_cam(tuned_model, plane_to_input(resize_plane(decoded))))
        assert image.mode == "RGB" and 512 <= max(image.size) <= 1024
        assert image.width / image.height == pytest.approx(width / height, rel=0.02)
        pixels = np.asarray(image, dtype=np.int16)
        assert np.abs(pixels[..., 0] - pixels[..., 2]).std() > 1, "no colour: the heatmap is blank"


def test_overlay_limits_large_images_and_leaves_cold_regions_plain(xray_image):
    large = xray_image.resize((1800, 1200))
    decoded = decode(encode(large, "PNG")).image  # PNGs are not downscaled while decoding
    cold = overlay(decoded, np.zeros((8, 8), dtype=np.float32))
    assert cold.size == (1024, 683)
    pixels = np.asarray(cold)
    assert (pixels[..., 0] == pixels[..., 1]).all() and (pixels[..., 1] == pixels[..., 2]).all()


def test_seed_feature_maps_follow_the_course_stages(seed_model, pneumonia_bytes, tmp_path):
    stages = feature_maps(seed_model, load_image(pneumonia_bytes))
    assert [(name, values.shape) for name, values in stages] == [
        ("conv1_relu", (126, 126, 64)),
        ("pool1", (63, 63, 64)),
        ("last_conv_relu", (61, 61, 64)),
        ("pool2", (30, 30, 64)),
        ("flatten", (57600,)),
    ]
    assert all((values >= 0).all() for _, values in stages), "activations are taken after the ReLU"
    written = save_feature_map_grids(stages, tmp_path / "maps")
    assert [path.name for path in written] == [
        "01_conv1_relu.png",
        "02_pool1.png",
        "03_last_conv_relu.png",
        "04_pool2.png",
        "05_flatten.png",
    ]
    for path in written:
        with Image.open(io.BytesIO(path.read_bytes())) as image:
            assert image.format == "PNG" and image.width > 100


def test_tuned_stages_are_taken_after_batch_norm_and_relu():
    from pneumoscan.model.architectures import build_tuned_model

    names = [name for name, _ in stage_layers(build_tuned_model())]
    assert names == [
        "stem_relu",
        "conv1_relu",
        "pool1",
        "conv2_relu",
        "pool2",
        "conv3_relu",
        "pool3",
        "last_conv_relu",
        "global_pool",
    ]


def test_a_model_reading_the_middle_of_the_film_has_its_heatmap_placed_in_the_full_frame(pneumonia_bytes):
    from pneumoscan.model.architectures import ARCHITECTURES, CROP_LAYER
    from pneumoscan.model.gradcam import in_full_frame

    placed = in_full_frame(np.ones((8, 8), dtype=np.float32), ((15, 15), (20, 20)))
    assert placed.shape == (128, 128)
    assert placed[15:113, 20:108].min() == 1.0
    assert placed[:15].max() == placed[113:].max() == placed[:, :20].max() == placed[:, 108:].max() == 0.0

    model = ARCHITECTURES["tuned_central"]()
    (top, bottom), (left, right) = model.get_layer(CROP_LAYER).cropping
    probability, heatmap = GradCam(model)(load_image(pneumonia_bytes))
    assert 0.0 <= probability <= 1.0 and heatmap.shape == (128, 128)
    assert heatmap[:top].max(initial=0.0) == heatmap[128 - bottom :].max(initial=0.0) == 0.0
    assert heatmap[:, :left].max(initial=0.0) == heatmap[:, 128 - right :].max(initial=0.0) == 0.0
