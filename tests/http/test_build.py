"""``bentoml build`` packs the service, the core package and the model reference, offline."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from pneumoscan.model import load_metadata
from pneumoscan.settings import BUNDLED_MODEL_DIR
from tests.conftest import REPO_ROOT


def test_bentoml_build(registered_home):
    env = {**os.environ, "BENTOML_HOME": str(registered_home), "BENTOML_DO_NOT_TRACK": "true"}
    result = subprocess.run(
        [sys.executable, "-m", "bentoml", "build", "--output", "tag"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    tag = result.stdout.strip().splitlines()[-1].removeprefix("__tag__:")
    name, version = tag.split(":")
    bento = Path(registered_home) / "bentos" / name / version
    manifest = yaml.safe_load((bento / "bento.yaml").read_text())
    assert manifest["service"] == "service.service:Pneumoscan"
    model_tags = [model["tag"] for model in manifest["models"]]
    assert model_tags == [f"pneumonia-cnn:{load_metadata(BUNDLED_MODEL_DIR).version}"]
    source = bento / "src"
    for module in ("service/service.py", "service/http.py", "pneumoscan/imaging.py", "pneumoscan/model.py"):
        assert (source / module).is_file(), module
    assert not (source / "tests").exists() and not (source / ".venv").exists()
    requirements = (bento / "env" / "python" / "requirements.txt").read_text()
    assert "tensorflow-cpu" in requirements and "fastapi" in requirements
