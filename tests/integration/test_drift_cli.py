"""``pneumoscan drift`` end to end through the real CLI and the bundled model's weights.

The fixture X-rays are full-size originals, not the 224-pixel training images the bundled
reference was made from, so the always-run tests give a copy of the bundled model a reference
made from the fixtures (shifted copies, as the reference folder) and compare other shifted copies
with it. The bundled ``drift_reference.json`` itself is checked against the 60 training images in
``tests/fixtures/training_sample``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pneumoscan.settings import BUNDLED_MODEL_DIR
from tests.support import REPO_ROOT, run_cli, xray_paths

# Evenly spaced training images of each class (18 NORMAL, 42 PNEUMONIA), in the validation split's mix.
TRAINING_SAMPLE = REPO_ROOT / "tests" / "fixtures" / "training_sample"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def alter(plane: np.ndarray, rng: np.random.Generator, darker: float, noise: float) -> np.ndarray:
    """The plane darker by ``darker`` (a share of its brightness) with Gaussian noise of ``noise`` grey levels."""
    return np.clip(plane.astype(np.float64) * (1 - darker) + rng.normal(0, noise, plane.shape), 0, 255).astype(np.uint8)


def fixture_copies(root: Path, offsets: range, darker: float = 0.0, noise: float = 0.0) -> Path:
    """Each fixture X-ray at 320 pixels, shifted sideways by each offset, optionally altered."""
    rng = np.random.default_rng(1)
    for number, source in enumerate(xray_paths()):
        image = Image.open(source).convert("L")
        image.thumbnail((320, 320))
        for offset in offsets:
            plane = alter(np.roll(np.asarray(image), offset, axis=1), rng, darker, noise)
            target = root / source.parent.name / f"{number}-{offset}.jpeg"
            target.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(plane).save(target, quality=90)
    return root


@pytest.fixture(scope="module")
def fixture_model(tmp_path_factory) -> Path:
    """The bundled model's files with a reference made from 96 shifted fixture copies."""
    from pneumoscan.model.predictor import Predictor
    from pneumoscan.monitoring.drift import build_reference, save_reference
    from training.drift.reference import score_sample

    model = tmp_path_factory.mktemp("drift-model")
    for name in ("model.keras", "gate.npz", "metadata.json"):
        shutil.copy2(BUNDLED_MODEL_DIR / name, model / name)
    reference_folder = fixture_copies(tmp_path_factory.mktemp("drift-reference"), range(-24, 24, 4))
    predictor = Predictor.from_dir(model)
    sample = score_sample(predictor, sorted(reference_folder.rglob("*.jpeg")))
    save_reference(model, build_reference(sample, predictor.model_version, "shifted fixture X-rays"))
    return model


def drift_json(*args: str, env: dict[str, str] | None = None) -> dict:
    result = run_cli("drift", *args, "--json", env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)


def assert_statistics(report: dict) -> None:
    for name in ("probability", "ood"):
        shift = report["comparison"][name]
        assert shift is not None, name
        assert shift["psi"] >= 0 and 0 <= shift["ks"] <= 1 and 0 <= shift["ks_p_value"] <= 1, shift
        assert sum(shift["counts"]) == shift["n"] and len(shift["counts"]) == len(shift["buckets"]) + 1
    thresholds = report["comparison"]["thresholds"]
    assert (thresholds["psi_watch"], thresholds["psi_revalidate"]) == (0.1, 0.25)


def test_same_kind_of_xrays_is_stable_and_writes_the_report(tmp_path, fixture_model):
    folder = fixture_copies(tmp_path / "same", range(-22, 22, 5))
    out = tmp_path / "report"
    report = drift_json("--model", str(fixture_model), "--data", str(folder), "--out", str(out))
    assert report["verdict"] == "stable", report["comparison"]["reasons"]
    assert report["n"] == 72 and report["comparison"]["refusal_rate"]["successes"] == 0
    assert_statistics(report)
    assert report == json.loads((out / "report.json").read_text())
    assert (out / "drift.png").read_bytes()[:8] == PNG_MAGIC
    summary = run_cli("drift", "--model", str(fixture_model), "--data", str(folder))
    assert summary.returncode == 0 and "verdict: STABLE" in summary.stdout


def test_darker_noisier_copies_are_not_stable_from_a_folder_or_a_job(tmp_path, fixture_model):
    folder = fixture_copies(tmp_path / "dark", range(-22, 22, 5), darker=0.4, noise=15.0)
    report = drift_json("--model", str(fixture_model), "--data", str(folder))
    assert report["verdict"] in ("watch", "re-validate")
    assert report["comparison"]["reasons"]
    assert_statistics(report)

    env = {"PNEUMOSCAN_DATA_DIR": str(tmp_path / "var"), "PNEUMOSCAN_MODEL_DIR": str(fixture_model)}
    scored = run_cli("score", str(folder), "--output", str(tmp_path / "var" / "jobs"), env=env)
    assert scored.returncode == 0, scored.stderr[-3000:]
    job_id = scored.stdout.split(":")[0].strip()
    from_job = drift_json("--model", str(fixture_model), "--job", job_id, env=env)
    assert from_job["verdict"] in ("watch", "re-validate") and from_job["n"] == 72
    assert_statistics(from_job)  # results.csv carries the gate distance: both distributions are compared
    assert from_job["comparison"]["ood"]["n"] == report["comparison"]["ood"]["n"]


def test_a_model_without_a_reference_says_how_to_make_one(tmp_path, xray_files):
    model = tmp_path / "model"
    model.mkdir()
    shutil.copy2(BUNDLED_MODEL_DIR / "metadata.json", model / "metadata.json")
    result = run_cli("drift", "--model", str(model), "--data", str(xray_files[0].parent))
    assert result.returncode == 3
    assert "drift_reference.json" in result.stderr and "training.drift.reference" in result.stderr


def test_the_bundled_reference_on_training_images(tmp_path):
    folder = TRAINING_SAMPLE
    report = drift_json("--model", str(BUNDLED_MODEL_DIR), "--data", str(folder))
    assert report["verdict"] == "stable", report["comparison"]["reasons"]
    assert report["reference"]["n"] == 783
    rng = np.random.default_rng(2)
    altered = tmp_path / "altered"
    for path in folder.rglob("*.jpeg"):
        target = altered / path.relative_to(folder)
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(alter(np.asarray(Image.open(path).convert("L")), rng, 0.4, 12.0)).save(target, quality=90)
    report = drift_json("--model", str(BUNDLED_MODEL_DIR), "--data", str(altered))
    assert report["verdict"] in ("watch", "re-validate"), report["comparison"]


def test_train_writes_the_validation_reference(tiny_model_dir):
    from pneumoscan.model.predictor import load_metadata
    from pneumoscan.monitoring.drift import load_reference

    metadata, reference = load_metadata(tiny_model_dir), load_reference(tiny_model_dir)
    assert reference is not None and reference.model_version == metadata.version
    assert reference.n == metadata.validation_images
    assert sum(reference.probability_counts) + sum(reference.refusal_counts.values()) == reference.n
    assert reference.label_counts["PNEUMONIA"] == metadata.validation.confusion.tp + metadata.validation.confusion.fp


def test_calibrate_writes_the_sites_reference(site_model_dir):
    from pneumoscan.model.predictor import load_metadata
    from pneumoscan.monitoring.drift import load_reference

    metadata, reference = load_metadata(site_model_dir), load_reference(site_model_dir)
    assert reference is not None and reference.model_version == metadata.version
    assert reference.n == 57 and reference.refusal_counts == {"not_a_chest_xray": 1}  # the photograph
    assert sum(reference.probability_counts) == sum(reference.ood_counts) == 56
    assert "calibration sample" in reference.source
