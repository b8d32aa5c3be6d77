"""The committed model: complete, small enough, documented, and it runs through the CLI."""

from __future__ import annotations

import json

import pydicom
from PIL import Image

from pneumoscan.imaging.gate import GATE_FILE
from pneumoscan.model.architectures import build_tuned_model
from pneumoscan.model.predictor import MODEL_FILE, load_keras_model, load_metadata
from pneumoscan.settings import BUNDLED_MODEL_DIR
from tests.support import grey_photo, make_tiny_dataset, run_cli
from training.gate.not_xrays import not_xrays


def test_bundled_model_files():
    metadata = load_metadata(BUNDLED_MODEL_DIR)
    assert (BUNDLED_MODEL_DIR / MODEL_FILE).stat().st_size <= 16 * 1024 * 1024
    assert metadata.recipe == "framed-swap-distilled" and [m["seed"] for m in metadata.members] == [42, 7, 11]
    assert metadata.train_images + metadata.validation_images == 5216
    assert metadata.threshold_rule and metadata.calibration is not None
    gate = metadata.gate
    assert gate is not None and (BUNDLED_MODEL_DIR / GATE_FILE).is_file()
    assert gate.refusals["validation"].rate <= 0.01, "at most 1% of validation X-rays refused"
    for kind in ("synthetic", "photo", "medical"):
        assert gate.refusals[kind].refused == gate.refusals[kind].n, f"every {kind} image refused"
    card = (BUNDLED_MODEL_DIR / "MODEL_CARD.md").read_text()
    assert "Not for diagnostic use" in card and metadata.version in card
    assert f"{gate.threshold:.2f}" in card and f"{metadata.threshold:.4f}" in card
    for plot in ("training_curves.png", "reliability.png", "roc.png", "score_histograms.png"):
        assert (BUNDLED_MODEL_DIR / plot).is_file()


def test_bundled_model_is_one_tuned_network():
    """Distilled from three members: the ensemble's teaching at one network's cost."""
    model = load_keras_model(BUNDLED_MODEL_DIR)
    reference = build_tuned_model()
    assert sorted(layer.name for layer in model.layers) == sorted(layer.name for layer in reference.layers)
    assert model.count_params() == reference.count_params()


def test_bundled_model_predicts_the_fixtures(xray_files):
    result = run_cli("predict", *map(str, xray_files))
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    by_class = {"NORMAL": [], "PNEUMONIA": []}
    for path, line in zip(xray_files, lines, strict=False):
        assert 0.0 <= line["probability"] <= 1.0
        by_class[path.parent.name].append(line["probability"])
    assert min(by_class["PNEUMONIA"]) > 0.5, "every pneumonia fixture should score high"


def _write_not_xrays(folder) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for image in not_xrays():
        suffix = ".jpeg" if image.data[:3] == b"\xff\xd8\xff" else ".png"
        path = folder / f"{image.kind}-{image.name}{suffix}"
        path.write_bytes(image.data)
        paths.append(str(path))
    return paths


def test_predict_refuses_every_non_xray_and_scores_every_xray(tmp_path, xray_files):
    non_xrays = _write_not_xrays(tmp_path / "not-xrays")
    result = run_cli("predict", *map(str, xray_files), *non_xrays)
    assert result.returncode == 1, "a refused file makes predict exit 1"
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(lines) == len(xray_files) + len(non_xrays)
    for line in lines[: len(xray_files)]:
        assert "error" not in line and line["ood_score"] < 1.0, line
    for line in lines[len(xray_files) :]:
        assert line.get("error", {}).get("code") in {"blank_image", "colour_image", "not_a_chest_xray"}, line
        assert "label" not in line


def test_flag_policy_scores_but_marks_non_xrays(tmp_path, xray_files):
    blank = next(image for image in not_xrays() if image.name == "white")
    colour = next(image for image in not_xrays() if image.name == "coffee")
    (tmp_path / "coffee-grey.png").write_bytes(grey_photo("coffee"))
    (tmp_path / "white.png").write_bytes(blank.data)
    (tmp_path / "coffee.png").write_bytes(colour.data)
    files = [xray_files[0], *(tmp_path / name for name in ("coffee-grey.png", "white.png", "coffee.png"))]
    result = run_cli("predict", *map(str, files), env={"PNEUMOSCAN_OOD_POLICY": "flag"})
    xray, coffee, white, in_colour = [json.loads(line) for line in result.stdout.splitlines()]
    assert xray["out_of_distribution"] is False
    assert coffee["out_of_distribution"] is True and coffee["ood_score"] > 1.0 and coffee["label"]
    assert white["error"]["code"] == "blank_image", "a blank image has nothing to flag a label on"
    assert in_colour["error"]["code"] == "colour_image", "nor has a colour photograph"


def test_a_ct_slice_sent_as_a_radiograph_is_refused(tmp_path):
    from pydicom.data import get_testdata_file

    dataset = pydicom.dcmread(get_testdata_file("CT_small.dcm", download=False))
    dataset.Modality, dataset.BodyPartExamined = "DX", "CHEST"
    dataset.save_as(tmp_path / "ct-as-dx.dcm", enforce_file_format=True)
    result = run_cli("predict", str(tmp_path / "ct-as-dx.dcm"))
    assert json.loads(result.stdout)["error"]["code"] == "not_a_chest_xray"


def test_evaluate_counts_refusals_apart_from_the_metrics(tmp_path):
    data = make_tiny_dataset(tmp_path / "data", copies=1)
    (data / "NORMAL" / "astronaut.png").write_bytes(grey_photo("astronaut"))
    Image.new("L", (256, 256), 0).save(data / "PNEUMONIA" / "black.png")
    result = run_cli("evaluate", "--model", str(BUNDLED_MODEL_DIR), "--data", str(data), "--json")
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout)
    assert report["refused"] == {"blank_image": 1, "not_a_chest_xray": 1}
    assert report["n"] == 8 and sum(report["confusion"].values()) == 8
