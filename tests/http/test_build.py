"""``bentoml build`` packs the service, the core package and the model reference, offline."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from pneumoscan.model.predictor import load_metadata
from pneumoscan.settings import BUNDLED_MODEL_DIR
from tests.support import REPO_ROOT, reachable_modules

# pyproject dependencies the bento leaves out, and why.
NOT_IN_BENTO = {
    "bentoml": "the bento image installs its own BentoML",
    "tensorflow": "the variant for platforms other than Linux x86-64; the bento image is Linux x86-64",
    "scikit-learn": "training and evaluation only (training/ is not in the bento)",
    "tqdm": "the CLI's progress bar only",
    "jinja2": "the site validation report only (training/ is not in the bento)",
    "markdown-it-py": "the site adaptation report only (training/ is not in the bento)",
}


# Modules the service imports only on a path the bento does not take, and why.
OPTIONAL_IMPORTS = {
    "jax": "only under KERAS_BACKEND=jax on a GPU machine without TensorFlow (bench/gpu_check.sh installs it)",
}


def bentofile_packages() -> dict[str, Requirement]:
    bentofile = yaml.safe_load((REPO_ROOT / "bentofile.yaml").read_text())
    return {canonicalize_name(r.name): r for r in map(Requirement, bentofile["python"]["packages"])}


def test_bento_packages_mirror_pyproject():
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    expected = {canonicalize_name(r.name): r for r in map(Requirement, pyproject)}
    expected = {name: r for name, r in expected.items() if name not in NOT_IN_BENTO}
    packages = bentofile_packages()
    assert packages.keys() == expected.keys()
    for name, requirement in packages.items():
        assert requirement.specifier == expected[name].specifier, name


def installable(requirements: list[Requirement]) -> set[str]:
    """Distributions that installing ``requirements`` brings in, read from this environment's metadata."""
    found: set[str] = set()
    todo = list(requirements)
    while todo:
        requirement = todo.pop()
        name = canonicalize_name(requirement.name)
        if name in found:
            continue
        found.add(name)
        try:
            dependencies = importlib.metadata.requires(requirement.name) or []
        except importlib.metadata.PackageNotFoundError:
            continue
        extras = {"", *requirement.extras}
        for dependency in map(Requirement, dependencies):
            if dependency.marker is None or any(dependency.marker.evaluate({"extra": e}) for e in extras):
                todo.append(dependency)
    return found


def test_bentoml_build(registered_home):
    env = {**os.environ, "BENTOML_HOME": str(registered_home), "BENTOML_DO_NOT_TRACK": "true"}
    result = subprocess.run(
        [sys.executable, "-m", "bentoml", "build", "--output", "tag"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
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
    assert not (source / "tests").exists() and not (source / ".venv").exists()
    # Every module the service imports, at any depth (the job queue's too), is packed...
    modules, third_party = reachable_modules(source, "service.service")
    assert {
        "service.worker.queue",
        "pneumoscan.jobs.folder",
        "pneumoscan.imaging.preprocess",
        "pneumoscan.model.predictor",
    } <= modules
    # ...and every other package it imports is installed by the bento's requirements.
    lines = (bento / "env" / "python" / "requirements.txt").read_text().splitlines()
    requirements = [Requirement(line) for line in lines if line.strip() and not line.startswith(("#", "-"))]
    assert {canonicalize_name(r.name) for r in requirements} >= bentofile_packages().keys()
    provided = installable([*requirements, Requirement("bentoml")])
    distributions = importlib.metadata.packages_distributions()
    for module in third_party - OPTIONAL_IMPORTS.keys():
        assert module in distributions, f"{module} is imported by the service but installed by nothing"
        assert {canonicalize_name(d) for d in distributions[module]} & provided, f"the bento does not install {module}"
