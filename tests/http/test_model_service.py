"""The two-level layout (the GPU default): HTTP workers batch their requests and send each batch
to the model service, whose adaptive batching merges them."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.support import check_prediction


def metric(text: str, name: str) -> float:
    """A metric's value summed over its series (the HTTP workers, the model service's endpoints)."""
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.split("{")[0].split(" ")[0] == name)


def test_batches_reach_the_model_service_and_agree_with_the_in_process_model(model_service_server, server, xray_files):
    payloads = [p.read_bytes() for p in xray_files]

    def post(target, index: int) -> httpx.Response:
        with target.client(key=None) as client:
            return client.post(
                "/predict", content=payloads[index % len(payloads)], headers={"Content-Type": "image/jpeg"}
            )

    with ThreadPoolExecutor(max_workers=16) as pool:
        responses = list(pool.map(lambda i: post(model_service_server, i), range(96)))
    assert [r.status_code for r in responses] == [200] * 96, [r.text for r in responses if r.status_code != 200][:3]
    with server.client() as client:
        local = [
            client.post("/predict", content=data, headers={"Content-Type": "image/jpeg"}).json() for data in payloads
        ]
    for index, response in enumerate(responses[: len(payloads)]):
        assert check_prediction(response.json()).probability == pytest.approx(local[index]["probability"], abs=1e-6)
    with model_service_server.client(key=None) as client:
        text = client.get("/metrics").text
        explained = client.post("/explain", content=payloads[0], headers={"Content-Type": "image/jpeg"})
    calls = metric(text, "pneumoscan_model_batch_size_count")
    assert metric(text, "pneumoscan_model_batch_size_sum") == 96
    assert 0 < calls < 96, "the HTTP workers sent merged batches"
    assert metric(text, "bentoml_service_adaptive_batch_size_count") > 0, "the model service batches too"
    assert metric(text, "pneumoscan_model_call_retries_total") == 0
    assert explained.status_code == 200 and explained.headers["content-type"] == "image/png"
