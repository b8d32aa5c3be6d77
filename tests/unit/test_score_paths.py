"""``score_paths``, the one file-scoring loop: results in order, decoding one batch ahead at most,
and every file in flight named before each batch (what a crashed worker's lease blames)."""

from __future__ import annotations

import pytest

from pneumoscan.model import scoring as predict
from pneumoscan.model.architectures import build_seed_model
from pneumoscan.model.predictor import Predictor
from tests.support import xray_paths


@pytest.fixture(scope="module")
def predictor():
    return Predictor(build_seed_model(), threshold=0.5, model_version="test")


@pytest.fixture
def decoded(monkeypatch):
    """The paths handed to the decoder, in the order decoding started."""
    started = []
    real = predict.read_and_decode

    def counting(path, max_pixels):
        started.append(path)
        return real(path, max_pixels)

    monkeypatch.setattr(predict, "read_and_decode", counting)
    return started


@pytest.mark.parametrize("overlap", [True, False])
def test_results_in_order_with_the_files_in_flight_named_first(predictor, decoded, tmp_path, overlap):
    paths = xray_paths()[:5]
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    paths.insert(2, broken)
    in_flight, ahead = [], []

    def before_batch(chunk):
        in_flight.append([path.name for path in chunk])
        ahead.append(len(decoded))

    results = list(
        predict.score_paths(
            predictor, paths, batch_size=2, decode_threads=2, overlap=overlap, before_batch=before_batch
        )
    )
    assert [result.file for result in results] == [str(path) for path in paths]
    assert [result.ok for result in results] == [True, True, False, True, True, True]
    assert results[2].error.code == "not_an_image"
    names = [path.name for path in paths]
    if overlap:
        assert in_flight == [names[0:4], names[2:6], names[4:6]]
    else:
        assert in_flight == [names[0:2], names[2:4], names[4:6]]
    # Decoding never runs more than one batch ahead of the batch being scored.
    assert all(count <= 2 * (index + 1) for index, count in enumerate(ahead))
    assert sorted(decoded) == sorted(paths)
