"""The real HTTP service: happy paths, every error case, batching, the API key, health."""

from __future__ import annotations

import io
import re
from concurrent.futures import ThreadPoolExecutor

import httpx
import pydicom
import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.diagnosticreport import DiagnosticReport

from pneumoscan.model.predictor import load_metadata
from pneumoscan.schemas import BatchItemError, BatchItemResult, BatchResponse
from pneumoscan.settings import BUNDLED_MODEL_DIR
from tests.support import METADATA, assert_error, check_prediction, encode, png_bomb
from tests.support.dicom_files import PATIENT_ID, PATIENT_NAME, make_dicom


def test_predict_multipart_and_raw_body_agree(server, xray_files):
    with server.client() as client:
        for path in xray_files:
            data = path.read_bytes()
            multipart = client.post("/predict", files={"image": (path.name, data, "image/jpeg")})
            raw = client.post("/predict", content=data, headers={"Content-Type": "image/jpeg"})
            assert multipart.status_code == raw.status_code == 200, (multipart.text, raw.text)
            first, second = check_prediction(multipart.json()), check_prediction(raw.json())
            assert first.probability == pytest.approx(second.probability, abs=1e-6)
            assert first.request_id != second.request_id
            # A JSON result carries its request id in the body; FHIR answers and errors in a header.
            assert "x-request-id" not in multipart.headers


def test_bundled_model_separates_the_fixture_classes(server, xray_files):
    with server.client() as client:
        probabilities = {
            path: client.post("/predict", content=path.read_bytes(), headers={"Content-Type": "image/jpeg"}).json()[
                "probability"
            ]
            for path in xray_files
        }
    pneumonia = [p for path, p in probabilities.items() if path.parent.name == "PNEUMONIA"]
    normal = [p for path, p in probabilities.items() if path.parent.name == "NORMAL"]
    assert sum(pneumonia) / len(pneumonia) > sum(normal) / len(normal)


def test_predict_png_body(server, xray_image):
    with server.client() as client:
        response = client.post("/predict", content=encode(xray_image, "PNG"), headers={"Content-Type": "image/png"})
    assert response.status_code == 200
    check_prediction(response.json())


def test_predict_batch_keeps_order_and_isolates_bad_items(server, xray_files):
    files = [("images", (p.name, p.read_bytes(), "image/jpeg")) for p in xray_files[:3]]
    files.insert(1, ("images", ("notes.txt", b"not an x-ray", "text/plain")))
    files.append(("images", ("empty.jpeg", b"", "image/jpeg")))
    with server.client() as client:
        response = client.post("/predict_batch", files=files)
    assert response.status_code == 200, response.text
    batch = BatchResponse.model_validate(response.json())
    assert [item.filename for item in batch.results] == [name for _, (name, _, _) in files]
    kinds = [type(item) for item in batch.results]
    assert kinds == [BatchItemResult, BatchItemError, BatchItemResult, BatchItemResult, BatchItemError]
    assert batch.results[1].error.code == "not_an_image"
    assert batch.results[4].error.code == "empty_image"
    with server.client() as client:
        single = client.post("/predict", content=xray_files[0].read_bytes(), headers={"Content-Type": "image/jpeg"})
    assert batch.results[0].probability == pytest.approx(single.json()["probability"], abs=1e-6)


def test_predict_batch_refuses_too_many_items(server, xray_bytes):
    files = [("images", (f"{i}.jpeg", b"x", "image/jpeg")) for i in range(9)]
    with server.client() as client:
        assert_error(client.post("/predict_batch", files=files), 413, "too_many_images")
        assert_error(client.post("/predict_batch", files={"other": ("a.jpeg", xray_bytes)}), 400, "missing_image")
        assert_error(
            client.post("/predict_batch", content=xray_bytes, headers={"Content-Type": "image/jpeg"}),
            415,
            "unsupported_media_type",
        )


@pytest.mark.parametrize(
    ("content", "content_type", "status", "code"),
    [
        (b"", "image/jpeg", 400, "empty_image"),
        (b"", None, 400, "missing_image"),
        (b"plain text, not an image" * 20, "image/jpeg", 422, "not_an_image"),
        (b"{}", "application/json", 415, "unsupported_media_type"),
        (b"hello", "text/plain", 415, "unsupported_media_type"),
    ],
)
def test_bad_raw_bodies(server, content, content_type, status, code):
    headers = {"Content-Type": content_type} if content_type else {}
    with server.client() as client:
        assert_error(client.post("/predict", content=content, headers=headers), status, code)


def test_missing_multipart_field(server, xray_bytes):
    with server.client() as client:
        response = client.post("/predict", files={"picture": ("a.jpeg", xray_bytes, "image/jpeg")})
    assert_error(response, 400, "missing_image")


def test_truncated_and_corrupt_images(server, xray_bytes):
    with server.client() as client:
        half = client.post(
            "/predict", content=xray_bytes[: len(xray_bytes) // 2], headers={"Content-Type": "image/jpeg"}
        )
        assert_error(half, 422, "truncated_image")
        header_only = client.post("/predict", files={"image": ("a.jpeg", xray_bytes[:200], "image/jpeg")})
        assert header_only.status_code == 422
        assert header_only.json()["error"] in {"truncated_image", "not_an_image"}


def test_other_image_formats_are_unsupported(server, xray_image):
    with server.client() as client:
        response = client.post("/predict", files={"image": ("a.gif", encode(xray_image, "GIF"), "image/gif")})
    assert_error(response, 415, "unsupported_format")


def test_too_many_pixels(server):
    with server.client() as client:
        response = client.post("/predict", content=png_bomb(60_000, 60_000), headers={"Content-Type": "image/png"})
    assert_error(response, 413, "image_too_large")


def test_upload_over_the_size_limit(server):
    big = b"\xff\xd8" + b"\0" * (3 * 1024 * 1024)
    with server.client() as client:
        declared = client.post("/predict", content=big, headers={"Content-Type": "image/jpeg"})
        assert_error(declared, 413, "upload_too_large")

        def chunks():
            for _ in range(48):
                yield b"\0" * 65536

        streamed = client.post("/predict", content=chunks(), headers={"Content-Type": "image/jpeg"})
        assert_error(streamed, 413, "upload_too_large")


def test_api_key(server, xray_bytes):
    jpeg = {"Content-Type": "image/jpeg"}
    with server.client(key=None) as anonymous:
        body = assert_error(anonymous.post("/predict", content=xray_bytes, headers=jpeg), 401, "unauthorized")
        assert "Bearer" in body["detail"]
        assert_error(anonymous.post("/predict_batch", files={"images": ("a", xray_bytes)}), 401, "unauthorized")
        for path in ("/livez", "/healthz", "/readyz", "/metrics", "/docs.json", "/", "/version"):
            assert anonymous.get(path).status_code == 200, path
    with server.client(key="wrong") as wrong:
        assert_error(wrong.post("/predict", content=xray_bytes, headers=jpeg), 401, "unauthorized")


def test_openapi_documents_the_endpoints(server):
    with server.client(key=None) as client:
        spec = client.get("/docs.json").json()
    predict = spec["paths"]["/predict"]["post"]
    assert {"multipart/form-data", "image/jpeg", "image/png", "application/dicom"} <= set(
        predict["requestBody"]["content"]
    )
    assert "200" in predict["responses"] and "413" in predict["responses"]
    assert "application/fhir+json" in predict["responses"]["200"]["content"]
    assert "/predict_batch" in spec["paths"]
    assert "/version" in spec["paths"]


def test_version_names_the_bundled_model(server):
    metadata = load_metadata(BUNDLED_MODEL_DIR)
    with server.client() as client:
        served = client.get("/version").json()
    assert served["version"] == metadata.version and served["threshold"] == metadata.threshold
    assert served["site_calibrated"] is False and served["site"] is None and served["threshold_overridden"] is False


def _batch_size_counts(metrics: str) -> tuple[float, float]:
    """(observations of batch size <= 1, all observations) of the images-per-model-call histogram."""
    ones = total = 0.0
    for line in metrics.splitlines():
        if not line.startswith("pneumoscan_model_batch_size_"):
            continue
        value = float(line.rsplit(" ", 1)[1])
        if line.startswith("pneumoscan_model_batch_size_bucket") and 'le="1.0"' in line:
            ones += value
        elif line.startswith("pneumoscan_model_batch_size_count"):
            total += value
    return ones, total


def test_concurrent_requests_are_batched(server, xray_files):
    payloads = [p.read_bytes() for p in xray_files]
    with server.client(key=None) as client:
        ones_before, total_before = _batch_size_counts(client.get("/metrics").text)

    def post(index: int) -> httpx.Response:
        with server.client() as client:
            return client.post(
                "/predict", content=payloads[index % len(payloads)], headers={"Content-Type": "image/jpeg"}
            )

    with ThreadPoolExecutor(max_workers=32) as pool:
        responses = list(pool.map(post, range(256)))
    refused = [(r.status_code, r.text) for r in responses if r.status_code != 200]
    assert not refused, f"{len(refused)} of 256 refused, e.g. {refused[:3]}"
    with server.client(key=None) as client:
        ones_after, total_after = _batch_size_counts(client.get("/metrics").text)
    batches = total_after - total_before
    assert 0 < batches < 256, "256 images should arrive in fewer, merged model calls"
    assert batches - (ones_after - ones_before) > 0, "no model call of more than one image"


def test_request_log_has_hashes_not_names(server, xray_bytes):
    secret_name = "Doe-Jane-1970-01-01.jpeg"
    with server.client() as client:
        response = client.post("/predict", files={"image": (secret_name, xray_bytes, "image/jpeg")})
    request_id = response.json()["request_id"]
    log = server.log()
    line = next(line for line in log.splitlines() if request_id in line and "pneumoscan.requests" in line)
    assert re.search(r'"sha256":"[0-9a-f]{64}"', line)
    assert f'"bytes":{len(xray_bytes)}' in line and '"latency_ms":' in line and METADATA.version in line
    assert secret_name not in log


def test_dicom_in_fhir_out(server, xray_image):
    dicom = make_dicom(xray_image, bits=16, photometric="MONOCHROME1", modality="CR")
    dicom_headers = {"Content-Type": "application/dicom"}
    with server.client() as client:
        png = client.post("/predict", content=encode(xray_image, "PNG"), headers={"Content-Type": "image/png"})
        plain = client.post("/predict", content=dicom, headers=dicom_headers)
        fhir = client.post("/predict", content=dicom, headers={**dicom_headers, "Accept": "application/fhir+json"})
        refused = client.post("/predict", content=make_dicom(xray_image, modality="CT"), headers=dicom_headers)
        batch = client.post("/predict_batch", files=[("images", ("a.dcm", dicom, "application/dicom"))])
        bundle = client.post(
            "/predict_batch",
            files=[("images", ("a.dcm", dicom, "application/dicom"))],
            headers={"Accept": "application/fhir+json"},
        )
    assert check_prediction(plain.json()).probability == pytest.approx(png.json()["probability"], abs=1e-6)
    assert batch.json()["results"][0]["probability"] == pytest.approx(png.json()["probability"], abs=1e-6)
    assert fhir.status_code == 200 and fhir.headers["content-type"].startswith("application/fhir+json")
    assert Bundle.model_validate_json(fhir.text).type == "collection"
    resources = {entry["resource"]["resourceType"]: entry["resource"] for entry in fhir.json()["entry"]}
    assert list(resources) == ["DiagnosticReport", "Observation", "Device", "Provenance"]
    report = DiagnosticReport.model_validate(resources["DiagnosticReport"])
    uids = pydicom.dcmread(io.BytesIO(dicom), stop_before_pixels=True)
    assert (
        report.status == "preliminary" and report.imagingStudy[0].identifier.value == f"urn:oid:{uids.StudyInstanceUID}"
    )
    observation = resources["Observation"]
    probability = next(c for c in observation["component"] if c["code"]["coding"][0]["code"] == "probability")
    assert probability["valueQuantity"]["value"] == pytest.approx(png.json()["probability"], abs=1e-6)
    assert resources["Device"]["version"][0]["value"] == METADATA.version
    assert_error(refused, 422, "unsupported_modality")
    assert Bundle.model_validate_json(bundle.text).type == "collection"
    assert [e["resource"]["resourceType"] for e in bundle.json()["entry"]] == list(resources)
    log = server.log()
    assert PATIENT_NAME.split("^")[0] not in log and PATIENT_ID not in log


def test_server_still_answers_after_bad_inputs(server, xray_bytes):
    with server.client() as client:
        response = client.post("/predict", content=xray_bytes, headers={"Content-Type": "image/jpeg"})
        assert response.status_code == 200
        assert client.get("/readyz").status_code == 200
    assert " 500 " not in server.log() and "status=500" not in server.log()


def test_unknown_paths_and_wrong_methods_answer_in_the_error_shape(server):
    fhir = {"Accept": "application/fhir+json"}
    with server.client() as client:
        missing = client.get("/no/such/path")
        missing_fhir = client.get("/no/such/path", headers=fhir)
        wrong_method = client.delete("/predict")  # a route of the mounted app
        wrong_method_outside = client.post("/livez")  # one of BentoML's own routes
    assert_error(missing, 404, "not_found")
    assert missing_fhir.status_code == 404 and missing_fhir.headers["content-type"].startswith("application/fhir+json")
    assert missing_fhir.json()["issue"][0]["details"]["coding"][0]["code"] == "not_found"
    for response in (wrong_method, wrong_method_outside):
        assert_error(response, 405, "method_not_allowed")
        assert response.headers["allow"]
