"""A model's answers on the data its operating point was chosen on, kept beside the model
(``drift_reference.json``), and what later answers are compared with.

Counts are per bin of ``pneumoscan.monitoring``: ``probability_counts[i]`` counts calibrated
P(pneumonia) at or below ``PROBABILITY_BUCKETS[i]`` and above the previous edge, the last entry
those above the last edge (Prometheus' ``le`` buckets, not cumulative); the same for the gate's
distance as a multiple of its limit in ``ood_counts``.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

REFERENCE_FILE = "drift_reference.json"


class DriftReference(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    model_version: str
    source: str = Field(description="What was scored, for example the validation split and its fingerprint.")
    created: datetime
    n: int = Field(description="Images scored, refusals included.")
    probability_buckets: list[float]
    probability_counts: list[int] = Field(description="Scored images per probability bin (one more than edges).")
    ood_buckets: list[float]
    ood_counts: list[int] = Field(description="Scored images per gate-distance bin (one more than edges).")
    label_counts: dict[str, int] = Field(description="Scored images per label at the model's threshold.")
    refusal_counts: dict[str, int] = Field(description="Refused images per error code.")
    pneumonia_share: float = Field(description="PNEUMONIA labels among scored images.")
    refusal_rate: float = Field(description="Refused images among all.")
    probability_median: float
    ood_median: float = Field(description="Median gate distance as a multiple of the limit.")


def load_reference(model_dir: str | Path) -> DriftReference | None:
    """The model folder's reference, or None for a model saved without one."""
    path = Path(model_dir) / REFERENCE_FILE
    if not path.is_file():
        return None
    return DriftReference.model_validate_json(path.read_text())
