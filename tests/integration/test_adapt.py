"""``pneumoscan adapt`` end to end: the real CLI adapts the bundled model to a small site folder, by refitting
its classifier (the default) or by fine-tuning it."""

from __future__ import annotations

import json
import re

import numpy as np

from pneumoscan.model.predictor import Predictor, load_metadata
from pneumoscan.settings import BUNDLED_MODEL_DIR
from tests.support import make_tiny_dataset, run_cli

_VERSION = re.compile(r"^(?P<base>.+)-adapted-\d{12}-[0-9a-f]{6}$")


def _within(value: float, interval) -> bool:
    return interval[0] - 1e-12 <= value <= interval[1] + 1e-12


def test_fine_tuning_writes_a_new_version_with_its_weights_gate_and_report(fine_tuned_model_dir, site_dataset):
    adapted_model_dir = fine_tuned_model_dir
    parent, adapted = load_metadata(BUNDLED_MODEL_DIR), load_metadata(adapted_model_dir)
    match = _VERSION.match(adapted.version)
    # Too long a version loses the parent's training minute first: the recipe and its hash stay.
    assert match and match["base"] in (parent.version, re.sub(r"-\d{12}-", "-", parent.version))
    adaptation, site = adapted.adaptation, adapted.site
    assert adaptation.parent_version == site.parent_version == parent.version
    assert adaptation.method == "fine-tune" and adaptation.l2_sp_tried == []
    assert 1 <= adaptation.epochs <= adaptation.max_epochs == 2 and len(adaptation.auc_by_epoch) == 3
    assert adaptation.grouping == "file names" and adaptation.groups == 56 and adaptation.folds == 5
    assert site.n == {"NORMAL": 28, "PNEUMONIA": 28} and site.refused == {"not_a_chest_xray": 1}
    assert adapted.threshold == site.threshold and site.previous_threshold == parent.threshold
    # Before: the parent on the whole sample at its threshold; after: out of fold, with intervals.
    for figures in (adaptation.before, adaptation.after):
        assert _within(figures.auc, figures.auc_ci)
        assert figures.sensitivity.n == 28 and figures.specificity.n == 28
        assert figures.rule_sensitivity.n == 28 and _within(figures.rule_sensitivity.value, figures.rule_sensitivity.ci)
    assert adaptation.before.threshold == parent.threshold and adaptation.after.threshold == site.threshold
    assert adaptation.auc_by_epoch[0] == adaptation.before.auc
    assert adaptation.validation_before is None and adaptation.training_images_mixed == 0
    # New weights, a refitted gate that refuses the non-X-ray check set, nothing left of the parent's.
    assert (adapted_model_dir / "model.keras").read_bytes() != (BUNDLED_MODEL_DIR / "model.keras").read_bytes()
    assert adapted.gate.sha256 != parent.gate.sha256 and "refitted" in adapted.gate.rule
    assert adaptation.gate_non_xrays_passing == 0 and adaptation.gate_site_refused == 0
    for kind in ("synthetic", "photo", "medical"):
        assert adapted.gate.refusals[kind].refused == adapted.gate.refusals[kind].n
    reference = json.loads((adapted_model_dir / "drift_reference.json").read_text())
    assert reference["model_version"] == adapted.version
    card = (adapted_model_dir / "MODEL_CARD.md").read_text()
    assert card.startswith(f"# Model card: pneumonia-cnn {adapted.version}") and "## Site adaptation" in card
    assert f"{site.threshold:.4f}" in card and "Not for diagnostic use" in card
    report = (adapted_model_dir / "report.html").read_text()
    assert "data:image/png;base64," in report and "http://" not in report and "https://" not in report
    assert json.loads((adapted_model_dir / "adaptation.json").read_text())["epochs"] == adaptation.epochs
    # The version loads and scores at its own operating point, refusing what the parent refused.
    predicted = run_cli("predict", "--model", str(adapted_model_dir), str(next(site_dataset.glob("PNEUMONIA/*"))))
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    assert json.loads(predicted.stdout)["threshold"] == site.threshold
    photo = run_cli("predict", "--model", str(adapted_model_dir), str(site_dataset / "NORMAL" / "astronaut.png"))
    assert photo.returncode == 1 and "not_a_chest_xray" in photo.stdout + photo.stderr


def test_adapt_refuses_ten_per_class_and_writes_nothing(tmp_path):
    data = make_tiny_dataset(tmp_path / "small", copies=3)  # 12 of each class
    for class_dir in data.iterdir():
        for extra in sorted(class_dir.iterdir())[10:]:
            extra.unlink()
    out = tmp_path / "new-model"
    result = run_cli("adapt", "--model", str(BUNDLED_MODEL_DIR), "--data", str(data), "--out", str(out))
    assert result.returncode == 2, result.stderr[-3000:]
    assert "the sample has 10 NORMAL" in result.stderr and "10 PNEUMONIA" in result.stderr
    assert "Add 15 more NORMAL and 15 more PNEUMONIA" in result.stderr and "Nothing was written" in result.stderr
    assert list(tmp_path.iterdir()) == [tmp_path / "small"]


def test_adapt_writes_nothing_when_the_gate_would_admit_a_non_xray(tmp_path, site_dataset, monkeypatch, capsys):
    """A gate too loose for the check set (its limit raised a thousandfold) stops the adaptation: exit 1."""
    from cli import main
    from training.adapt import refit_gate as site_gate

    fitted = site_gate.refit_gate

    def loose(*args, **kwargs):
        gate, rule = fitted(*args, **kwargs)
        return type(gate)(
            layers=gate.layers, mean=gate.mean, precision=gate.precision, threshold=gate.threshold * 1e3
        ), rule

    monkeypatch.setattr(site_gate, "refit_gate", loose)
    out = tmp_path / "adapted"
    code = main(
        [
            "adapt",
            "--model",
            str(BUNDLED_MODEL_DIR),
            "--data",
            str(site_dataset),
            "--out",
            str(out),
            "--method",
            "fine-tune",
            "--max-epochs",
            "1",
        ]
    )
    assert code == 1
    error = capsys.readouterr().err
    assert "non-X-ray check set would pass" in error and "Nothing was written" in error
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_fine_tuned_gate_admits_the_sites_xrays(fine_tuned_model_dir, site_dataset):
    from pneumoscan.imaging.preprocess import load_image

    predictor = Predictor.from_dir(fine_tuned_model_dir)
    xrays = sorted(site_dataset.glob("*/*.jpeg"))
    distances = predictor.score(np.stack([load_image(p.read_bytes()) for p in xrays]))[:, 1]
    assert np.all(distances <= predictor.gate.threshold)


def test_refitting_the_classifier_moves_only_the_last_layer_and_keeps_the_gate(adapted_model_dir, site_dataset):
    from pneumoscan.imaging.preprocess import load_image
    from pneumoscan.model.predictor import load_keras_model

    parent, adapted = load_metadata(BUNDLED_MODEL_DIR), load_metadata(adapted_model_dir)
    adaptation, site = adapted.adaptation, adapted.site
    assert adaptation.method == "classifier" and adaptation.epochs == 0 and adaptation.learning_rate == 0
    assert adaptation.l2_sp in adaptation.l2_sp_tried and len(adaptation.auc_by_l2_sp) == len(adaptation.l2_sp_tried)
    assert adaptation.auc_by_epoch == [adaptation.before.auc]
    assert adaptation.frozen == ["stem", "conv1", "conv2", "conv3", "last_conv"]
    assert site.n == {"NORMAL": 28, "PNEUMONIA": 28} and site.refused == {"not_a_chest_xray": 1}
    assert _within(adaptation.after.auc, adaptation.after.auc_ci) and adaptation.after.sensitivity.n == 28
    # Every layer but the classifier holds the parent's weights; the gate is the parent's, byte for byte.
    before, after = load_keras_model(BUNDLED_MODEL_DIR), load_keras_model(adapted_model_dir)
    for old, new in zip(before.layers[:-1], after.layers[:-1], strict=True):
        assert all(np.array_equal(a, b) for a, b in zip(old.get_weights(), new.get_weights(), strict=True)), old.name
    assert not np.allclose(before.layers[-1].get_weights()[0], after.layers[-1].get_weights()[0])
    assert (adapted_model_dir / "gate.npz").read_bytes() == (BUNDLED_MODEL_DIR / "gate.npz").read_bytes()
    assert adapted.gate.threshold == parent.gate.threshold and adapted.gate.rule == parent.gate.rule
    for kind in ("synthetic", "photo", "medical"):
        assert adapted.gate.refusals[kind].refused == adapted.gate.refusals[kind].n
    # Same features, so the same distances; a different classifier, so different probabilities.
    xrays = np.stack([load_image(p.read_bytes()) for p in sorted(site_dataset.glob("*/*.jpeg"))])
    parent_scores, adapted_scores = (
        Predictor.from_dir(BUNDLED_MODEL_DIR).score(xrays),
        Predictor.from_dir(adapted_model_dir).score(xrays),
    )
    np.testing.assert_allclose(adapted_scores[:, 1], parent_scores[:, 1], rtol=1e-5)
    assert not np.allclose(adapted_scores[:, 0], parent_scores[:, 0])
    card = (adapted_model_dir / "MODEL_CARD.md").read_text()
    assert "only the classifier (the last layer) was refitted" in card and f"**L2-SP {adaptation.l2_sp:g}**" in card
    assert "is the parent's, unchanged" in card
    assert json.loads((adapted_model_dir / "adaptation.json").read_text())["method"] == "classifier"
    photo = run_cli("predict", "--model", str(adapted_model_dir), str(site_dataset / "NORMAL" / "astronaut.png"))
    assert photo.returncode == 1 and "not_a_chest_xray" in photo.stdout + photo.stderr


def test_refitting_the_classifier_writes_nothing_when_the_parents_gate_admits_a_non_xray(
    tmp_path, site_dataset, capsys
):
    """A parent whose gate limit is a thousandfold too loose: the kept gate would admit the check set."""
    import shutil

    from cli import main

    parent = tmp_path / "loose-parent"
    shutil.copytree(BUNDLED_MODEL_DIR, parent)
    metadata = json.loads((parent / "metadata.json").read_text())
    metadata["gate"]["threshold"] *= 1e3
    (parent / "metadata.json").write_text(json.dumps(metadata))
    out = tmp_path / "adapted"
    assert main(["adapt", "--model", str(parent), "--data", str(site_dataset), "--out", str(out)]) == 1
    error = capsys.readouterr().err
    assert "The input gate the adaptation keeps (the parent's) fails:" in error
    assert "non-X-ray check set would pass" in error
    assert "Nothing was written; --method fine-tune refits the gate" in error
    assert not out.exists()


def test_max_epochs_without_fine_tuning_is_refused(tmp_path, site_dataset, capsys):
    from cli import main

    out = tmp_path / "adapted"
    command = ["adapt", "--model", str(BUNDLED_MODEL_DIR), "--data", str(site_dataset), "--out", str(out)]
    assert main([*command, "--max-epochs", "2"]) == 2
    assert "--max-epochs counts fine-tuning epochs" in capsys.readouterr().err and not out.exists()
