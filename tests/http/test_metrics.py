"""What the model answers, on the real service's ``/metrics``: the probability and gate-distance
histograms, the results by label and the refusals by code, per model version, and the reference
figures of the served model's ``drift_reference.json``."""

from __future__ import annotations

import math
from collections import Counter

from pneumoscan.monitoring.bins import OOD_BUCKETS, PROBABILITY_BUCKETS
from pneumoscan.monitoring.drift import load_reference
from pneumoscan.settings import BUNDLED_MODEL_DIR
from tests.support import check_prediction, grey_photo
from tests.support.prometheus import has_sample, samples, value

PHOTO = grey_photo("astronaut")


def _buckets(text: str, name: str, version: str) -> dict[float, float]:
    """The cumulative bucket counts of a histogram, by upper edge."""
    return {
        float(labels["le"]): count
        for sample, labels, count in samples(text)
        if sample == f"{name}_bucket" and labels.get("model_version") == version
    }


def _expected_buckets(values: list[float], edges: tuple[float, ...]) -> dict[float, float]:
    return {**{edge: float(sum(v <= edge for v in values)) for edge in edges}, math.inf: float(len(values))}


def _delta(before: dict[float, float], after: dict[float, float]) -> dict[float, float]:
    return {edge: count - before.get(edge, 0.0) for edge, count in after.items()}


def test_results_and_refusals_are_counted_per_model_version(server, xray_files):
    with server.client() as client:
        before = client.get("/metrics").text
        predictions = []
        for path in xray_files[:4]:
            response = client.post("/predict", content=path.read_bytes(), headers={"Content-Type": "image/jpeg"})
            predictions.append(check_prediction(response.json()))
        refused = client.post("/predict", content=PHOTO, headers={"Content-Type": "image/png"})
        assert refused.status_code == 422 and refused.json()["error"] == "not_a_chest_xray", refused.text
        files = [("images", (p.name, p.read_bytes(), "image/jpeg")) for p in xray_files[4:6]]
        files += [("images", ("photo.png", PHOTO, "image/png")), ("images", ("empty.png", b"", "image/png"))]
        batch = client.post("/predict_batch", files=files)
        assert batch.status_code == 200, batch.text
        items = batch.json()["results"]
        predictions += [check_prediction({**item, "request_id": "-"}) for item in items[:2]]
        assert [item["error"]["code"] for item in items[2:]] == ["not_a_chest_xray", "empty_image"]
        after = client.get("/metrics").text

    version = predictions[0].model_version
    labels = Counter(p.label for p in predictions)
    for label in ("NORMAL", "PNEUMONIA"):
        counted = value(after, "pneumoscan_results_total", model_version=version, label=label)
        assert counted - value(before, "pneumoscan_results_total", model_version=version, label=label) == labels[label]
    refusals = {"not_a_chest_xray": 2, "empty_image": 1}
    for code, count in refusals.items():
        counted = value(after, "pneumoscan_refusals_total", model_version=version, code=code)
        assert counted - value(before, "pneumoscan_refusals_total", model_version=version, code=code) == count

    # Each probability falls in its bin of pneumoscan.monitoring.bins's edges.
    name = "pneumoscan_result_probability"
    probability = _delta(_buckets(before, name, version), _buckets(after, name, version))
    assert probability == _expected_buckets([p.probability for p in predictions], PROBABILITY_BUCKETS)

    # The gate's distances: every scored image's in its bin, and the two refused photographs'
    # above the refusal line (1, the gate's limit).
    name = "pneumoscan_result_ood_score"
    ood = _delta(_buckets(before, name, version), _buckets(after, name, version))
    distances = [p.ood_score for p in predictions if p.ood_score is not None]
    assert len(distances) == len(predictions), "the bundled model has a gate"
    scored = _expected_buckets(distances, OOD_BUCKETS)
    assert all(ood[edge] == scored[edge] for edge in OOD_BUCKETS if edge <= 1.0)
    assert ood[math.inf] == len(predictions) + refusals["not_a_chest_xray"]


def test_the_reference_figures_of_the_served_model(server):
    with server.client() as client:
        text = client.get("/metrics").text
        version = client.get("/version").json()["version"]
    for name in ("pneumoscan_result_probability", "pneumoscan_result_ood_score"):
        assert f"# TYPE {name} histogram" in text
    reference = load_reference(BUNDLED_MODEL_DIR)
    gauges = {
        "pneumoscan_reference_pneumonia_share": reference and reference.pneumonia_share,
        "pneumoscan_reference_refusal_rate": reference and reference.refusal_rate,
        "pneumoscan_reference_ood_score_median": reference and reference.ood_median,
    }
    for name, expected in gauges.items():
        if expected is None:  # a model saved without a reference: nothing to compare with
            assert not has_sample(text, name), name
        else:
            assert has_sample(text, name, model_version=version), name
            assert value(text, name, model_version=version) == expected, name
