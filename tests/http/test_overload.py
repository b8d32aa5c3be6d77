"""Overload: the model queue sheds requests with a quick 503 "overloaded", never a 500."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor


def test_overload_is_a_clear_503(overloaded_server, xray_bytes):
    def post(_: int):
        with overloaded_server.client(key=None) as client:
            return client.post("/predict", content=xray_bytes, headers={"Content-Type": "image/jpeg"})

    with ThreadPoolExecutor(max_workers=32) as pool:
        responses = list(pool.map(post, range(128)))
    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {200, 503}, sorted(set(statuses))
    shed = [r for r in responses if r.status_code == 503]
    assert shed, "a 5 ms batching budget under 32 clients must shed some requests"
    for response in shed:
        assert response.json()["error"] == "overloaded"
        assert response.headers["retry-after"] == "1"
    log = overloaded_server.log()
    assert log.count('"error":"overloaded"') >= len(shed)
    assert "Traceback" not in log, "shed requests are logged as one line each, without a traceback"
    with overloaded_server.client(key=None) as client:
        assert client.get("/readyz").status_code == 200
        assert client.post("/predict", content=b"", headers={"Content-Type": "image/jpeg"}).status_code == 400
