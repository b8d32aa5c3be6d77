"""A model's answers on the data its operating point was chosen on, kept beside the model
(``drift_reference.json``), and what later answers are compared with.

Counts are per bin of ``pneumoscan.monitoring.bins``: ``probability_counts[i]`` counts calibrated
P(pneumonia) at or below ``PROBABILITY_BUCKETS[i]`` and above the previous edge, the last entry
those above the last edge (Prometheus' ``le`` buckets, not cumulative); the same for the gate's
distance as a multiple of its limit in ``ood_counts``. The histograms count the images that got a
result; refused images are counted by code in ``refusal_counts`` and ``n`` includes them.

The comparison (``compare``) gives, for each of the two distributions, the population stability
index over those bins and the two-sample Kolmogorov-Smirnov statistic, and beside them the
PNEUMONIA share and the refusal rate against the reference's. The verdict rules and their
thresholds are ``DriftThresholds``; docs/drift.md explains them.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from pneumoscan import CLASS_NAMES
from pneumoscan.errors import PneumoscanError
from pneumoscan.monitoring.bins import OOD_BUCKETS, PROBABILITY_BUCKETS
from pneumoscan.result import Result
from pneumoscan.schemas import Prediction

REFERENCE_FILE = "drift_reference.json"
QUANTILE_LEVELS = 101  # the 0th to 100th percentile of each distribution, kept for the KS statistic
PSI_EPSILON = 1e-4  # the share an empty bin counts as, so that PSI stays finite
PSI_MIN_SHARE = 0.05  # the least share of the reference a PSI bin holds (``merged_bins``)
CHANCE_DRAWS = 2000
CHANCE_SEED = 0

Verdict = Literal["stable", "watch", "re-validate"]


class DriftReference(BaseModel):
    model_config = ConfigDict(protected_namespaces=(), ser_json_inf_nan="constants")

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
    probability_quantiles: list[float] | None = Field(
        default=None, description="The 0th to 100th percentile of the probabilities (for the KS statistic)."
    )
    ood_quantiles: list[float] | None = Field(
        default=None, description="The 0th to 100th percentile of the gate distances; None without a gate."
    )


def load_reference(model_dir: str | Path) -> DriftReference | None:
    """The model folder's reference, or None for a model saved without one."""
    path = Path(model_dir) / REFERENCE_FILE
    if not path.is_file():
        return None
    return DriftReference.model_validate_json(path.read_text())


def save_reference(model_dir: str | Path, reference: DriftReference) -> Path:
    path = Path(model_dir) / REFERENCE_FILE
    path.write_text(reference.model_dump_json(indent=2) + "\n")
    return path


# --- the statistics ---------------------------------------------------------------------------------


def bin_counts(values: Iterable[float], edges: Sequence[float]) -> list[int]:
    """Counts per ``le`` bin: ``edges[i-1] < value <= edges[i]``, the last bin above the last edge."""
    array = np.asarray(list(values) if not isinstance(values, np.ndarray) else values, dtype=np.float64)
    array = array[np.isfinite(array)]
    indices = np.searchsorted(np.asarray(edges, dtype=np.float64), array, side="left")
    return np.bincount(indices, minlength=len(edges) + 1).astype(int).tolist()


def psi(reference_counts: Sequence[int], current_counts: Sequence[int], epsilon: float = PSI_EPSILON) -> float:
    """Population stability index, sum of (current - reference) * ln(current / reference) over the
    bins' shares; an empty bin's share counts as ``epsilon``."""
    reference, current = np.asarray(reference_counts, float), np.asarray(current_counts, float)
    if reference.shape != current.shape:
        raise ValueError(f"Bin counts differ in length: {reference.shape} and {current.shape}.")
    if reference.sum() <= 0 or current.sum() <= 0:
        raise ValueError("PSI needs at least one value on each side.")
    expected = np.maximum(reference / reference.sum(), epsilon)
    actual = np.maximum(current / current.sum(), epsilon)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def merged_bins(reference_counts: Sequence[int], min_share: float = PSI_MIN_SHARE) -> list[int]:
    """Where each PSI bin ends: adjacent bins merged, in order, until each holds at least
    ``min_share`` of the reference (a short remainder joins the last). Fine bins with a handful of
    reference images each make PSI mostly sampling noise; conventional PSI uses 10 to 20 bins."""
    counts = np.asarray(reference_counts, dtype=float)
    total, ends, running = counts.sum(), [], 0.0
    for index, count in enumerate(counts):
        running += count
        if total > 0 and running >= min_share * total:
            ends.append(index + 1)
            running = 0.0
    if not ends:
        return [len(counts)]
    if ends[-1] != len(counts):
        ends[-1] = len(counts)
    return ends


def regroup(counts: Sequence[int], ends: Sequence[int]) -> list[int]:
    """``counts`` summed over the merged bins that ``merged_bins`` ends."""
    starts = [0, *ends[:-1]]
    return [int(sum(counts[start:end])) for start, end in zip(starts, ends, strict=True)]


def psi_by_chance(
    reference_counts: Sequence[int], n: int, quantile: float = 0.99, draws: int = CHANCE_DRAWS, seed: int = CHANCE_SEED
) -> float:
    """The PSI that sampling alone reaches with probability ``1 - quantile``: both samples (the
    reference's size and ``n``) drawn from the reference's shares, ``draws`` times."""
    reference = np.asarray(reference_counts, dtype=np.int64)
    m = int(reference.sum())
    if m <= 0 or n <= 0:
        raise ValueError("PSI needs at least one value on each side.")
    shares = reference / m
    rng = np.random.default_rng(seed)
    expected = np.maximum(rng.multinomial(m, shares, size=draws) / m, PSI_EPSILON)
    actual = np.maximum(rng.multinomial(n, shares, size=draws) / n, PSI_EPSILON)
    values = np.sum((actual - expected) * np.log(actual / expected), axis=1)
    return float(np.quantile(values, quantile))


def quantiles(values: np.ndarray) -> list[float] | None:
    """The 0th to 100th percentile of the finite values; None when there are none."""
    finite = np.asarray(values, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        return None
    return np.quantile(finite, np.linspace(0.0, 1.0, QUANTILE_LEVELS)).tolist()


def _quantile_cdf(levels: np.ndarray, x: np.ndarray, side: Literal["left", "right"]) -> np.ndarray:
    """The reference's CDF, linear between its percentiles; ``side="left"`` gives the left limit."""
    steps = len(levels) - 1
    k = np.searchsorted(levels, x, side=side)
    below = np.clip(k - 1, 0, steps)
    above = np.clip(k, 0, steps)
    width = levels[above] - levels[below]
    within = np.divide(x - levels[below], width, out=np.zeros_like(x), where=width > 0)
    cdf = (below + np.clip(within, 0.0, 1.0)) / steps
    return np.where(k == 0, 0.0, np.where(k > steps, 1.0, cdf))


def ks_from_quantiles(reference_quantiles: Sequence[float], values: np.ndarray) -> float:
    """sup |F_current - F_reference| for raw current values against the reference's percentiles,
    the reference's CDF linear between them (within 1% of the raw two-sample statistic)."""
    levels = np.asarray(reference_quantiles, dtype=np.float64)
    current = np.sort(np.asarray(values, dtype=np.float64)[np.isfinite(values)])
    if current.size == 0 or levels.size < 2:
        raise ValueError("KS needs at least one value and two reference percentiles.")
    points = np.union1d(current, levels)
    at = np.searchsorted(current, points, side="right") / current.size
    before = np.searchsorted(current, points, side="left") / current.size
    return float(
        max(
            np.max(np.abs(at - _quantile_cdf(levels, points, "right"))),
            np.max(np.abs(before - _quantile_cdf(levels, points, "left"))),
        )
    )


def ks_from_counts(reference_counts: Sequence[int], current_counts: Sequence[int]) -> float:
    """The largest gap between the two cumulative shares at the bin edges: the KS statistic seen
    through the bins, never above the raw one (used where only counts exist, as in /metrics)."""
    reference, current = np.asarray(reference_counts, float), np.asarray(current_counts, float)
    if reference.sum() <= 0 or current.sum() <= 0:
        raise ValueError("KS needs at least one value on each side.")
    return float(np.max(np.abs(np.cumsum(reference) / reference.sum() - np.cumsum(current) / current.sum())))


def ks_p_value(statistic: float, n: int, m: int) -> float:
    """Two-sample KS p-value from Kolmogorov's limiting distribution (Stephens' small-sample
    correction, as in Numerical Recipes); conservative when values are tied."""
    effective = n * m / (n + m)
    root = math.sqrt(effective)
    lam = (root + 0.12 + 0.11 / root) * statistic
    if lam < 0.2:
        return 1.0
    terms = [2 * (-1) ** (k - 1) * math.exp(-2 * k * k * lam * lam) for k in range(1, 101)]
    return float(min(1.0, max(0.0, sum(terms))))


# --- a sample, the reference built from it, and the comparison ------------------------------------------


@dataclass(frozen=True)
class Sample:
    """What a model answered on a set of images: the scored ones' values and the refusals."""

    probabilities: np.ndarray  # calibrated P(pneumonia) of the images that got a result
    ood_scores: np.ndarray  # their gate distance / the limit (NaN without a gate)
    pneumonia: int  # results labelled PNEUMONIA
    refusals: dict[str, int]  # refused images per error code

    @classmethod
    def of(cls, results: Iterable[tuple[float, float | None, str] | str]) -> Sample:
        """From (probability, ood score, label) per scored image and an error code per refused one."""
        probabilities, ood_scores, pneumonia, refusals = [], [], 0, Counter[str]()
        for result in results:
            if isinstance(result, str):
                refusals[result] += 1
                continue
            probability, ood_score, label = result
            probabilities.append(probability)
            ood_scores.append(np.nan if ood_score is None else ood_score)
            pneumonia += label == CLASS_NAMES[1]
        return cls(
            np.asarray(probabilities, dtype=np.float64),
            np.asarray(ood_scores, dtype=np.float64),
            pneumonia,
            dict(sorted(refusals.items())),
        )

    @classmethod
    def from_outcomes(cls, outcomes: Iterable[Prediction | PneumoscanError]) -> Sample:
        """From each image's prediction or the error that refused it."""
        return cls.of((o.probability, o.ood_score, o.label) if isinstance(o, Prediction) else o.code for o in outcomes)

    @classmethod
    def from_results(cls, results: Iterable[Result]) -> Sample:
        """From ``score_paths``' results, or results.csv rows read back."""
        return cls.of(
            (r.prediction.probability, r.prediction.ood_score, r.prediction.label)
            if r.prediction is not None
            else (r.error.code if r.error is not None else "error")
            for r in results
        )

    @property
    def scored(self) -> int:
        return len(self.probabilities)

    @property
    def n(self) -> int:
        return self.scored + sum(self.refusals.values())


def build_reference(sample: Sample, model_version: str, source: str, created: datetime | None = None) -> DriftReference:
    """The reference for a model's answers on ``sample``; ``ValueError`` when nothing was scored."""
    if sample.scored == 0:
        raise ValueError("A drift reference needs at least one scored image.")
    ood = sample.ood_scores[np.isfinite(sample.ood_scores)]
    return DriftReference(
        model_version=model_version,
        source=source,
        created=created or datetime.now(UTC),
        n=sample.n,
        probability_buckets=list(PROBABILITY_BUCKETS),
        probability_counts=bin_counts(sample.probabilities, PROBABILITY_BUCKETS),
        ood_buckets=list(OOD_BUCKETS),
        ood_counts=bin_counts(ood, OOD_BUCKETS),
        label_counts={CLASS_NAMES[0]: sample.scored - sample.pneumonia, CLASS_NAMES[1]: sample.pneumonia},
        refusal_counts=sample.refusals,
        pneumonia_share=sample.pneumonia / sample.scored,
        refusal_rate=(sample.n - sample.scored) / sample.n,
        probability_median=float(np.median(sample.probabilities)),
        ood_median=float(np.median(ood)) if ood.size else float("nan"),
        probability_quantiles=quantiles(sample.probabilities),
        ood_quantiles=quantiles(ood),
    )
