"""All runtime settings in one place, read from ``PNEUMOSCAN_*`` environment variables."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from pneumoscan.imaging import DEFAULT_MAX_PIXELS

PROJECT_ROOT = Path(__file__).resolve().parent.parent
BUNDLED_MODEL_DIR = PROJECT_ROOT / "models" / "pneumonia-cnn"


class Settings(BaseSettings):
    """Every setting has a documented default; see the README's settings table."""

    model_config = SettingsConfigDict(env_prefix="PNEUMOSCAN_", extra="ignore")

    model_dir: Path = Field(
        default=BUNDLED_MODEL_DIR,
        description="Directory holding model.keras and metadata.json (the bundled model by default).",
    )
    model_name: str = Field(
        default="pneumonia-cnn", description="Name of the model in the BentoML model store."
    )
    max_image_pixels: int = Field(
        default=DEFAULT_MAX_PIXELS,
        gt=0,
        description="Largest accepted image, in pixels (width x height); larger inputs are refused.",
    )
    threshold: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="Override of the model's saved decision threshold on P(pneumonia).",
    )
    tf_intra_op_threads: int = Field(
        default=0, ge=0, description="TensorFlow intra-op threads per process (0: one per core)."
    )
    tf_inter_op_threads: int = Field(
        default=1, ge=0, description="TensorFlow inter-op threads per process (0: TF's default)."
    )
    predict_batch_size: int = Field(
        default=32, gt=0, description="Images per model call in offline prediction and evaluation."
    )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
