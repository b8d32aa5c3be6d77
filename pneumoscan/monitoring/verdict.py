"""A sample of a model's answers against its reference: the statistics and a plain verdict.

Each distribution (calibrated P(pneumonia), the gate's distance) gets the population stability
index over the reference's bins and the two-sample KS statistic; the PNEUMONIA share and the
refusal rate stand beside the reference's. A finding counts only when it is both beyond chance at
this sample's size and larger than the thresholds in ``DriftThresholds``:

- PSI: above the 99th percentile that sampling alone reaches (``drift.psi_by_chance``), and
  0.1 or more (watch) or above 0.25 (re-validate), the conventional bands;
- KS: p below 0.01, and 0.1 or more (watch) or 0.2 or more (re-validate);
- refusal rate: the 95% Wilson interval's lower end above the reference's rate, and 2 points
  (watch) or 10 points (re-validate) above it;
- PNEUMONIA share: the reference's share outside the 95% Wilson interval and 15 points away (watch:
  the case mix changed, so PPV and NPV did; the distributions show whether the model did too);
- fewer than 30 scored images: watch at least, however the figures look.

The verdict is the most severe finding.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, Field

from pneumoscan.intervals import wilson_interval
from pneumoscan.monitoring.drift import (
    DriftReference,
    Sample,
    Verdict,
    bin_counts,
    ks_from_counts,
    ks_from_quantiles,
    ks_p_value,
    merged_bins,
    psi,
    psi_by_chance,
    regroup,
)

_ORDER: tuple[Verdict, ...] = ("stable", "watch", "re-validate")


class DriftThresholds(BaseModel):
    psi_watch: float = 0.1
    psi_revalidate: float = 0.25
    psi_chance_quantile: float = Field(default=0.99, description="A PSI counts only above this quantile by chance.")
    ks_watch: float = 0.1
    ks_revalidate: float = 0.2
    ks_p_value: float = Field(default=0.01, description="A KS statistic counts only below this p-value.")
    refusal_watch: float = Field(default=0.02, description="Refusal rate above the reference's by this much: watch.")
    refusal_revalidate: float = 0.10
    pneumonia_share_watch: float = Field(default=0.15, description="PNEUMONIA share this far from the reference's.")
    min_scored: int = Field(default=30, description="Fewer scored images than this: watch at least.")


class DistributionShift(BaseModel):
    """One distribution against the reference's."""

    n: int
    reference_n: int
    psi: float
    psi_chance: float = Field(description="The PSI that sampling alone exceeds 1% of the time at these sizes.")
    ks: float
    ks_p_value: float
    ks_method: str = Field(description="raw: the values against the reference's percentiles; binned: counts only.")
    median: float
    reference_median: float
    counts: list[int]
    reference_counts: list[int]
    buckets: list[float]
    psi_edges: list[float] = Field(description="The edges of the merged bins PSI is taken over.")
    verdict: Verdict


class RateShift(BaseModel):
    """A share of this sample beside the reference's."""

    value: float | None
    ci: tuple[float, float] | None
    successes: int
    n: int
    reference: float
    verdict: Verdict


class DriftComparison(BaseModel):
    probability: DistributionShift | None = Field(description="None when no image was scored.")
    ood: DistributionShift | None = Field(description="None without gate distances on either side.")
    pneumonia_share: RateShift
    refusal_rate: RateShift
    verdict: Verdict
    reasons: list[str] = Field(description="Every finding beyond stable, in words.")
    thresholds: DriftThresholds


def _worst(*verdicts: Verdict) -> Verdict:
    return max(verdicts, key=_ORDER.index, default="stable")


def _band(value: float, watch: float, revalidate: float, strict_upper: bool) -> Verdict:
    if value > revalidate or (not strict_upper and value >= revalidate):
        return "re-validate"
    return "watch" if value >= watch else "stable"


def compare_distribution(
    name: str,
    values: np.ndarray,
    buckets: list[float],
    reference_counts: list[int],
    reference_quantiles: list[float] | None,
    reference_median: float,
    thresholds: DriftThresholds,
    reasons: list[str],
) -> DistributionShift | None:
    """PSI and KS of ``values`` against the reference's bins (and percentiles, when it has them)."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    reference_n = int(sum(reference_counts))
    if values.size == 0 or reference_n == 0:
        return None
    counts = bin_counts(values, buckets)
    ends = merged_bins(reference_counts)
    merged_reference = regroup(reference_counts, ends)
    index = psi(merged_reference, regroup(counts, ends))
    chance = psi_by_chance(merged_reference, int(values.size), thresholds.psi_chance_quantile)
    if reference_quantiles is not None:
        ks, method = ks_from_quantiles(reference_quantiles, values), "raw"
    else:
        ks, method = ks_from_counts(reference_counts, counts), "binned"
    p_value = ks_p_value(ks, int(values.size), reference_n)
    psi_verdict: Verdict = "stable"
    if index > chance:
        psi_verdict = _band(index, thresholds.psi_watch, thresholds.psi_revalidate, strict_upper=True)
        if psi_verdict != "stable":
            reasons.append(f"{name}: PSI {index:.3f} (chance alone reaches {chance:.3f}): {psi_verdict}")
    ks_verdict: Verdict = "stable"
    if p_value < thresholds.ks_p_value:
        ks_verdict = _band(ks, thresholds.ks_watch, thresholds.ks_revalidate, strict_upper=False)
        if ks_verdict != "stable":
            reasons.append(f"{name}: KS {ks:.3f} (p {p_value:.2g}): {ks_verdict}")
    return DistributionShift(
        n=int(values.size),
        reference_n=reference_n,
        psi=index,
        psi_chance=chance,
        ks=ks,
        ks_p_value=p_value,
        ks_method=method,
        median=float(np.median(values)),
        reference_median=reference_median,
        counts=counts,
        reference_counts=list(reference_counts),
        buckets=list(buckets),
        psi_edges=[buckets[end - 1] for end in ends[:-1]],
        verdict=_worst(psi_verdict, ks_verdict),
    )


def _rate(successes: int, n: int, reference: float) -> RateShift:
    if n == 0:
        return RateShift(value=None, ci=None, successes=0, n=0, reference=reference, verdict="stable")
    return RateShift(
        value=successes / n,
        ci=wilson_interval(successes, n),
        successes=successes,
        n=n,
        reference=reference,
        verdict="stable",
    )


def compare_rates(
    sample: Sample, reference: DriftReference, thresholds: DriftThresholds, reasons: list[str]
) -> tuple[RateShift, RateShift]:
    """(PNEUMONIA share, refusal rate), each with its verdict."""
    share = _rate(sample.pneumonia, sample.scored, reference.pneumonia_share)
    if share.value is not None and share.ci is not None:
        outside = not share.ci[0] <= reference.pneumonia_share <= share.ci[1]
        if outside and abs(share.value - reference.pneumonia_share) >= thresholds.pneumonia_share_watch:
            share.verdict = "watch"
            reasons.append(
                f"PNEUMONIA share {share.value:.1%} against {reference.pneumonia_share:.1%} in the reference: "
                "the case mix changed"
            )
    refused = _rate(sample.n - sample.scored, sample.n, reference.refusal_rate)
    if refused.value is not None and refused.ci is not None and refused.ci[0] > reference.refusal_rate:
        rise = refused.value - reference.refusal_rate
        refused.verdict = _band(rise, thresholds.refusal_watch, thresholds.refusal_revalidate, strict_upper=False)
        if refused.verdict != "stable":
            reasons.append(
                f"refusal rate {refused.value:.1%} against {reference.refusal_rate:.1%} in the reference: "
                f"{refused.verdict}"
            )
    return share, refused


def compare(sample: Sample, reference: DriftReference, thresholds: DriftThresholds | None = None) -> DriftComparison:
    """The sample against the reference: both distributions, both rates, and the verdict."""
    thresholds = thresholds or DriftThresholds()
    reasons: list[str] = []
    probability = compare_distribution(
        "probability",
        sample.probabilities,
        reference.probability_buckets,
        reference.probability_counts,
        reference.probability_quantiles,
        reference.probability_median,
        thresholds,
        reasons,
    )
    ood = compare_distribution(
        "gate distance",
        sample.ood_scores,
        reference.ood_buckets,
        reference.ood_counts,
        reference.ood_quantiles,
        reference.ood_median,
        thresholds,
        reasons,
    )
    share, refused = compare_rates(sample, reference, thresholds, reasons)
    verdicts = [shift.verdict for shift in (probability, ood) if shift is not None] + [share.verdict, refused.verdict]
    if sample.scored < thresholds.min_scored:
        verdicts.append("watch")
        reasons.append(
            f"only {sample.scored} scored image(s): too few to call it stable (want {thresholds.min_scored})"
        )
    return DriftComparison(
        probability=probability,
        ood=ood,
        pneumonia_share=share,
        refusal_rate=refused,
        verdict=_worst(*verdicts),
        reasons=reasons,
        thresholds=thresholds,
    )
