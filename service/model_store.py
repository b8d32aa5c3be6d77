"""The BentoML model store: importing a saved pneumoscan model folder, and finding the folder a
tag names, so that the queue worker scores with the version the service serves."""

from __future__ import annotations

import shutil
from pathlib import Path

import bentoml
from bentoml.exceptions import NotFound

from pneumoscan.imaging.gate import GATE_FILE
from pneumoscan.model.predictor import METADATA_FILE, MODEL_FILE, load_metadata
from pneumoscan.monitoring.drift import REFERENCE_FILE


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
        labels={
            "recipe": metadata.recipe,
            "framework": "keras",
            "site_calibrated": str(metadata.site is not None).lower(),
            "adapted": str(metadata.adaptation is not None).lower(),
        },
        metadata={
            "threshold": metadata.threshold,
            "validation_auc": metadata.validation.auc,
            "training_fingerprint": metadata.training_fingerprint,
        },
    ) as stored:
        for file_name in (MODEL_FILE, METADATA_FILE, GATE_FILE, REFERENCE_FILE):
            # Models saved before the input gate have no gate file, before the drift reference no reference.
            if (model_dir / file_name).exists():
                shutil.copy2(model_dir / file_name, Path(stored.path) / file_name)
    return tag, True


def stored_model_dir(tag: str) -> Path | None:
    """The folder of ``tag`` (``name:version`` or ``name:latest``) in this BentoML store; None
    when the store holds no such model."""
    try:
        return Path(bentoml.models.get(tag).path)
    except NotFound:
        return None


def serving_model_dir(tag: str, fallback: Path) -> tuple[Path, str]:
    """(model folder, where it came from): the store's ``tag`` when the store has it, as the service
    loads it; otherwise ``fallback`` (PNEUMOSCAN_MODEL_DIR), for a store nothing was registered in."""
    stored = stored_model_dir(tag)
    if stored is not None:
        return stored, f"{tag} in the BentoML store"
    return Path(fallback), f"{fallback} ({tag} is not in the BentoML store)"
