"""The drift statistics and verdict (``pneumoscan.monitoring``: ``drift``, ``verdict``) on hand-made numbers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pneumoscan.monitoring.bins import OOD_BUCKETS, PROBABILITY_BUCKETS
from pneumoscan.monitoring.drift import (
    PSI_EPSILON,
    Sample,
    bin_counts,
    build_reference,
    ks_from_counts,
    ks_from_quantiles,
    ks_p_value,
    load_reference,
    merged_bins,
    psi,
    psi_by_chance,
    quantiles,
    regroup,
    save_reference,
)
from pneumoscan.monitoring.verdict import DriftThresholds, compare


def sample(probabilities, ood_scores=None, threshold: float = 0.5, refusals: int = 0) -> Sample:
    ood = np.full(len(probabilities), 0.5) if ood_scores is None else ood_scores
    scored = [
        (float(p), float(o), "PNEUMONIA" if p >= threshold else "NORMAL")
        for p, o in zip(probabilities, ood, strict=True)
    ]
    return Sample.of([*scored, *["not_a_chest_xray"] * refusals])


def reference_population(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.beta(0.4, 0.3, n), rng.gamma(9.0, 0.06, n)


def test_bins_are_prometheus_le_buckets():
    assert bin_counts([0.1, 0.1000001, 0.0, 1.0, np.nan], [0.1, 0.5]) == [2, 1, 1]
    assert bin_counts([], PROBABILITY_BUCKETS) == [0] * (len(PROBABILITY_BUCKETS) + 1)


def test_psi_by_hand():
    assert psi([50, 50], [50, 50]) == 0.0
    expected = (0.25 - 0.5) * math.log(0.25 / 0.5) + (0.75 - 0.5) * math.log(0.75 / 0.5)
    assert psi([50, 50], [25, 75]) == pytest.approx(expected)
    # An empty bin counts as PSI_EPSILON, so the index stays finite and large.
    empty = (0.5 - 1.0) * math.log(0.5 / 1.0) + (0.5 - PSI_EPSILON) * math.log(0.5 / PSI_EPSILON)
    assert psi([100, 0], [50, 50]) == pytest.approx(empty)
    with pytest.raises(ValueError):
        psi([1, 2], [1, 2, 3])


def test_merged_bins_hold_the_least_share_of_the_reference():
    counts = [50, 1, 1, 1, 47, 0]
    ends = merged_bins(counts, min_share=0.05)
    assert ends == [1, 6]  # the short remainder (0 images) joins the last merged bin
    assert regroup(counts, ends) == [50, 50]
    assert merged_bins([0, 0]) == [2]


def test_psi_by_chance_shrinks_with_the_sample():
    counts = [300, 100, 100, 500]
    small, large = psi_by_chance(counts, 30), psi_by_chance(counts, 3000)
    assert small > large > 0
    assert psi_by_chance(counts, 30) == small  # seeded


def test_ks_from_counts_by_hand():
    assert ks_from_counts([10, 10, 0], [0, 10, 10]) == pytest.approx(0.5)
    assert ks_from_counts([5, 5], [50, 50]) == 0.0


def test_ks_from_quantiles_against_the_raw_statistic():
    rng = np.random.default_rng(3)
    reference = rng.uniform(0, 1, 5000)
    levels = quantiles(reference)
    assert levels is not None and len(levels) == 101
    assert ks_from_quantiles(levels, rng.uniform(0, 1, 5000)) < 0.04
    assert ks_from_quantiles(levels, rng.uniform(0.3, 1.3, 5000)) == pytest.approx(0.3, abs=0.03)
    # Tied percentiles (a saturated score): the CDF jumps there, and a sample at the tie fits it.
    tied = quantiles(np.r_[np.zeros(50), np.ones(50)])
    assert tied is not None
    assert ks_from_quantiles(tied, np.r_[np.zeros(5), np.ones(5)]) <= 0.02
    assert ks_from_quantiles(tied, np.ones(10)) == pytest.approx(0.5, abs=0.02)


def test_ks_p_value_by_hand():
    # n = m = 100, D = 0.2: lambda = (sqrt(50) + 0.12 + 0.11 / sqrt(50)) * 0.2 = 1.4413
    assert ks_p_value(0.2, 100, 100) == pytest.approx(0.0314, abs=0.0005)
    assert ks_p_value(0.0, 100, 100) == 1.0
    assert ks_p_value(0.5, 1000, 1000) < 1e-50


def test_reference_from_a_sample_round_trips(tmp_path):
    probabilities, ood = reference_population(400, 0)
    reference = build_reference(sample(probabilities, ood, refusals=4), "v1", "hand-made")
    assert reference.n == 404 and sum(reference.probability_counts) == sum(reference.ood_counts) == 400
    assert reference.probability_buckets == list(PROBABILITY_BUCKETS) and reference.ood_buckets == list(OOD_BUCKETS)
    assert reference.refusal_counts == {"not_a_chest_xray": 4} and reference.refusal_rate == pytest.approx(4 / 404)
    assert reference.label_counts["PNEUMONIA"] == int(np.sum(probabilities >= 0.5))
    assert reference.probability_median == pytest.approx(float(np.median(probabilities)))
    save_reference(tmp_path, reference)
    assert load_reference(tmp_path) == reference
    assert load_reference(tmp_path / "elsewhere") is None


def test_a_sample_of_the_same_population_is_stable():
    probabilities, ood = reference_population(800, 0)
    reference = build_reference(sample(probabilities, ood), "v1", "hand-made")
    fresh_probabilities, fresh_ood = reference_population(400, 1)
    result = compare(sample(fresh_probabilities, fresh_ood), reference)
    assert result.verdict == "stable", result.reasons
    assert result.probability is not None and result.ood is not None
    assert result.probability.ks_method == "raw" and result.probability.psi < result.probability.psi_chance * 2


def test_a_shifted_gate_distance_means_re_validate():
    probabilities, ood = reference_population(800, 0)
    reference = build_reference(sample(probabilities, ood), "v1", "hand-made")
    fresh_probabilities, fresh_ood = reference_population(400, 1)
    result = compare(sample(fresh_probabilities, fresh_ood * 1.4), reference)
    assert result.verdict == "re-validate"
    assert result.ood is not None and result.ood.verdict == "re-validate"
    assert result.ood.psi > 0.25 and result.ood.ks > 0.2 and result.ood.ks_p_value < 0.01
    assert result.probability is not None and result.probability.verdict == "stable"
    assert any(reason.startswith("gate distance") for reason in result.reasons)


def test_bands_follow_the_thresholds():
    probabilities, ood = reference_population(2000, 0)
    reference = build_reference(sample(probabilities, ood), "v1", "hand-made")
    fresh_probabilities, fresh_ood = reference_population(2000, 1)
    moved = sample(fresh_probabilities, fresh_ood * 1.08)
    default = compare(moved, reference)
    assert default.ood is not None and default.ood.psi > default.ood.psi_chance
    strict = DriftThresholds(psi_watch=default.ood.psi / 2, psi_revalidate=default.ood.psi / 1.5, ks_revalidate=0.01)
    assert compare(moved, reference, strict).verdict == "re-validate"
    lenient = DriftThresholds(psi_watch=1.0, psi_revalidate=2.0, ks_watch=0.9, ks_revalidate=0.95)
    assert compare(moved, reference, lenient).verdict == "stable"


def test_refusals_above_the_reference_rate():
    probabilities, ood = reference_population(800, 0)
    reference = build_reference(sample(probabilities, ood), "v1", "hand-made")
    fresh_probabilities, fresh_ood = reference_population(200, 1)
    watch = compare(sample(fresh_probabilities, fresh_ood, refusals=10), reference)  # 4.8%
    assert watch.refusal_rate.verdict == "watch" and watch.verdict == "watch"
    assert watch.refusal_rate.successes == 10 and watch.refusal_rate.n == 210
    revalidate = compare(sample(fresh_probabilities, fresh_ood, refusals=60), reference)  # 23%
    assert revalidate.refusal_rate.verdict == "re-validate" and revalidate.verdict == "re-validate"
    # Every image refused: nothing to compare but the rate.
    nothing = compare(sample([], np.array([]), refusals=40), reference)
    assert nothing.probability is None and nothing.ood is None and nothing.verdict == "re-validate"


def test_a_changed_case_mix_and_a_small_sample_say_watch():
    probabilities, ood = reference_population(800, 0)
    reference = build_reference(sample(probabilities, ood), "v1", "hand-made")
    rng = np.random.default_rng(5)
    normals = rng.choice(probabilities[probabilities < 0.5], 300)
    mix = compare(sample(normals, rng.gamma(9.0, 0.06, 300)), reference)
    assert mix.pneumonia_share.verdict == "watch" and mix.pneumonia_share.value == 0.0
    few_probabilities, few_ood = reference_population(10, 2)
    few = compare(sample(few_probabilities, few_ood), reference)
    assert few.verdict == "watch" and any("too few" in reason for reason in few.reasons)


def test_binned_ks_without_percentiles_in_the_reference():
    probabilities, ood = reference_population(800, 0)
    reference = build_reference(sample(probabilities, ood), "v1", "hand-made")
    binned = reference.model_copy(update={"probability_quantiles": None, "ood_quantiles": None})
    fresh_probabilities, fresh_ood = reference_population(400, 1)
    raw, counts_only = (
        compare(sample(fresh_probabilities, fresh_ood * 1.4), reference),
        compare(sample(fresh_probabilities, fresh_ood * 1.4), binned),
    )
    assert counts_only.ood is not None and raw.ood is not None and counts_only.ood.ks_method == "binned"
    assert counts_only.ood.ks <= raw.ood.ks + 0.02  # the bins can only hide part of a gap
