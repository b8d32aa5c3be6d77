"""Architectures, the Predictor and model loading."""

from __future__ import annotations

import numpy as np
import pytest

from pneumoscan.errors import ModelError
from pneumoscan.model.architectures import LAST_CONV_LAYER, build_seed_model, build_tuned_model
from pneumoscan.model.decision import label_for
from pneumoscan.model.predictor import Predictor, load_metadata, warm_up_sizes


def test_seed_architecture_matches_the_course():
    model = build_seed_model()
    assert model.count_params() == 3_725_314
    shapes = [tuple(layer.output.shape[1:]) for layer in model.layers[1:]]
    assert shapes == [(126, 126, 64), (63, 63, 64), (61, 61, 64), (30, 30, 64), (57600,), (64,), (2,)]
    assert model.get_layer(LAST_CONV_LAYER).output.shape[1:] == (61, 61, 64)
    assert model.layers[-1].activation.__name__ == "softmax"


def test_tuned_architecture_keeps_the_interface():
    model = build_tuned_model()
    assert tuple(model.input.shape[1:]) == (128, 128, 3)
    assert tuple(model.output.shape[1:]) == (2,)
    assert model.get_layer(LAST_CONV_LAYER) is not None
    assert model.count_params() * 4 < 16 * 1024 * 1024  # fits the bundled-model size limit
    probabilities = model(np.random.default_rng(0).random((3, 128, 128, 3), dtype=np.float32)).numpy()
    assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)


def test_predictor_labels_by_threshold():
    model = build_seed_model()
    predictor = Predictor(model, threshold=0.3, model_version="test-1")
    batch = np.random.default_rng(1).random((4, 128, 128, 3), dtype=np.float32)
    probabilities = predictor.predict_proba(batch)
    assert probabilities.shape == (4,)
    expected = model(batch).numpy()[:, 1]
    assert np.allclose(probabilities, expected, atol=1e-6)
    for prediction, probability in zip(predictor.judge(predictor.score(batch)), probabilities, strict=False):
        assert prediction.model_version == "test-1"
        assert prediction.threshold == 0.3
        assert prediction.label == ("PNEUMONIA" if probability >= 0.3 else "NORMAL")
        assert prediction.ood_score is None and not prediction.out_of_distribution  # no gate
    assert predictor.predict_proba(np.zeros((0, 128, 128, 3), np.float32)).shape == (0,)
    with pytest.raises(ValueError):
        predictor.predict_proba(np.zeros((2, 64, 64, 3), np.float32))
    with pytest.raises(ValueError):
        Predictor(model, threshold=1.5, model_version="x")


def test_warm_up_covers_every_padded_batch_size():
    assert warm_up_sizes(1) == [1]
    assert warm_up_sizes(32) == [1, 2, 4, 8, 16, 32]
    assert warm_up_sizes(48) == [1, 2, 4, 8, 16, 32, 48]  # 48 pads to 64 under JAX
    seen = []
    predictor = Predictor(build_seed_model(), threshold=0.5, model_version="test-1")
    forward = predictor._forward
    predictor._forward = lambda batch: seen.append(batch.shape[0]) or forward(batch)
    predictor.warm_up(8)
    assert seen == [1, 2, 4, 8]


def test_label_for_is_inclusive():
    assert label_for(0.5, 0.5) == "PNEUMONIA"
    assert label_for(0.4999, 0.5) == "NORMAL"


def test_missing_model_is_a_model_error(tmp_path):
    with pytest.raises(ModelError):
        load_metadata(tmp_path)
    (tmp_path / "metadata.json").write_text("{not json")
    with pytest.raises(ModelError):
        load_metadata(tmp_path)
    with pytest.raises(ModelError):
        Predictor.from_dir(tmp_path)
