"""All runtime settings in one class, read from ``PNEUMOSCAN_*`` environment variables: its fields
come by subject from ``serving`` (the model, the HTTP service, access), ``batch`` (data, the
queue, the worker), ``dicom`` (the DICOM node) and ``delivery`` (HL7, FHIR); ``machine`` holds
what their defaults are made from.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic_settings import SettingsConfigDict

from pneumoscan.settings.batch import BatchSettings
from pneumoscan.settings.delivery import DeliverySettings
from pneumoscan.settings.dicom import DicomSettings
from pneumoscan.settings.machine import BUNDLED_MODEL_DIR, PROJECT_ROOT, available_cores
from pneumoscan.settings.serving import ServingSettings

__all__ = ["BUNDLED_MODEL_DIR", "PROJECT_ROOT", "Settings", "available_cores", "get_settings"]


# The fields in the order the bases are listed backwards: serving, batch, dicom, delivery.
class Settings(DeliverySettings, DicomSettings, BatchSettings, ServingSettings):
    """Every setting has a documented default; the docs' settings reference is generated from this class."""

    model_config = SettingsConfigDict(env_prefix="PNEUMOSCAN_", extra="ignore", populate_by_name=True)

    @property
    def keys_path(self) -> Path:
        return self.keys_file if self.keys_file is not None else self.data_dir / "keys.json"

    @property
    def audit_root(self) -> Path:
        return self.audit_dir if self.audit_dir is not None else self.data_dir / "audit"

    @property
    def fhir_root(self) -> Path:
        """Where FHIR transactions wait for the server (``outbox/``), or were refused (``failed/``)."""
        return self.data_dir / "fhir"

    @property
    def hl7_root(self) -> Path:
        """Where HL7 messages wait (``outbox/``), or were set aside (``failed/``)."""
        return self.data_dir / "hl7"

    @property
    def allowed_calling_aes(self) -> list[str]:
        return [title.strip() for title in self.dicom_allowed_aes.split(",") if title.strip()]

    @property
    def dicom_root(self) -> Path:
        """Where the node keeps received instances (``incoming/``) and undelivered results (``outbox/``)."""
        return self.data_dir / "dicom"

    @property
    def jobs_root(self) -> Path:
        return self.jobs_dir if self.jobs_dir is not None else self.data_dir / "jobs"

    @property
    def allowed_input_roots(self) -> list[Path] | None:
        """Resolved PNEUMOSCAN_INPUT_ROOTS, or None when unset."""
        if not self.input_roots:
            return None
        return [Path(root).resolve() for root in self.input_roots.split(":") if root]


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
