"""``POST /explain`` on the real service: a PNG overlay at the input's aspect with its legend, headers, errors."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from pneumoscan.model.legend import HEADERS
from tests.support import METADATA, assert_error, encode
from tests.support.dicom_files import make_dicom
from tests.support.explanations import assert_explained


def assert_overlay(response, size: tuple[int, int]) -> None:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    with Image.open(io.BytesIO(response.content)) as image:
        assert image.format == "PNG"
        pixels = np.asarray(assert_explained(image, size), dtype=np.int16)
    # A grayscale X-ray has R == G == B everywhere; a varying tint is the heatmap.
    assert np.abs(pixels[..., 0] - pixels[..., 2]).std() > 1, "the heatmap is blank"


def test_explain_returns_the_overlay_and_the_prediction(server, xray_files, xray_image):
    path = next(p for p in xray_files if p.parent.name == "PNEUMONIA")
    data = path.read_bytes()
    size = Image.open(path).size
    with server.client() as client:
        response = client.post("/explain", content=data, headers={"Content-Type": "image/jpeg"})
        predicted = client.post("/predict", content=data, headers={"Content-Type": "image/jpeg"}).json()
        # A portrait crop sent as a multipart PNG: the overlay must follow that aspect too. (Half the
        # chest squeezed to the model's square is refused by the input gate; three quarters is not.)
        portrait = xray_image.crop((xray_image.width // 8, 0, 7 * xray_image.width // 8, xray_image.height))
        cropped = client.post("/explain", files={"image": ("crop.png", encode(portrait, "PNG"), "image/png")})
        dicom = client.post(
            "/explain",
            content=make_dicom(xray_image, photometric="MONOCHROME1", bits=16),
            headers={"Content-Type": "application/dicom"},
        )
    assert_overlay(response, size)
    assert_overlay(cropped, portrait.size)
    assert_overlay(dicom, xray_image.size)
    headers = response.headers
    # The headers are /predict's JSON result, field for field.
    assert headers["x-pneumoscan-out-of-distribution"] == str(predicted["out_of_distribution"]).lower()
    assert float(headers["x-pneumoscan-ood-score"]) == pytest.approx(predicted["ood_score"], abs=1e-6)
    assert {header.lower() for header, _ in HEADERS.values()} <= set(headers)
    assert float(headers["x-pneumoscan-probability"]) == pytest.approx(predicted["probability"], abs=1e-6)
    assert headers["x-pneumoscan-label"] == predicted["label"]
    assert float(headers["x-pneumoscan-threshold"]) == METADATA.threshold
    assert headers["x-pneumoscan-model-version"] == METADATA.version
    assert len(headers["x-request-id"]) == 32 and headers["x-request-id"] != cropped.headers["x-request-id"]


def test_explain_errors_and_documentation(server, xray_bytes):
    with server.client() as client:
        assert_error(
            client.post("/explain", content=b"not an x-ray" * 20, headers={"Content-Type": "image/jpeg"}),
            422,
            "not_an_image",
        )
        assert_error(client.post("/explain", content=b"", headers={"Content-Type": "image/png"}), 400, "empty_image")
        assert_error(
            client.post("/explain", content=b"{}", headers={"Content-Type": "application/json"}),
            415,
            "unsupported_media_type",
        )
    with server.client(key=None) as anonymous:
        assert_error(
            anonymous.post("/explain", content=xray_bytes, headers={"Content-Type": "image/jpeg"}), 401, "unauthorized"
        )
        spec = anonymous.get("/docs.json").json()
    explain = spec["paths"]["/explain"]["post"]
    assert "image/png" in explain["responses"]["200"]["content"]
    assert {"multipart/form-data", "image/jpeg", "image/png"} <= set(explain["requestBody"]["content"])
    assert {"413", "422", "503"} <= set(explain["responses"])
