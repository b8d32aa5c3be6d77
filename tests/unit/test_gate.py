"""The input gate in the core: blank images while decoding, the distance rule, the decision."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from pneumoscan.errors import BlankImage, ColourImage, ImageTooSmall, ModelError, NotAChestXray
from pneumoscan.imaging.gate import GATE_FILE, OodGate
from pneumoscan.imaging.preprocess import load_plane, resize_plane
from pneumoscan.model.decision import Decision, judge_scores
from tests.support import encode
from tests.support.dicom_files import make_dicom
from training.gate.not_xrays import not_xrays

SIDE = 256


def _blank_images() -> dict[str, Image.Image]:
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:SIDE, 0:SIDE]
    return {
        "black": Image.new("L", (SIDE, SIDE), 0),
        "white": Image.new("L", (SIDE, SIDE), 255),
        "mid_grey": Image.new("L", (SIDE, SIDE), 128),
        "faint_noise": Image.fromarray((128 + rng.integers(-2, 3, (SIDE, SIDE))).astype(np.uint8)),
        "checkerboard": Image.fromarray(((((x // 32) + (y // 32)) % 2) * 255).astype(np.uint8)),
        # Four flat grey quadrants, a posterised picture.
        "few_levels": Image.fromarray(((x // 128) * 128 + (y // 128) * 64 + 20).astype(np.uint8)),
        "cartoon": Image.fromarray(np.where(np.hypot(x - 128, y - 128) < 80, 200, 40).astype(np.uint8)),
    }


# Without a window, DICOM display stretches the image's own range to full contrast, so faint noise
# shows as strong noise there: that is the distance gate's case, not the blank check's.
BLANK_CASES = [
    (name, container)
    for name in sorted(_blank_images())
    for container in ("PNG", "JPEG", "DICOM")
    if not (container == "DICOM" and name == "faint_noise")
]


@pytest.mark.parametrize("name, container", BLANK_CASES)
def test_blank_images_are_refused_in_every_format(name, container):
    image = _blank_images()[name]
    data = (
        make_dicom(image)
        if container == "DICOM"
        else encode(image, container, **({"quality": 100, "subsampling": 0} if container == "JPEG" else {}))
    )
    with pytest.raises(BlankImage) as caught:
        load_plane(data)
    assert caught.value.code == "blank_image"


def test_real_xrays_pass_the_blank_check(xray_files, xray_image):
    for path in xray_files:
        load_plane(path.read_bytes())
    # Even a faint, low-contrast copy of an X-ray still has content.
    faint = Image.fromarray((np.asarray(xray_image, dtype=np.float32) * 0.25 + 90).astype(np.uint8))
    load_plane(encode(faint, "PNG"))


@pytest.mark.parametrize(
    "window, rescale",
    [
        ((128.0, 0.0), None),  # window width 0
        ((128.0, -40.0), None),  # negative width
        ((128.0, 0.5), None),  # below the linear function's minimum width of 1
        ((float("nan"), 256.0), None),
        ((128.0, float("inf")), None),
        (None, (float("nan"), 0.0)),  # rescale slope not a number
        (None, (float("inf"), 0.0)),
        (None, (1.0, float("nan"))),
    ],
)
def test_degenerate_dicom_display_transforms_are_refused(xray_image, window, rescale):
    data = make_dicom(xray_image, bits=16, window=window, rescale=(1.0, 0.0) if rescale else None)
    if rescale is not None:
        # Written as given after the pixels are stored, as a broken modality would send it.
        import pydicom

        dataset = pydicom.dcmread(io.BytesIO(data))
        dataset.RescaleSlope, dataset.RescaleIntercept = rescale
        buffer = io.BytesIO()
        dataset.save_as(buffer, enforce_file_format=True)
        data = buffer.getvalue()
    with pytest.raises(BlankImage):
        load_plane(data)


def test_constant_dicom_pixels_are_refused():
    with pytest.raises(BlankImage):
        load_plane(make_dicom(Image.new("L", (SIDE, SIDE), 77), bits=16))


def _with_colour(xray_image: Image.Image, share: float) -> Image.Image:
    """The X-ray in RGB with a saturated red band over ``share`` of its height, as an annotation."""
    rgb = np.asarray(xray_image.convert("RGB")).copy()
    rgb[: round(rgb.shape[0] * share), :] = (220, 30, 30)
    return Image.fromarray(rgb)


@pytest.mark.parametrize("container", ["PNG", "JPEG"])
def test_colour_images_are_refused_while_decoding(xray_image, container):
    photo = next(image for image in not_xrays() if image.name == "retina")
    with pytest.raises(ColourImage) as caught:
        load_plane(encode(Image.open(io.BytesIO(photo.data)).convert("RGB"), container))
    assert caught.value.code == "colour_image" and "in colour" in caught.value.detail
    with pytest.raises(ColourImage):
        load_plane(encode(_with_colour(xray_image, 0.3), container))


@pytest.mark.parametrize("container", ["PNG", "JPEG"])
def test_grey_xrays_in_colour_files_and_small_annotations_pass(xray_image, container):
    grey = load_plane(encode(xray_image, container))
    assert np.array_equal(load_plane(encode(xray_image.convert("RGB"), container)), grey)
    annotated = load_plane(encode(_with_colour(xray_image, 0.1), container))
    assert annotated.shape == (128, 128)

    # A palette image carries its colours in the palette.
    def palette(share: float) -> bytes:
        return encode(_with_colour(xray_image, share).convert("P", palette=Image.Palette.ADAPTIVE), "PNG")

    assert load_plane(palette(0.1)).shape == (128, 128)
    with pytest.raises(ColourImage):
        load_plane(palette(0.3))


def test_a_colour_icon_is_refused_as_too_small():
    with pytest.raises(ImageTooSmall):
        load_plane(encode(Image.new("RGB", (40, 40), (200, 20, 20)), "PNG"))


def test_the_check_sets_colour_images_are_refused_before_the_model():
    refused = set()
    for image in not_xrays():
        try:
            load_plane(image.data)
        except ColourImage:
            refused.add(image.name)
        except BlankImage:
            pass
    assert {"retina", "ihc", "astronaut", "coffee", "cartoon", "colour_noise"} <= refused
    assert not refused & {"camera", "moon", "ct_small", "mr_small", "text_page", "microaneurysms"}


def _gate(tmp_path=None) -> OodGate:
    rng = np.random.default_rng(1)
    features = rng.gamma(2.0, 1.0, size=(500, 6))
    roots = np.sqrt(features)
    precision = np.linalg.inv(np.cov(roots, rowvar=False))
    return OodGate(layers=("a", "b"), mean=roots.mean(axis=0), precision=precision, threshold=4.0)


def test_gate_distance_is_mahalanobis_on_square_roots():
    gate = _gate()
    at_mean = gate.mean**2
    assert gate.distances(at_mean[np.newaxis])[0] == pytest.approx(0.0, abs=1e-9)
    far = at_mean * 25.0
    expected = np.sqrt((np.sqrt(far) - gate.mean) @ gate.precision @ (np.sqrt(far) - gate.mean))
    assert gate.distances(far[np.newaxis])[0] == pytest.approx(expected)
    assert gate.distances(far[np.newaxis])[0] > gate.threshold


def test_gate_file_round_trip_checks_its_hash(tmp_path):
    gate = _gate()
    sha256 = gate.save(tmp_path)
    loaded = OodGate.load(tmp_path, gate.threshold, sha256)
    assert loaded.layers == gate.layers and np.array_equal(loaded.precision, gate.precision)
    with pytest.raises(ModelError):
        OodGate.load(tmp_path, gate.threshold, "0" * 64)
    (tmp_path / GATE_FILE).unlink()
    with pytest.raises(ModelError):
        OodGate.load(tmp_path, gate.threshold, sha256)


def test_decision_refuses_or_flags_beyond_the_limit():
    refuse = Decision(threshold=0.5, model_version="v", ood_threshold=10.0)
    inside = refuse.judge(0.7, 9.0)
    assert inside.label == "PNEUMONIA" and not inside.out_of_distribution
    assert inside.ood_score == pytest.approx(0.9)
    with pytest.raises(NotAChestXray) as caught:
        refuse.judge(0.7, 12.0)
    assert caught.value.code == "not_a_chest_xray" and "1.20x" in caught.value.detail
    flag = Decision(threshold=0.5, model_version="v", ood_threshold=10.0, ood_policy="flag")
    flagged = flag.judge(0.2, 12.0)
    assert flagged.out_of_distribution and flagged.label == "NORMAL" and flagged.ood_score == pytest.approx(1.2)
    no_gate = Decision(threshold=0.5, model_version="v").judge(0.7, None)
    assert no_gate.ood_score is None and not no_gate.out_of_distribution


def test_judge_scores_returns_refusals_in_place():
    decision = Decision(threshold=0.5, model_version="v", ood_threshold=1.0)
    outcomes = judge_scores(decision, np.array([[0.9, 0.5], [0.9, 3.0], [0.1, np.nan]]))
    assert outcomes[0].label == "PNEUMONIA"
    assert isinstance(outcomes[1], NotAChestXray)
    assert outcomes[2].label == "NORMAL" and outcomes[2].ood_score is None


def test_resize_plane_applies_the_blank_check():
    with pytest.raises(BlankImage):
        resize_plane(Image.new("L", (SIDE, SIDE), 0))


def test_the_served_distance_is_the_fitted_one():
    """Predictor computes the distance inside the model graph; it must equal OodGate.distances."""
    from pneumoscan.imaging.gate import with_features
    from pneumoscan.model.architectures import build_seed_model
    from pneumoscan.model.predictor import Predictor

    model = build_seed_model()
    layers = ("conv1", "last_conv")
    batch = np.random.default_rng(2).random((5, 128, 128, 3), dtype=np.float32)
    features = np.asarray(with_features(model, layers)(batch)[1])
    rng = np.random.default_rng(3)
    basis = rng.normal(size=(features.shape[1], features.shape[1]))
    gate = OodGate(
        layers=layers,
        mean=np.sqrt(np.maximum(features, 0)).mean(axis=0),
        precision=basis @ basis.T / features.shape[1] + np.eye(features.shape[1]),
        threshold=3.0,
    )
    scores = Predictor(model, threshold=0.5, model_version="t", gate=gate).score(batch)
    assert np.allclose(scores[:, 1], gate.distances(features), rtol=1e-4)
