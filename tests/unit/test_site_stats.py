"""Intervals, threshold rules and site data, on hand-made cases with known answers."""

from __future__ import annotations

from datetime import UTC
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from pneumoscan.errors import DataError
from pneumoscan.intervals import wilson_interval
from training.site.calibrate import SampleTooSmall, check_sample, site_version
from training.site.data import data_fingerprint, read_labels, site_examples
from training.site.scores import SiteScores, raw_logits
from training.stats import (
    Counts,
    Rule,
    bootstrap_auc,
    choose_threshold,
    cross_validated,
    needed_per_class,
    stratified_folds,
)

# Scores of 4 normal and 4 pneumonia images; one normal (0.6) above one pneumonia (0.4).
LABELS = np.array([0, 0, 0, 0, 1, 1, 1, 1])
SCORES = np.array([0.1, 0.2, 0.3, 0.6, 0.4, 0.7, 0.8, 0.9])


@pytest.mark.parametrize(
    ("successes", "n", "expected"),
    [
        (0, 10, (0.0, 0.2775)),  # the upper end is z^2 / (n + z^2)
        (10, 10, (0.7225, 1.0)),
        (5, 10, (0.2366, 0.7634)),
        (81, 263, (0.2553, 0.3662)),  # Newcombe (1998), table I example
    ],
)
def test_wilson_interval_matches_published_values(successes, n, expected):
    low, high = wilson_interval(successes, n)
    assert (round(low, 4), round(high, 4)) == expected


def test_wilson_interval_needs_data():
    assert wilson_interval(0, 0) is None
    with pytest.raises(ValueError):
        wilson_interval(11, 10)


def test_bootstrap_auc_is_seeded_and_covers_the_estimate():
    rng = np.random.default_rng(3)
    labels = np.repeat([0, 1], [60, 90])
    scores = rng.normal(size=150) + 1.2 * labels
    auc, (low, high) = bootstrap_auc(labels, scores, resamples=2000, seed=1)
    assert auc == pytest.approx(roc_auc_score(labels, scores))
    assert low < auc < high and high - low < 0.25
    assert bootstrap_auc(labels, scores, resamples=2000, seed=1)[1] == (low, high)
    assert bootstrap_auc(labels, scores, resamples=2000, seed=2)[1] != (low, high)


def test_bootstrap_auc_counts_ties_as_half_and_separation_as_one():
    assert bootstrap_auc(np.array([0, 1]), np.array([0.5, 0.5]), resamples=50)[1] == (0.5, 0.5)
    assert bootstrap_auc(LABELS, np.arange(8.0), resamples=50) == (1.0, (1.0, 1.0))
    with pytest.raises(ValueError, match="both classes"):
        bootstrap_auc(np.ones(4), np.arange(4.0))


def test_rules_parse_and_refuse_nonsense():
    assert str(Rule.parse("youden")) == "youden"
    assert Rule.parse("Sensitivity:0.95") == Rule("sensitivity", 0.95)
    assert Rule.parse("specificity:0.90").target == 0.9
    for bad in ("sensitivity", "sensitivity:1.2", "specificity:abc", "accuracy:0.9", "youden:0.5"):
        with pytest.raises(ValueError, match="Unknown rule"):
            Rule.parse(bad)


def test_youden_threshold_lies_halfway_between_the_classes_it_separates():
    threshold = choose_threshold(LABELS, SCORES, Rule.parse("youden"))
    # J is 0.75 both at 0.65 (3 of 4 found, no false alarm) and at 0.35; the higher wins.
    assert threshold == pytest.approx(0.65)
    assert Counts.at(LABELS, SCORES, threshold) == Counts(tp=3, fp=0, tn=4, fn=1)


def test_sensitivity_rule_takes_the_highest_threshold_that_reaches_it():
    threshold = choose_threshold(LABELS, SCORES, Rule.parse("sensitivity:0.95"))
    assert threshold == pytest.approx(0.35)  # below 0.4, the lowest pneumonia score
    assert Counts.at(LABELS, SCORES, threshold).fn == 0
    assert choose_threshold(LABELS, SCORES, Rule.parse("sensitivity:0.75")) == pytest.approx(0.65)


def test_specificity_rule_takes_the_lowest_threshold_that_reaches_it():
    threshold = choose_threshold(LABELS, SCORES, Rule.parse("specificity:0.90"))
    assert threshold == pytest.approx(0.65)  # above 0.6, the highest normal score
    # 0.75 keeps 3 of 4 normals below: down to halfway between 0.3 (a normal) and 0.4.
    assert choose_threshold(LABELS, SCORES, Rule.parse("specificity:0.7")) == pytest.approx(0.35)


def test_counts_give_every_proportion():
    counts = Counts.at(LABELS, SCORES, 0.5)
    assert counts == Counts(tp=3, fp=1, tn=3, fn=1)
    assert counts.proportions() == {"sensitivity": (3, 4), "specificity": (3, 4), "ppv": (3, 4), "npv": (3, 4)}


def test_cross_validation_counts_every_image_once_on_its_held_fold():
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], [40, 60])
    scores = rng.normal(size=100) + 2 * labels
    folds = stratified_folds(labels, 5, seed=0)
    assert [np.bincount(labels[folds == f]).tolist() for f in range(5)] == [[8, 12]] * 5
    counts, thresholds = cross_validated(labels, scores, Rule.parse("youden"), folds=5, seed=0)
    assert counts.tp + counts.fn == 60 and counts.tn + counts.fp == 40
    assert len(thresholds) == 5


def test_out_of_sample_is_no_better_than_in_sample_on_noise():
    rng = np.random.default_rng(5)
    labels = np.repeat([0, 1], 100)
    scores = rng.random(200)  # no signal: any threshold's in-sample J is luck
    rule = Rule.parse("youden")
    threshold = choose_threshold(labels, scores, rule)
    inside = Counts.at(labels, scores, threshold)
    outside, _ = cross_validated(labels, scores, rule, folds=5, seed=0)
    j = lambda c: c.tp / (c.tp + c.fn) + c.tn / (c.tn + c.fp) - 1  # noqa: E731
    assert j(outside) < j(inside)


def test_needed_per_class_grows_with_the_target():
    assert needed_per_class(Rule.parse("youden"), 25) == {0: 25, 1: 25}
    assert needed_per_class(Rule.parse("sensitivity:0.95"), 25) == {0: 25, 1: 60}
    assert needed_per_class(Rule.parse("specificity:0.90"), 25) == {0: 30, 1: 25}


def _scores(normal: int, pneumonia: int) -> SiteScores:
    labels = np.repeat([0, 1], [normal, pneumonia])
    return SiteScores(
        files=[], paths=[], labels=labels, probabilities=labels * 0.5, ood_scores=np.zeros(len(labels)), refused=[]
    )


def test_a_small_sample_is_refused_with_how_many_more_are_needed():
    with pytest.raises(SampleTooSmall) as raised:
        check_sample(_scores(10, 10), Rule.parse("youden"))
    assert "Add 15 more NORMAL and 15 more PNEUMONIA" in raised.value.detail
    with pytest.raises(SampleTooSmall, match="Add 30 more PNEUMONIA"):
        check_sample(_scores(40, 30), Rule.parse("sensitivity:0.95"))
    check_sample(_scores(25, 25), Rule.parse("youden"))


def test_site_versions_change_with_each_calibration_and_do_not_nest():
    from datetime import datetime

    when = datetime(2026, 12, 2, 10, 30, tzinfo=UTC)
    first = site_version("tuned-202611301430-21085280", "ab" * 32, Rule.parse("youden"), 0.7, when)
    assert first.startswith("tuned-202611301430-21085280-site-202612021030-")
    again = site_version(first, "cd" * 32, Rule.parse("youden"), 0.8, when)
    assert again.startswith("tuned-202611301430-21085280-site-") and again.count("-site-") == 1 and again != first
    assert len(again) <= 63 and again == again.lower()


def test_raw_logits_undo_the_temperature():
    logits = np.array([-3.0, 0.0, 2.5])
    probabilities = 1 / (1 + np.exp(-logits / 0.5))
    assert raw_logits(probabilities, 0.5) == pytest.approx(logits)


def _write(path, data=b"x"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def test_labels_csv_names_files_relative_to_the_data_folder(tmp_path):
    _write(tmp_path / "a" / "one.png", b"1")
    _write(tmp_path / "two.jpeg", b"2")
    (tmp_path / "labels.csv").write_text("file,label\na/one.png,PNEUMONIA\ntwo.jpeg,normal\n")
    examples = read_labels(tmp_path, tmp_path / "labels.csv")
    assert [(e.path.name, e.label) for e in examples] == [("one.png", 1), ("two.jpeg", 0)]
    fingerprint = data_fingerprint(examples, tmp_path)
    (tmp_path / "labels.csv").write_text("file,label\na/one.png,NORMAL\ntwo.jpeg,normal\n")
    assert data_fingerprint(read_labels(tmp_path, tmp_path / "labels.csv"), tmp_path) != fingerprint


def test_labels_csv_problems_are_listed_by_line(tmp_path):
    _write(tmp_path / "data" / "one.png")
    _write(tmp_path / "secret.png")
    (tmp_path / "labels.csv").write_text(
        "file,label\none.png,PNEUMONIA\none.png,NORMAL\n../secret.png,NORMAL\nmissing.png,NORMAL\none.png,COVID\n,NORMAL\n"
    )
    with pytest.raises(DataError) as raised:
        read_labels(tmp_path / "data", tmp_path / "labels.csv")
    detail = raised.value.detail
    for expected in (
        "line 3: one.png is listed twice",
        "line 4: ../secret.png is outside",
        "line 5: missing.png does not exist",
        "line 6: label 'COVID' is not NORMAL or PNEUMONIA",
        "line 7: no file",
    ):
        assert expected in detail
    (tmp_path / "bad.csv").write_text("path,truth\none.png,NORMAL\n")
    with pytest.raises(DataError, match="needs the columns file,label"):
        site_examples(tmp_path / "data", tmp_path / "bad.csv")


def test_split_keeps_each_patient_on_one_side_and_both_classes_on_both(tmp_path):
    from training.site.split import split_site

    data = tmp_path / "data"
    for name in (
        "person1_bacteria_1.jpeg",
        "person1_bacteria_2.jpeg",
        "person2_virus_3.jpeg",
        "person3_bacteria_4.jpeg",
        "person4_virus_5.jpeg",
    ):
        _write(data / "PNEUMONIA" / name, name.encode())
    for number in range(4):
        _write(data / "NORMAL" / f"IM-000{number}-0001.jpeg", bytes([number]))
    counts = split_site(data, tmp_path / "out", 0.5, seed=3)
    assert sum(counts["calibration"].values()) + sum(counts["held_out"].values()) == 9
    assert counts["calibration"]["NORMAL"] == counts["held_out"]["NORMAL"] == 2
    sides = {part: {p.name for p in (tmp_path / "out" / part).rglob("*.jpeg")} for part in ("calibration", "held_out")}
    assert not sides["calibration"] & sides["held_out"]
    person1 = {"person1_bacteria_1.jpeg", "person1_bacteria_2.jpeg"}
    assert person1 <= sides["calibration"] or person1 <= sides["held_out"]
    assert (tmp_path / "out" / "held_out" / "NORMAL").is_dir() and (
        tmp_path / "out" / "calibration" / "PNEUMONIA"
    ).is_dir()
    with pytest.raises(DataError, match="not empty"):
        split_site(data, tmp_path / "out", 0.5)


def test_derived_versions_fit_a_bentoml_tag():
    from datetime import datetime

    from training.adapt.pipeline import adapted_version
    from training.site.calibrate import MAX_VERSION_LENGTH

    when = datetime(2026, 12, 6, 21, 5, tzinfo=UTC)
    short = adapted_version("framed-202612062021-a2c4ee02", "ab" * 32, 5, 0.3, when)
    assert short.startswith("framed-202612062021-a2c4ee02-adapted-202612062105-")
    for parent in ("framed-202612062021-a2c4ee02", "a-very-long-recipe-name-here-202612062021-a2c4ee02"):
        adapted = adapted_version(parent, "ab" * 32, 5, 0.3, when)
        calibrated = site_version(adapted, "cd" * 32, Rule.parse("youden"), 0.4, when)
        assert len(adapted) <= MAX_VERSION_LENGTH and len(calibrated) <= MAX_VERSION_LENGTH
        assert "-a2c4ee02-adapted-202612062105-" in adapted
        assert calibrated.count("-site-202612062105-") == 1
    trained = "framed-swap-distilled-202612071310-833345fd"
    long_recipe = site_version(trained, "cd" * 32, Rule.parse("youden"), 0.4, when)
    assert long_recipe.startswith("framed-swap-distilled-833345fd-site-202612062105-"), "the recipe is kept whole"
    assert adapted_version(trained, "ab" * 32, 5, 0.3, when).startswith(
        "framed-swap-distilled-833345fd-adapted-202612062105-"
    )


def _site_scores(labels: np.ndarray, probabilities: np.ndarray) -> SiteScores:
    paths = [Path(f"{i}.jpeg") for i in range(len(labels))]
    return SiteScores(
        files=[p.name for p in paths],
        paths=paths,
        labels=labels,
        probabilities=probabilities,
        ood_scores=np.zeros(len(labels)),
        refused=[],
    )


def test_resplits_keep_each_patient_on_one_side_and_count_the_held_parts():
    from training.site.resplit import resplit
    from training.site.split import calibration_patients

    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 60)
    patients = [f"p{i // 2}" for i in range(len(labels))]  # two images each, one class each
    chosen = calibration_patients(labels, patients, 0.25, np.random.default_rng(1))
    normal_patients = {p for p, label in zip(patients, labels, strict=True) if label == 0}
    assert len(chosen) == 2 * round(30 * 0.25) and len(normal_patients & chosen) == round(30 * 0.25)
    separated = resplit(_site_scores(labels, np.where(labels == 1, 0.8, 0.2)), 1.0, patients, Rule.parse("youden"))
    assert separated.splits == 100 and separated.reaching == 100
    assert separated.sensitivity == [1.0, 1.0, 1.0] and separated.best_specificity == 1.0
    noise = resplit(_site_scores(labels, rng.uniform(size=len(labels))), 1.0, patients, Rule.parse("youden"), splits=30)
    assert noise.sensitivity[1] <= noise.sensitivity[0] <= noise.sensitivity[2] and noise.reaching < 30
    assert noise.best_specificity is not None and noise.best_specificity < 0.9, "noise cannot reach the corner"


def test_resplits_with_adaptation_refit_the_classifier_on_each_part():
    """A parent whose logit is noise, over features of which one carries the label: calibrating
    cannot rank the held parts, a classifier refitted on each part can."""
    from training.site.resplit import resplit

    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 60)
    patients = [f"p{i}" for i in range(len(labels))]
    features = rng.normal(size=(len(labels), 4))
    features[:, 0] += 3.0 * labels
    logits = rng.normal(size=len(labels))
    scores = _site_scores(labels, 1.0 / (1.0 + np.exp(-logits)))
    calibrated = resplit(scores, 1.0, patients, Rule.parse("youden"), splits=10)
    adapted = resplit(scores, 1.0, patients, Rule.parse("youden"), splits=10, adapting=(features, logits))
    assert not calibrated.adapted and adapted.adapted and adapted.splits == 10
    assert calibrated.auc[0] < 0.7 < 0.95 < adapted.auc[0]
    assert adapted.reaching > calibrated.reaching
