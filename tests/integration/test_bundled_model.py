"""The committed model: complete, small enough, documented, and it runs through the CLI."""

from __future__ import annotations

import json

from pneumoscan.model import MODEL_FILE, build_tuned_model, load_keras_model, load_metadata
from pneumoscan.settings import BUNDLED_MODEL_DIR
from tests.conftest import run_cli


def test_bundled_model_files():
    metadata = load_metadata(BUNDLED_MODEL_DIR)
    assert (BUNDLED_MODEL_DIR / MODEL_FILE).stat().st_size <= 16 * 1024 * 1024
    assert metadata.recipe == "tuned"
    assert metadata.validation.sensitivity >= metadata.target_sensitivity
    assert metadata.train_images + metadata.validation_images == 5216
    card = (BUNDLED_MODEL_DIR / "MODEL_CARD.md").read_text()
    assert "Not for diagnostic use" in card and metadata.version in card
    assert (BUNDLED_MODEL_DIR / "training_curves.png").is_file()


def test_bundled_model_matches_the_tuned_architecture():
    model = load_keras_model(BUNDLED_MODEL_DIR)
    reference = build_tuned_model()
    assert [layer.name for layer in model.layers] == [layer.name for layer in reference.layers]
    assert model.count_params() == reference.count_params()


def test_bundled_model_predicts_the_fixtures(xray_files):
    result = run_cli("predict", *map(str, xray_files))
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    by_class = {"NORMAL": [], "PNEUMONIA": []}
    for path, line in zip(xray_files, lines):
        assert 0.0 <= line["probability"] <= 1.0
        by_class[path.parent.name].append(line["probability"])
    assert min(by_class["PNEUMONIA"]) > 0.5, "every pneumonia fixture should score high"
