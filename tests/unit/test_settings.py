"""Settings come from PNEUMOSCAN_* variables, and the settings reference documents every one."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from pydantic import ValidationError

from pneumoscan.settings import BUNDLED_MODEL_DIR, Settings

GENERATOR = Path(__file__).resolve().parents[2] / "docs" / "gen_reference.py"


def test_defaults():
    settings = Settings()
    assert settings.model_dir == BUNDLED_MODEL_DIR
    assert settings.threshold is None
    assert settings.max_image_pixels == 50_000_000


def test_environment_overrides(monkeypatch, tmp_path):
    monkeypatch.setenv("PNEUMOSCAN_MODEL_DIR", str(tmp_path))
    monkeypatch.setenv("PNEUMOSCAN_THRESHOLD", "0.25")
    monkeypatch.setenv("PNEUMOSCAN_MAX_IMAGE_PIXELS", "1000")
    settings = Settings()
    assert settings.model_dir == tmp_path
    assert settings.threshold == 0.25
    assert settings.max_image_pixels == 1000


def test_invalid_values_are_refused(monkeypatch):
    monkeypatch.setenv("PNEUMOSCAN_THRESHOLD", "1.5")
    with pytest.raises(ValidationError):
        Settings()


def test_the_settings_reference_documents_every_setting():
    spec = importlib.util.spec_from_file_location("gen_reference", GENERATOR)
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    reference = generator.settings_markdown()  # the docs site's reference/settings.md
    for name, field in Settings.model_fields.items():
        assert f"`PNEUMOSCAN_{name.upper()}`" in reference, f"the settings reference lacks PNEUMOSCAN_{name.upper()}"
        assert field.description, f"PNEUMOSCAN_{name.upper()} has no description"


def test_delivery_settings_read_their_older_hl7_names(monkeypatch):
    monkeypatch.setenv("PNEUMOSCAN_HL7_MAX_ATTEMPTS", "7")
    monkeypatch.setenv("PNEUMOSCAN_HL7_RETRY_MAX_S", "12")
    assert (Settings().delivery_max_attempts, Settings().delivery_retry_max_s) == (7, 12.0)
    monkeypatch.setenv("PNEUMOSCAN_DELIVERY_MAX_ATTEMPTS", "3")
    assert Settings().delivery_max_attempts == 3
    assert Settings(delivery_max_attempts=2).delivery_max_attempts == 2
