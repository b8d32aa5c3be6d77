"""Importing a saved pneumoscan model folder into the BentoML model store."""

from __future__ import annotations

import shutil
from pathlib import Path

import bentoml
from bentoml.exceptions import NotFound

from pneumoscan.gate import GATE_FILE
from pneumoscan.model import METADATA_FILE, MODEL_FILE, load_metadata


def register_model(model_dir: str | Path, name: str = "pneumonia-cnn") -> tuple[str, bool]:
    """Store ``model_dir`` as ``name:<model version>``; returns (tag, created). Idempotent."""
    model_dir = Path(model_dir)
    metadata = load_metadata(model_dir)
    tag = f"{name}:{metadata.version}"
    try:
        bentoml.models.get(tag)
        return tag, False
    except NotFound:
        pass
    with bentoml.models.create(
        tag,
        labels={"recipe": metadata.recipe, "framework": "keras"},
        metadata={
            "threshold": metadata.threshold,
            "validation_auc": metadata.validation.auc,
            "training_fingerprint": metadata.training_fingerprint,
        },
    ) as stored:
        for file_name in (MODEL_FILE, METADATA_FILE, GATE_FILE):
            if (model_dir / file_name).exists():  # models saved before the input gate have no gate file
                shutil.copy2(model_dir / file_name, Path(stored.path) / file_name)
    return tag, True
