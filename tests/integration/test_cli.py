"""The real ``pneumoscan`` command end to end: train -> evaluate -> predict -> register."""

from __future__ import annotations

import json

import pydicom
from PIL import Image

from pneumoscan.model.predictor import load_metadata
from tests.support import SCORE_EVERYTHING, encode, run_cli
from tests.support.dicom_files import make_dicom


def test_train_writes_a_complete_model(tiny_model_dir, tiny_dataset):
    assert (tiny_model_dir / "model.keras").stat().st_size > 1_000_000
    with Image.open(tiny_model_dir / "training_curves.png") as curves:
        assert curves.width > 300
    metadata = load_metadata(tiny_model_dir)
    assert metadata.recipe == "seed"
    assert metadata.epochs_run == 1
    assert metadata.class_names == ["NORMAL", "PNEUMONIA"]
    assert metadata.input_shape == [128, 128, 3]
    assert 0.0 <= metadata.threshold <= 1.0
    assert metadata.train_images + metadata.validation_images == 24
    assert metadata.validation.n == metadata.validation_images
    # The threshold rule, the calibration and the input gate travel with the model.
    assert metadata.threshold_rule and metadata.stressed_validation.n == 2 * metadata.validation_images
    assert metadata.calibration.temperature > 0
    assert metadata.gate.refusals["validation"].refused == 0, "the gate's limit is the farthest validation X-ray"
    assert metadata.gate.layers == ["conv1", "last_conv"]
    assert {"synthetic", "photo", "medical"} <= set(metadata.gate.refusals)
    assert (tiny_model_dir / "gate.npz").is_file()
    for plot in ("reliability.png", "roc.png", "score_histograms.png"):
        with Image.open(tiny_model_dir / plot) as image:
            image.verify()
    assert len(metadata.training_fingerprint) == 64
    assert metadata.version.startswith("seed-")
    assert {"tensorflow", "keras", "python"} <= set(metadata.versions)
    card = (tiny_model_dir / "MODEL_CARD.md").read_text()
    assert "Not for diagnostic use" in card
    assert f"{metadata.threshold:.4f}" in card and metadata.version in card


def test_evaluate_json_is_one_object(tiny_model_dir, tiny_dataset, tmp_path):
    out = tmp_path / "evaluation"
    result = run_cli(
        "evaluate",
        "--model",
        str(tiny_model_dir),
        "--data",
        str(tiny_dataset),
        "--json",
        "--out",
        str(out),
        env=SCORE_EVERYTHING,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout)
    assert set(report) == {"n", "auc", "accuracy", "sensitivity", "specificity", "threshold", "confusion", "refused"}
    assert report["n"] == 24 and report["refused"] == {}
    assert sum(report["confusion"].values()) == 24
    assert report["confusion"]["tp"] + report["confusion"]["fn"] == 12
    assert report["threshold"] == load_metadata(tiny_model_dir).threshold
    for plot in ("roc.png", "confusion.png"):
        with Image.open(out / plot) as image:
            image.verify()


def test_predict_prints_a_line_per_file(tiny_model_dir, xray_files, xray_image, tmp_path):
    broken = tmp_path / "broken.jpeg"
    broken.write_bytes(xray_files[0].read_bytes()[:300])
    (tmp_path / "chest.dcm").write_bytes(make_dicom(xray_image, bits=16))
    (tmp_path / "chest.png").write_bytes(encode(xray_image, "PNG"))
    (tmp_path / "ct.dcm").write_bytes(make_dicom(xray_image, modality="CT"))
    files = [str(p) for p in xray_files[:3]] + [str(broken), str(tmp_path / "missing.png")]
    files += [str(tmp_path / name) for name in ("chest.dcm", "chest.png", "ct.dcm")]
    result = run_cli("predict", "--model", str(tiny_model_dir), *files, env=SCORE_EVERYTHING)
    assert result.returncode == 1
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["file"] for line in lines] == files
    threshold = load_metadata(tiny_model_dir).threshold
    for line in lines[:3]:
        assert set(line) == {"file", "label", "probability", "threshold", "out_of_distribution", "ood_score"}
        assert line["out_of_distribution"] == (line["ood_score"] > 1)
        assert line["label"] == ("PNEUMONIA" if line["probability"] >= threshold else "NORMAL")
        assert line["threshold"] == threshold
    assert lines[3]["error"]["code"] in {"truncated_image", "not_an_image"}
    assert lines[4]["error"]["code"] == "unreadable_file"
    assert lines[5]["probability"] == lines[6]["probability"], "DICOM and PNG of one image agree"
    uids = pydicom.dcmread(tmp_path / "chest.dcm", stop_before_pixels=True)
    assert lines[5]["sop_instance_uid"] == uids.SOPInstanceUID
    assert lines[5]["study_instance_uid"] == uids.StudyInstanceUID
    assert "sop_instance_uid" not in lines[6]
    assert lines[7]["error"]["code"] == "unsupported_modality"


def test_predict_succeeds_when_every_file_does(tiny_model_dir, xray_files):
    result = run_cli("predict", "--model", str(tiny_model_dir), *map(str, xray_files), env=SCORE_EVERYTHING)
    assert result.returncode == 0, result.stderr[-2000:]
    assert len(result.stdout.splitlines()) == len(xray_files)


def test_register_is_idempotent(tiny_model_dir, tmp_path):
    env = {"BENTOML_HOME": str(tmp_path / "bentoml")}
    version = load_metadata(tiny_model_dir).version
    first = run_cli("register", "--model", str(tiny_model_dir), env=env)
    assert first.returncode == 0, first.stderr[-2000:]
    assert first.stdout.strip() == f"Registered pneumonia-cnn:{version}"
    stored = tmp_path / "bentoml" / "models" / "pneumonia-cnn" / version
    assert (stored / "model.keras").read_bytes() == (tiny_model_dir / "model.keras").read_bytes()
    assert (stored / "metadata.json").is_file()
    second = run_cli("register", "--model", str(tiny_model_dir), env=env)
    assert second.returncode == 0
    assert second.stdout.strip() == f"Already registered: pneumonia-cnn:{version}"
    assert len(list(stored.parent.iterdir())) == 2  # the version and the "latest" pointer


def test_usage_errors_exit_cleanly(tmp_path):
    result = run_cli("train", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    assert "does not exist" in result.stderr
    assert "Traceback" not in result.stderr
    result = run_cli("register", "--model", str(tmp_path))
    assert result.returncode == 3
    assert "metadata.json" in result.stderr


def test_ndjson_results_need_a_folder(tmp_path):
    result = run_cli("results", "0123456789abcdef", "--format", "ndjson", env={"PNEUMOSCAN_JOBS_DIR": str(tmp_path)})
    assert result.returncode == 2 and not result.stdout
    assert "--format ndjson" in result.stderr and "--out DIR" in result.stderr and "Traceback" not in result.stderr


def test_predict_refuses_a_body_part_only_on_evidence(xray_image, tmp_path):
    """A chest DX that does not say which body part it shows is scored (the bundled model's input
    gate judges its pixels); one that says SKULL is refused before any pixel is decoded."""
    unlabelled, skull = tmp_path / "unlabelled.dcm", tmp_path / "skull.dcm"
    unlabelled.write_bytes(make_dicom(xray_image, modality="DX", body_part=None))
    skull.write_bytes(make_dicom(xray_image, modality="DX", body_part="SKULL"))
    result = run_cli("predict", str(unlabelled), str(skull))
    assert result.returncode == 1, result.stderr[-2000:]
    scored, refused = (json.loads(line) for line in result.stdout.splitlines())
    assert "error" not in scored and scored["label"] in {"NORMAL", "PNEUMONIA"}
    assert not scored["out_of_distribution"]
    assert refused["error"]["code"] == "unsupported_body_part" and "SKULL" in refused["error"]["detail"]


def _tiny_training(tiny_dataset) -> list[str]:
    """``train`` arguments for one epoch per model on the tiny set."""
    return ["--data", str(tiny_dataset), "--epochs", "1", "--validation-fraction", "0.34"]


def _train(args: list[str], out, recipe: str):
    """The metadata of a recipe trained by the real ``train`` command into ``out``."""
    result = run_cli("train", *args, "--out", str(out), "--recipe", recipe)
    assert result.returncode == 0, result.stderr[-3000:]
    return load_metadata(out)


def test_an_ensemble_recipe_trains_its_members_and_folds_them_into_one_model(tiny_dataset, tmp_path):
    import numpy as np

    from pneumoscan.model.predictor import Predictor

    out = tmp_path / "ensemble"
    args = _tiny_training(tiny_dataset)
    metadata = _train(args, out, "framed-ensemble")
    assert metadata.recipe == "framed-ensemble" and metadata.seed == 42
    assert [(m["seed"], m["epochs_run"]) for m in metadata.members] == [(42, 1), (7, 1), (11, 1)]
    assert metadata.epochs_run == 3
    assert [layer.split("_")[0] for layer in metadata.gate.layers[:3]] == ["m1", "m2", "m3"]
    card = (out / "MODEL_CARD.md").read_text()
    assert "An ensemble of 3 models" in card and "seed 11: 1 epochs" in card
    predictor = Predictor.from_dir(out)
    assert predictor.heatmap(np.full((128, 128, 3), 0.5, dtype=np.float32)).shape == (8, 8)

    # Members trained apart, on the same split, fold into the same kind of model; others are refused.
    refused = run_cli(
        "train", *args, "--out", str(tmp_path / "no"), "--recipe", "framed-ensemble", "--members", str(out)
    )
    assert refused.returncode != 0 and "folds" in refused.stderr


def test_a_distilled_recipe_saves_one_model_taught_by_its_members(tiny_dataset, tmp_path):
    out = tmp_path / "distilled"
    metadata = _train(_tiny_training(tiny_dataset), out, "framed-swap-distilled")
    assert [(m["seed"], m["epochs_run"]) for m in metadata.members] == [(42, 1), (7, 1), (11, 1)]
    assert metadata.epochs_run == 1, "the student's own epochs"
    assert not any(layer.startswith("m1_") for layer in metadata.gate.layers), "one network, not the folded three"
    card = (out / "MODEL_CARD.md").read_text()
    assert "One model taught by an ensemble of 3 models" in card and "Border swap: 50%" in card
