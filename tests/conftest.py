"""Shared fixtures: real X-rays from tests/fixtures, malformed inputs made from them, a tiny model."""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path

import pytest
from PIL import Image

from pneumoscan.settings import BUNDLED_MODEL_DIR
from tests.support import make_site_dataset, make_tiny_dataset, run_cli, xray_paths

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# The queue worker scores with the model the BentoML store's PNEUMOSCAN_MODEL_TAG names: an empty
# store of the test session's own keeps the developer's registered models out of the tests.
os.environ["BENTOML_HOME"] = tempfile.mkdtemp(prefix="pneumoscan-tests-bentoml-")


@pytest.fixture(scope="session")
def xray_files() -> list[Path]:
    paths = xray_paths()
    assert len(paths) >= 6, "tests/fixtures/xrays must hold the fixture X-rays"
    return paths


@pytest.fixture(scope="session")
def xray_bytes(xray_files) -> bytes:
    """A full-size normal chest X-ray JPEG."""
    return next(p for p in xray_files if p.parent.name == "NORMAL").read_bytes()


@pytest.fixture(scope="session")
def xray_image(xray_bytes) -> Image.Image:
    """The fixture X-ray decoded to 8-bit grayscale at a modest size (keeps PNG tests fast)."""
    image = Image.open(io.BytesIO(xray_bytes)).convert("L")
    image.thumbnail((640, 640))
    return image


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    return make_tiny_dataset(tmp_path_factory.mktemp("tiny-data"))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_dataset) -> Path:
    """A seed-recipe model trained for one epoch on the tiny dataset, through the real CLI."""
    out = tmp_path_factory.mktemp("tiny-model")
    result = run_cli(
        "train",
        "--data",
        str(tiny_dataset),
        "--out",
        str(out),
        "--recipe",
        "seed",
        "--epochs",
        "1",
        "--seed",
        "7",
        "--validation-fraction",
        "0.34",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return out


@pytest.fixture(scope="session")
def site_dataset(tmp_path_factory) -> Path:
    """A site's labelled folder: 28 X-rays of each class and one photograph filed as NORMAL."""
    return make_site_dataset(tmp_path_factory.mktemp("site-data"))


@pytest.fixture(scope="session")
def site_model_dir(tmp_path_factory, site_dataset) -> Path:
    """The bundled model calibrated on ``site_dataset`` by the real ``pneumoscan calibrate``."""
    out = tmp_path_factory.mktemp("site-model") / "calibrated"
    result = run_cli(
        "calibrate",
        "--model",
        str(BUNDLED_MODEL_DIR),
        "--data",
        str(site_dataset),
        "--rule",
        "youden",
        "--out",
        str(out),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def _adapted(tmp_path_factory, site_dataset, *options: str) -> Path:
    out = tmp_path_factory.mktemp("adapted-model") / "adapted"
    result = run_cli(
        "adapt", "--model", str(BUNDLED_MODEL_DIR), "--data", str(site_dataset), "--out", str(out), *options
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return out


@pytest.fixture(scope="session")
def adapted_model_dir(tmp_path_factory, site_dataset) -> Path:
    """The bundled model adapted to ``site_dataset`` by the real ``pneumoscan adapt`` (its classifier refitted)."""
    return _adapted(tmp_path_factory, site_dataset)


@pytest.fixture(scope="session")
def fine_tuned_model_dir(tmp_path_factory, site_dataset) -> Path:
    """The same with ``--method fine-tune``, two epochs at most."""
    return _adapted(tmp_path_factory, site_dataset, "--method", "fine-tune", "--max-epochs", "2")


@pytest.fixture()
def bentoml_home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "bentoml"
    monkeypatch.setenv("BENTOML_HOME", str(home))
    return home
