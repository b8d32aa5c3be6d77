"""``pneumoscan validate`` and ``calibrate`` end to end through the real CLI, and the worker
scoring with the version the BentoML store's tag names."""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import pytest

from pneumoscan.model.predictor import load_metadata
from pneumoscan.settings import BUNDLED_MODEL_DIR
from tests.support import grey_photo, make_tiny_dataset, run_cli
from training.gate.not_xrays import not_xrays


def _within(value: float, interval: list[float]) -> bool:
    return interval[0] - 1e-12 <= value <= interval[1] + 1e-12


def test_validate_writes_both_reports_with_intervals(tmp_path, site_dataset):
    out = tmp_path / "report"
    result = run_cli(
        "validate", "--model", str(BUNDLED_MODEL_DIR), "--data", str(site_dataset), "--out", str(out), "--json"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    assert report == json.loads((out / "report.json").read_text())
    assert report["n"] == {"NORMAL": 28, "PNEUMONIA": 28}
    assert report["refused"] == {"not_a_chest_xray": 1}
    assert report["refused_files"][0]["file"] == "NORMAL/astronaut.png"
    assert report["bootstrap"]["resamples"] >= 2000
    assert _within(report["auc"], report["auc_ci"])
    at = report["at_threshold"]
    assert at["threshold"] == load_metadata(BUNDLED_MODEL_DIR).threshold
    confusion = at["confusion"]
    assert sum(confusion.values()) == 56
    for name in ("sensitivity", "specificity", "ppv", "npv"):
        assert _within(at[name]["value"], at[name]["ci"]), name
    assert at["sensitivity"]["n"] == confusion["tp"] + confusion["fn"] == 28
    assert 0.0 <= report["calibration"]["ece"] <= 1.0
    assert sum(b["n"] for b in report["calibration"]["bins"]) == 56
    rules = [point["rule"] for point in report["operating_points"]]
    assert rules == ["youden", "sensitivity:0.95", "specificity:0.9"]
    for point in report["operating_points"]:
        assert point["reachable"] and point["folds"] == 5
        assert point["out_of_sample_sensitivity"]["n"] == 28 and point["out_of_sample_specificity"]["n"] == 28
    gradcam = report["gradcam"]
    assert 0.0 <= gradcam["central_share_mean"] <= 1.0 and _within(
        gradcam["central_share_mean"], gradcam["central_share_ci"]
    )
    for plot in ("roc.png", "reliability.png", "scores.png"):
        assert (out / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", plot
    html = (out / "report.html").read_text()
    assert "Not for diagnostic use" in html and report["model"]["version"] in html
    assert html.count("data:image/png;base64,") == 3
    # Self-contained: nothing loaded from anywhere, no script.
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html) and "<script" not in html
    assert "NORMAL/astronaut.png" in html and "Sign-off" in html


def test_validate_takes_a_reviewers_labels_csv(tmp_path):
    data = make_tiny_dataset(tmp_path / "flat-source", copies=1)
    flat = tmp_path / "flat"
    flat.mkdir()
    rows = []
    for path in sorted(data.rglob("*.jpeg")):
        shutil.copyfile(path, flat / path.name)
        rows.append({"file": path.name, "label": path.parent.name})
    with (tmp_path / "labels.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["file", "label"])
        writer.writeheader()
        writer.writerows(rows)
    result = run_cli(
        "validate",
        "--model",
        str(BUNDLED_MODEL_DIR),
        "--data",
        str(flat),
        "--labels",
        str(tmp_path / "labels.csv"),
        "--out",
        str(tmp_path / "out"),
        "--no-gradcam",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "NORMAL 4, PNEUMONIA 4" in result.stdout and "report.html" in result.stdout
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["gradcam"] is None and report["data"]["labels_csv"].endswith("labels.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("file,label\nnope.jpeg,NORMAL\n")
    refused = run_cli(
        "validate",
        "--model",
        str(BUNDLED_MODEL_DIR),
        "--data",
        str(flat),
        "--labels",
        str(bad),
        "--out",
        str(tmp_path / "out2"),
    )
    assert refused.returncode == 2 and "line 2: nope.jpeg does not exist" in refused.stderr
    assert not (tmp_path / "out2").exists()


def test_calibrate_writes_a_new_version_at_the_sites_threshold(tmp_path, site_model_dir, site_dataset):
    parent, calibrated = load_metadata(BUNDLED_MODEL_DIR), load_metadata(site_model_dir)
    site = calibrated.site
    match = re.fullmatch(r"(?P<base>.+)-site-\d{12}-[0-9a-f]{6}", calibrated.version)
    # Too long a version loses the parent's training minute first: the recipe and its hash stay.
    assert match and match["base"] in (parent.version, re.sub(r"-\d{12}-", "-", parent.version))
    assert site.parent_version == parent.version and site.rule == "youden"
    assert calibrated.threshold == site.threshold and site.previous_threshold == parent.threshold
    assert site.n == {"NORMAL": 28, "PNEUMONIA": 28} and site.refused == {"not_a_chest_xray": 1}
    assert site.folds == 5 and site.sensitivity.n == 28 and site.specificity.n == 28
    assert _within(site.sensitivity.value, site.sensitivity.ci) and len(site.data_fingerprint) == 64
    assert not site.temperature_refitted, "under 50 X-rays of a class: the temperature is kept"
    assert calibrated.calibration.temperature == parent.calibration.temperature
    assert (site_model_dir / "model.keras").read_bytes() == (BUNDLED_MODEL_DIR / "model.keras").read_bytes()
    card = (site_model_dir / "MODEL_CARD.md").read_text()
    assert card.startswith(f"# Model card: pneumonia-cnn {calibrated.version}")
    assert "## Site calibration" in card and f"{site.threshold:.4f}" in card and "Not for diagnostic use" in card
    # The new version scores at its own threshold and names itself.
    evaluated = run_cli("evaluate", "--model", str(site_model_dir), "--data", str(site_dataset), "--json")
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert json.loads(evaluated.stdout)["threshold"] == site.threshold
    predicted = run_cli("predict", "--model", str(site_model_dir), str(next(site_dataset.glob("PNEUMONIA/*"))))
    assert json.loads(predicted.stdout)["threshold"] == site.threshold


def test_calibrate_refuses_a_small_sample_and_writes_nothing(tmp_path):
    data = make_tiny_dataset(tmp_path / "small", copies=2)  # 8 of each class
    out = tmp_path / "new-model"
    result = run_cli(
        "calibrate", "--model", str(BUNDLED_MODEL_DIR), "--data", str(data), "--rule", "youden", "--out", str(out)
    )
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Add 17 more NORMAL and 17 more PNEUMONIA" in result.stderr and "Nothing was written" in result.stderr
    assert not out.exists() and list(tmp_path.iterdir()) == [tmp_path / "small"]


def test_calibrate_never_overwrites_a_model_folder(tmp_path, site_dataset):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "metadata.json").write_text("{}")
    result = run_cli(
        "calibrate",
        "--model",
        str(BUNDLED_MODEL_DIR),
        "--data",
        str(site_dataset),
        "--rule",
        "sensitivity:0.9",
        "--out",
        str(out),
    )
    assert result.returncode == 2 and "already exists" in result.stderr
    assert (out / "metadata.json").read_text() == "{}"
    bad_rule = run_cli(
        "calibrate",
        "--model",
        str(BUNDLED_MODEL_DIR),
        "--data",
        str(site_dataset),
        "--rule",
        "accuracy",
        "--out",
        str(tmp_path / "other"),
    )
    assert bad_rule.returncode == 2 and "Unknown rule" in bad_rule.stderr


def test_the_worker_scores_with_the_registered_calibrated_version(tmp_path, site_model_dir, xray_files):
    env = {"BENTOML_HOME": str(tmp_path / "bentoml"), "PNEUMOSCAN_DATA_DIR": str(tmp_path / "var")}
    for folder in (BUNDLED_MODEL_DIR, site_model_dir):
        registered = run_cli("register", str(folder), env=env)
        assert registered.returncode == 0, registered.stderr[-3000:]
    version = load_metadata(site_model_dir).version
    assert f"pneumonia-cnn:{version}" in registered.stdout
    inputs = tmp_path / "input"
    inputs.mkdir()
    shutil.copyfile(xray_files[0], inputs / xray_files[0].name)
    job_id = run_cli("submit", str(inputs), env=env).stdout.strip()
    worker = run_cli("worker", "--burst", env=env)
    assert worker.returncode == 0 and "pneumonia-cnn:latest in the BentoML store" in worker.stderr
    status = json.loads(run_cli("status", job_id, "--json", env=env).stdout)
    assert status["state"] == "done", status
    with (Path(status["output"]) / "results.csv").open(newline="") as handle:
        row = next(csv.DictReader(handle))
    assert row["model_version"] == version and float(row["threshold"]) == load_metadata(site_model_dir).threshold


def _model_with_gate_limit(source: Path, target: Path, limit: float) -> Path:
    """A copy of ``source`` whose input gate refuses beyond ``limit`` instead of its own."""
    shutil.copytree(source, target)
    metadata = load_metadata(target)
    (target / "metadata.json").write_text(
        metadata.model_copy(update={"gate": metadata.gate.model_copy(update={"threshold": limit})}).model_dump_json()
    )
    return target


def _distances(model_dir: Path, paths: list[Path]) -> list[float]:
    import numpy as np

    from pneumoscan.imaging.preprocess import load_image
    from pneumoscan.model.predictor import Predictor

    predictor = Predictor.from_dir(model_dir)
    return predictor.score(np.stack([load_image(p.read_bytes()) for p in paths]))[:, 1].tolist()


def test_extend_gate_admits_the_sites_xrays_but_never_a_non_xray(tmp_path, site_dataset):
    xrays = sorted(site_dataset.glob("*/*.jpeg"))
    farthest = max(_distances(BUNDLED_MODEL_DIR, xrays))
    # A gate whose limit sits just under the site's farthest X-rays: some of them are refused.
    narrow = _model_with_gate_limit(BUNDLED_MODEL_DIR, tmp_path / "narrow", farthest / 1.05)
    plain = run_cli(
        "calibrate",
        "--model",
        str(narrow),
        "--data",
        str(site_dataset),
        "--rule",
        "youden",
        "--out",
        str(tmp_path / "plain"),
        "--json",
    )
    assert plain.returncode == 0, plain.stderr[-3000:]
    assert json.loads(plain.stdout)["refused"]["not_a_chest_xray"] > 1, "X-rays beyond the narrow limit"
    extended = run_cli(
        "calibrate",
        "--model",
        str(narrow),
        "--data",
        str(site_dataset),
        "--rule",
        "youden",
        "--out",
        str(tmp_path / "extended"),
        "--extend-gate",
        "--json",
    )
    assert extended.returncode == 0, extended.stderr[-3000:]
    site = json.loads(extended.stdout)
    assert site["gate_extended"] is True and site["refused"] == {"not_a_chest_xray": 1}, "only the photograph"
    assert site["n"] == {"NORMAL": 28, "PNEUMONIA": 28}
    assert load_metadata(tmp_path / "extended").gate.threshold == pytest.approx(farthest, rel=1e-4)
    # A gate so narrow that extending it to a grey photograph filed among the X-rays would admit
    # the nearest image of the check set (scikit-image's camera).
    with_photo = tmp_path / "with-photo"
    shutil.copytree(site_dataset, with_photo)
    (with_photo / "NORMAL" / "coffee.png").write_bytes(grey_photo("coffee"))
    camera = next(image for image in not_xrays() if image.name == "camera")
    (tmp_path / "camera.png").write_bytes(camera.data)
    coffee, nearest = _distances(BUNDLED_MODEL_DIR, [with_photo / "NORMAL" / "coffee.png", tmp_path / "camera.png"])
    assert coffee > 1.01 * nearest, "the filed photograph must lie beyond the check set's nearest image"
    tight = _model_with_gate_limit(BUNDLED_MODEL_DIR, tmp_path / "tight", coffee / 1.4)
    refused = run_cli(
        "calibrate",
        "--model",
        str(tight),
        "--data",
        str(with_photo),
        "--rule",
        "youden",
        "--out",
        str(tmp_path / "never"),
        "--extend-gate",
    )
    assert refused.returncode == 2 and "non-X-ray check set" in refused.stderr, refused.stderr[-2000:]
    assert not (tmp_path / "never").exists()
