"""Shared fixtures: real X-rays from tests/fixtures, malformed inputs made from them, a tiny model."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pneumoscan.imaging import plane_to_input
from pneumoscan.decision import Decision

FIXTURES = Path(__file__).parent / "fixtures"
XRAYS = FIXTURES / "xrays"
REPO_ROOT = Path(__file__).resolve().parent.parent

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def xray_paths() -> list[Path]:
    return sorted(XRAYS.glob("*/*.jpeg"))


@pytest.fixture(scope="session")
def xray_files() -> list[Path]:
    paths = xray_paths()
    assert len(paths) >= 6, "tests/fixtures/xrays must hold the fixture X-rays"
    return paths


@pytest.fixture(scope="session")
def xray_bytes(xray_files) -> bytes:
    """A full-size normal chest X-ray JPEG."""
    return next(p for p in xray_files if p.parent.name == "NORMAL").read_bytes()


def encode(image: Image.Image, format: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format, **options)
    return buffer.getvalue()


@pytest.fixture(scope="session")
def xray_image(xray_bytes) -> Image.Image:
    """The fixture X-ray decoded to 8-bit grayscale at a modest size (keeps PNG tests fast)."""
    image = Image.open(io.BytesIO(xray_bytes)).convert("L")
    image.thumbnail((640, 640))
    return image


def make_tiny_dataset(root: Path, copies: int = 3) -> Path:
    """A labelled folder of ``8 * copies`` images: the fixtures, shifted, one patient per copy."""
    for number, source in enumerate(xray_paths()):
        base = Image.open(source).convert("L")
        base.thumbnail((256, 256))
        for copy in range(copies):
            shifted = Image.fromarray(np.roll(np.asarray(base), copy * 7, axis=1))
            # One patient (or study) per source and copy; the numbers never collide.
            if source.parent.name == "PNEUMONIA":
                name = f"person{900 + copy}{number:03d}_bacteria_{copy}.jpeg"
            else:
                name = f"IM-{copy}{number:03d}-0001.jpeg"
            target = root / source.parent.name / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shifted.save(target, quality=90)
    return root


STAND_IN_DECISION = Decision(threshold=0.5, model_version="test-1", ood_threshold=1.0)
# Planes darker than this on average are "out of distribution" for the stand-in model.
STAND_IN_DARK = 0.2


def stand_in_scores(planes: np.ndarray) -> np.ndarray:
    """A deterministic stand-in for the model service's ``infer`` (n, 2): the mean pixel as
    P(pneumonia), and a gate distance of 2 (twice the limit) for dark planes, 0.5 otherwise."""
    means = plane_to_input(planes).mean(axis=(1, 2, 3)).astype(np.float64)
    return np.stack([means, np.where(means < STAND_IN_DARK, 2.0, 0.5)], axis=1)


# A one-epoch model's input gate is loose and arbitrary (its limit is the farthest of 8 validation
# images): tests of the CLI's plumbing with such a model score everything and only flag. The
# gate itself is tested with the bundled model.
SCORE_EVERYTHING = {"PNEUMOSCAN_OOD_POLICY": "flag"}


async def stand_in_heatmap(plane: np.ndarray) -> np.ndarray:
    """A stand-in for the model service's ``explain``: the plane's own brightness on an 8x8 grid."""
    return np.asarray(plane, dtype=np.float32)[::16, ::16] / 255.0


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run the real ``pneumoscan`` command in a subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "pneumoscan.cli", *args],
        cwd=REPO_ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    return make_tiny_dataset(tmp_path_factory.mktemp("tiny-data"))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_dataset) -> Path:
    """A seed-recipe model trained for one epoch on the tiny dataset, through the real CLI."""
    out = tmp_path_factory.mktemp("tiny-model")
    result = run_cli(
        "train", "--data", str(tiny_dataset), "--out", str(out), "--recipe", "seed",
        "--epochs", "1", "--seed", "7", "--validation-fraction", "0.34",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return out


@pytest.fixture()
def bentoml_home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "bentoml"
    monkeypatch.setenv("BENTOML_HOME", str(home))
    return home
