"""``POST /explain`` in-process (httpx ASGI transport) with stand-in model calls."""

from __future__ import annotations

import asyncio
import dataclasses
import io

import httpx
import numpy as np
from PIL import Image

from pneumoscan.model.legend import HEADERS
from service.http.app import create_app
from service.http.context import ModelInfo
from tests.support import STAND_IN_DECISION, stand_in_heatmap, stand_in_scores
from tests.support.explanations import assert_explained

INFO = ModelInfo(decision=STAND_IN_DECISION, max_pixels=50_000_000, max_batch_items=4, timeout_s=5.0)


def explanation_value(value: object) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


async def mean_pixel(planes: np.ndarray) -> np.ndarray:
    return stand_in_scores(planes)


def test_explain_route_answers_png_with_headers_or_json_errors(xray_files):
    app = create_app(get_infer=lambda: mean_pixel, get_explain=lambda: stand_in_heatmap, get_info=lambda: INFO)
    path = xray_files[-1]
    width, height = Image.open(path).size

    async def scenario():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            good = await client.post("/explain", files={"image": (path.name, path.read_bytes(), "image/jpeg")})
            bad = await client.post("/explain", content=b"junk" * 10, headers={"Content-Type": "image/jpeg"})
            predicted = await client.post("/predict", content=path.read_bytes(), headers={"Content-Type": "image/jpeg"})
            return good, bad, predicted.json()

    good, bad, predicted = asyncio.run(scenario())
    assert good.status_code == 200 and good.headers["content-type"] == "image/png"
    probability = float(good.headers["x-pneumoscan-probability"])
    assert good.headers["x-pneumoscan-label"] == ("PNEUMONIA" if probability >= 0.5 else "NORMAL")
    assert good.headers["x-pneumoscan-model-version"] == "test-1" and good.headers["x-request-id"]
    # The headers are /predict's JSON result, field for field.
    assert {field: good.headers[header] for field, (header, _) in HEADERS.items() if header in good.headers} == {
        field: explanation_value(predicted[field]) for field in HEADERS if predicted.get(field) is not None
    }
    with Image.open(io.BytesIO(good.content)) as image:
        assert_explained(image, (width, height))
    assert bad.status_code == 422 and bad.json()["error"] == "not_an_image"
    operation = app.openapi()["paths"]["/explain"]["post"]
    assert list(operation["responses"]["200"]["content"]) == ["image/png"]
    assert "image/jpeg" in operation["requestBody"]["content"]
    assert bad.headers["x-request-id"], "error responses carry the request id too"


def test_explain_without_tensorflow_answers_501(xray_bytes):
    info = dataclasses.replace(INFO, explanations=False)
    app = create_app(get_infer=lambda: mean_pixel, get_explain=lambda: stand_in_heatmap, get_info=lambda: info)

    async def scenario():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            return await client.post("/explain", content=xray_bytes, headers={"Content-Type": "image/jpeg"})

    response = asyncio.run(scenario())
    assert response.status_code == 501 and response.json()["error"] == "explanation_unavailable"
