"""The HTTP adapter and middleware in-process (httpx ASGI transport), with a stand-in model call.

The real model and the real server are exercised in tests/http; here the model is replaced by
a deterministic function of the decoded pixels, so ordering and error mapping are checked fast.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import uuid
from pathlib import Path

import httpx
import numpy as np
import pydicom
import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.diagnosticreport import DiagnosticReport
from fhir.resources.R4B.operationoutcome import OperationOutcome
from PIL import Image

from pneumoscan import errors
from pneumoscan.access.clients import KeysFile
from pneumoscan.imaging.preprocess import load_image
from pneumoscan.schemas import BatchResponse, PredictionResponse
from service.http.access import Access, AccessMiddleware, operations
from service.http.app import create_app, routes
from service.http.batcher import MicroBatcher
from service.http.context import ModelInfo
from service.http.errors import Overloaded, status_for
from service.http.middleware import BodyLimitMiddleware, InFlightLimitMiddleware, ReadinessMiddleware, is_open
from tests.support import STAND_IN_DECISION, encode, stand_in_heatmap, stand_in_scores
from tests.support.dicom_files import PATIENT_ID, PATIENT_NAME, make_dicom

INFO = ModelInfo(decision=STAND_IN_DECISION, max_pixels=50_000_000, max_batch_items=4, timeout_s=5.0)
calls: list[int] = []


async def mean_pixel(planes: np.ndarray) -> np.ndarray:
    calls.append(len(planes))
    return stand_in_scores(planes)


def guarded_by_key(app, inner=None, key: str = "k") -> AccessMiddleware:
    """``inner`` (the app by default) behind the access middleware with one shared key and no trail."""
    access = Access(keys=KeysFile(Path("/nonexistent/keys.json")), shared_key=key)
    return AccessMiddleware(inner or app, access, operations(routes()), is_open)


def client_for(app) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


@pytest.fixture()
def app():
    calls.clear()
    batcher = MicroBatcher(mean_pixel, max_batch_size=2, latency_budget_s=5.0)
    return create_app(get_infer=lambda: batcher, get_explain=lambda: stand_in_heatmap, get_info=lambda: INFO)


def test_status_mapping_follows_the_error_tree():
    assert status_for(errors.TruncatedImage("x")) == 422
    assert status_for(errors.NotAnImage("x")) == 422
    assert status_for(errors.EmptyImage("x")) == 400
    assert status_for(errors.ImageTooLarge("x")) == 413
    assert status_for(errors.UnsupportedFormat("x")) == 415
    assert status_for(Overloaded("x")) == 503
    assert status_for(errors.ModelError("x")) == 500


def test_a_queue_that_cannot_be_reached_is_503_with_retry_after():
    from service.http.errors import error_response

    response = error_response(errors.QueueUnavailable("down"))
    assert response.status_code == 503 and response.headers["Retry-After"] == "5"
    assert json.loads(response.body) == {"error": "queue_unavailable", "detail": "down"}


def test_predict_uses_the_core_decoder(app, xray_bytes):
    async def scenario():
        async with client_for(app) as client:
            return await client.post("/predict", content=xray_bytes, headers={"Content-Type": "image/jpeg"})

    response = asyncio.run(scenario())
    assert response.status_code == 200
    prediction = PredictionResponse.model_validate(response.json())
    assert prediction.probability == pytest.approx(float(load_image(xray_bytes).mean()), rel=1e-6)
    assert prediction.label == ("PNEUMONIA" if prediction.probability >= 0.5 else "NORMAL")
    assert prediction.model_version == "test-1"


def test_batch_results_keep_upload_order_and_chunk_model_calls(app, xray_files):
    files = [("images", (p.name, p.read_bytes(), "image/jpeg")) for p in xray_files[:3]]
    files.insert(2, ("images", ("bad.png", b"\x89PNG\r\n\x1a\nbroken", "image/png")))

    async def scenario():
        async with client_for(app) as client:
            return await client.post("/predict_batch", files=files)

    response = asyncio.run(scenario())
    assert response.status_code == 200, response.text
    results = BatchResponse.model_validate(response.json()).results
    assert [r.filename for r in results] == [f[1][0] for f in files]
    assert results[2].error.code in {"truncated_image", "not_an_image"}
    for result, path in zip([results[0], results[1], results[3]], xray_files[:3], strict=False):
        assert result.probability == pytest.approx(float(load_image(path.read_bytes()).mean()), rel=1e-6)
    assert sorted(calls) == [1, 2], "three good images in model calls of at most the batcher's size"


def test_too_many_batch_items(app, xray_bytes):
    files = [("images", (f"{i}.jpeg", xray_bytes, "image/jpeg")) for i in range(5)]

    async def scenario():
        async with client_for(app) as client:
            return await client.post("/predict_batch", files=files)

    response = asyncio.run(scenario())
    assert response.status_code == 413 and response.json()["error"] == "too_many_images"
    assert calls == []


def test_in_flight_limit_answers_overloaded_at_once():
    release = asyncio.Event()

    async def slow_app(scope, receive, send):
        await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    limited = InFlightLimitMiddleware(slow_app, limit=2)

    async def scenario():
        async with client_for(limited) as client:
            first = [asyncio.create_task(client.post("/predict")) for _ in range(2)]
            await asyncio.sleep(0.05)
            refused = await client.post("/predict")
            health = asyncio.create_task(client.get("/readyz"))
            release.set()
            return refused, await asyncio.gather(*first), await health

    refused, admitted, health = asyncio.run(scenario())
    assert refused.status_code == 503
    assert refused.json()["error"] == "overloaded" and refused.headers["retry-after"] == "1"
    assert [r.status_code for r in admitted] == [200, 200]
    assert health.status_code == 200
    assert limited.in_flight == 0


def test_body_limit_and_api_key_middleware(app, xray_bytes):
    guarded = guarded_by_key(app, BodyLimitMiddleware(app, max_bytes=1000))

    async def scenario():
        async with client_for(guarded) as client:
            jpeg = {"Content-Type": "image/jpeg"}
            no_key = await client.post("/predict", content=xray_bytes, headers=jpeg)
            too_big = await client.post("/predict", content=xray_bytes, headers={**jpeg, "Authorization": "Bearer k"})

            async def stream():
                for _ in range(10):
                    yield b"\0" * 500

            streamed = await client.post("/predict", content=stream(), headers={**jpeg, "Authorization": "Bearer k"})
            return no_key, too_big, streamed

    no_key, too_big, streamed = asyncio.run(scenario())
    assert no_key.status_code == 401 and no_key.json()["error"] == "unauthorized"
    assert no_key.headers["www-authenticate"] == "Bearer"
    assert too_big.status_code == 413 and too_big.json()["error"] == "upload_too_large"
    assert streamed.status_code == 413 and streamed.json()["error"] == "upload_too_large"


def probe_app(behaviour: str):
    """Stands in for BentoML's probe of the model service: answers, raises, or never answers."""

    async def app(scope, receive, send):
        if behaviour == "raises":
            raise TimeoutError
        if behaviour == "hangs":
            await asyncio.sleep(3600)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    return app


@pytest.mark.parametrize("behaviour", ["raises", "hangs"])
def test_readiness_probe_answers_503_while_the_model_starts(behaviour):
    probe = ReadinessMiddleware(probe_app(behaviour), seconds=0.2)

    async def scenario():
        async with client_for(probe) as client:
            return await client.get("/readyz"), await client.get("/readyz", headers={"Accept": "application/fhir+json"})

    plain, fhir = asyncio.run(scenario())
    assert plain.status_code == 503 and plain.json()["error"] == "not_ready"
    assert fhir.status_code == 503
    assert OperationOutcome.model_validate_json(fhir.text).issue[0].code == "transient"


def test_readiness_probe_passes_answers_and_other_paths_through():
    async def scenario():
        async with client_for(ReadinessMiddleware(probe_app("answers"), seconds=0.2)) as client:
            ready = await client.get("/readyz")
        async with client_for(ReadinessMiddleware(probe_app("raises"), seconds=0.2)) as client:
            with pytest.raises(TimeoutError):
                await client.get("/predict")
        return ready

    ready = asyncio.run(scenario())
    assert ready.status_code == 200 and ready.text == "ok"


def post_all(app, requests: list[dict]) -> list[httpx.Response]:
    async def scenario():
        async with client_for(app) as client:
            return [await client.post(**request) for request in requests]

    return asyncio.run(scenario())


def test_dicom_bodies_and_parts_are_scored_like_the_png(app, xray_image):
    dicom = make_dicom(xray_image, bits=16, photometric="MONOCHROME1")
    expected = float(load_image(encode(xray_image, "PNG")).mean())
    raw, multipart, batch = post_all(
        app,
        [
            {"url": "/predict", "content": dicom, "headers": {"Content-Type": "application/dicom"}},
            {"url": "/predict", "files": {"image": ("chest.dcm", dicom, "application/dicom")}},
            {
                "url": "/predict_batch",
                "files": [
                    ("images", ("a.dcm", dicom, "application/dicom")),
                    ("images", ("ct.dcm", make_dicom(xray_image, modality="CT"), "application/dicom")),
                ],
            },
        ],
    )
    for response in (raw, multipart):
        assert response.status_code == 200, response.text
        assert response.json()["probability"] == pytest.approx(expected, rel=1e-6)
    results = BatchResponse.model_validate(batch.json()).results
    assert results[0].probability == pytest.approx(expected, rel=1e-6)
    assert results[1].error.code == "unsupported_modality"


@pytest.mark.parametrize(
    ("variant", "status", "code"),
    [
        ({"pixel_data": False}, 422, "no_pixel_data"),
        ({"frames": 2}, 422, "multi_frame_image"),
        ({"colour": True}, 422, "unsupported_mode"),
        ({"modality": "MR"}, 422, "unsupported_modality"),
    ],
)
def test_unusable_dicom_gets_a_clear_4xx(app, xray_image, variant, status, code):
    (response,) = post_all(
        app,
        [
            {
                "url": "/predict",
                "content": make_dicom(xray_image, **variant),
                "headers": {"Content-Type": "application/dicom"},
            }
        ],
    )
    assert response.status_code == status and response.json()["error"] == code
    assert PATIENT_NAME not in response.text and PATIENT_ID not in response.text


def test_fhir_is_negotiated_by_accept(app, xray_image, xray_bytes):
    dataset = pydicom.dcmread(io.BytesIO(make_dicom(xray_image)))
    dataset.IssuerOfPatientID, dataset.AccessionNumber = "HOSPITAL-A", "ACC-1"
    dataset.AcquisitionDate, dataset.AcquisitionTime, dataset.TimezoneOffsetFromUTC = "20261130", "101502", "+0100"
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    dicom = buffer.getvalue()
    fhir = {"Accept": "application/fhir+json;q=1.0, application/json;q=0.5"}
    from_dicom, from_jpeg, plain = post_all(
        app,
        [
            {"url": "/predict", "content": dicom, "headers": {"Content-Type": "application/dicom", **fhir}},
            {"url": "/predict", "content": xray_bytes, "headers": {"Content-Type": "image/jpeg", **fhir}},
            {
                "url": "/predict",
                "content": dicom,
                "headers": {"Content-Type": "application/dicom", "Accept": "application/json"},
            },
        ],
    )
    assert from_dicom.headers["content-type"].startswith("application/fhir+json")
    bundle = Bundle.model_validate_json(from_dicom.text)
    assert bundle.type == "collection"
    report = DiagnosticReport.model_validate(from_dicom.json()["entry"][0]["resource"])
    study_uid = pydicom.dcmread(io.BytesIO(dicom)).StudyInstanceUID
    assert [(s.type, s.identifier.value) for s in report.imagingStudy] == [("ImagingStudy", f"urn:oid:{study_uid}")]
    assert report.status == "preliminary"
    request_id = f"urn:uuid:{uuid.UUID(from_dicom.headers['x-request-id'])}"
    assert bundle.identifier.value == request_id
    # The report is the image's (its SOP Instance UID, the model version, the threshold), whatever the request.
    again = Bundle.model_validate_json(
        post_all(
            app, [{"url": "/predict", "content": dicom, "headers": {"Content-Type": "application/dicom", **fhir}}]
        )[0].text
    )
    assert report.identifier[0].value == again.entry[0].resource.identifier[0].value != request_id
    # Filed under the patient (by identifier only, never by name), the order and the acquisition time.
    assert report.subject.identifier.value == PATIENT_ID and report.subject.identifier.assigner.display == "HOSPITAL-A"
    assert report.basedOn[0].identifier.value == "ACC-1" and report.basedOn[0].identifier.type.coding[0].code == "ACSN"
    assert str(report.effectiveDateTime) in ("2026-11-30T10:15:02+01:00", "2026-11-30 10:15:02+01:00")
    assert PATIENT_NAME.split("^")[0] not in from_dicom.text
    assert PATIENT_ID not in plain.text
    jpeg_entries = from_jpeg.json()["entry"]
    assert [e["resource"]["resourceType"] for e in jpeg_entries] == [
        "DiagnosticReport",
        "Observation",
        "Device",
        "Provenance",
    ]
    assert "imagingStudy" not in jpeg_entries[0]["resource"] and "subject" not in jpeg_entries[0]["resource"]
    assert PredictionResponse.model_validate(plain.json()).label in {"NORMAL", "PNEUMONIA"}


def test_fhir_clients_get_errors_as_operation_outcomes(app, xray_image):
    fhir = {"Accept": "application/fhir+json"}
    guarded = guarded_by_key(app)
    refused, unauthorized = post_all(
        guarded,
        [
            {
                "url": "/predict",
                "content": make_dicom(xray_image, modality="CT"),
                "headers": {"Content-Type": "application/dicom", "Authorization": "Bearer k", **fhir},
            },
            {"url": "/predict", "content": b"x", "headers": {"Content-Type": "image/png", **fhir}},
        ],
    )
    for response, status, code, issue_type in (
        (refused, 422, "unsupported_modality", "invalid"),
        (unauthorized, 401, "unauthorized", "security"),
    ):
        assert response.status_code == status
        assert response.headers["content-type"].startswith("application/fhir+json")
        issue = OperationOutcome.model_validate_json(response.text).issue[0]
        assert issue.severity == "error" and issue.code == issue_type
        assert issue.details.coding[0].code == code and issue.diagnostics


def test_dicom_results_carry_their_uids(app, xray_image, xray_bytes):
    dicom = make_dicom(xray_image)
    uids = pydicom.dcmread(io.BytesIO(dicom), stop_before_pixels=True)
    single, batch = post_all(
        app,
        [
            {"url": "/predict", "content": dicom, "headers": {"Content-Type": "application/dicom"}},
            {
                "url": "/predict_batch",
                "files": [
                    ("images", ("a.dcm", dicom, "application/dicom")),
                    ("images", ("b.jpeg", xray_bytes, "image/jpeg")),
                ],
            },
        ],
    )
    first, second = batch.json()["results"]
    for result in (single.json(), first):
        assert (result["study_instance_uid"], result["series_instance_uid"], result["sop_instance_uid"]) == (
            uids.StudyInstanceUID,
            uids.SeriesInstanceUID,
            uids.SOPInstanceUID,
        )
    assert second["sop_instance_uid"] is None


def test_fhir_batch_is_a_bundle_in_upload_order(app, xray_image, xray_bytes):
    dicom = make_dicom(xray_image)
    (response,) = post_all(
        app,
        [
            {
                "url": "/predict_batch",
                "headers": {"Accept": "application/fhir+json"},
                "files": [
                    ("images", ("a.dcm", dicom, "application/dicom")),
                    ("images", ("b.jpeg", xray_bytes, "image/jpeg")),
                    ("images", ("ct.dcm", make_dicom(xray_image, modality="CT"), "application/dicom")),
                ],
            }
        ],
    )
    assert response.status_code == 200 and response.headers["content-type"].startswith("application/fhir+json")
    bundle = Bundle.model_validate_json(response.text)
    assert bundle.type == "collection"
    assert bundle.identifier.value == f"urn:uuid:{uuid.UUID(response.headers['x-request-id'])}"
    entries = response.json()["entry"]
    assert [entry["resource"]["resourceType"] for entry in entries] == [
        "DiagnosticReport",
        "Observation",
        "Device",
        "Provenance",  # a.dcm
        "DiagnosticReport",
        "Observation",
        "Provenance",  # b.jpeg: the one Device is already in the Bundle
        "OperationOutcome",
    ]  # ct.dcm
    first, second, refused = entries[0]["resource"], entries[4]["resource"], entries[7]["resource"]
    DiagnosticReport.model_validate(first)
    assert first["imagingStudy"][0]["identifier"]["system"] == "urn:dicom:uid" and "imagingStudy" not in second
    assert first["identifier"] != second["identifier"]
    assert entries[5]["resource"]["device"]["reference"] == entries[2]["fullUrl"]
    issue = OperationOutcome.model_validate(refused).issue[0]
    assert issue.details.coding[0].code == "unsupported_modality" and issue.code == "invalid"
    assert len({entry["fullUrl"] for entry in entries}) == len(entries)
    assert "contained" not in response.text


def test_gate_refusals_and_flags_through_the_adapter(xray_bytes, xray_image):
    """The stand-in model calls dark images out of distribution: refused by default, flagged on request."""
    dark = encode(Image.fromarray((np.asarray(xray_image, dtype=np.float32) * 0.15).astype(np.uint8)), "PNG")
    flag_info = dataclasses.replace(INFO, decision=dataclasses.replace(STAND_IN_DECISION, ood_policy="flag"))
    refusing = create_app(get_infer=lambda: mean_pixel, get_explain=lambda: stand_in_heatmap, get_info=lambda: INFO)
    flagging = create_app(
        get_infer=lambda: mean_pixel, get_explain=lambda: stand_in_heatmap, get_info=lambda: flag_info
    )
    parts = [("images", ("dark.png", dark, "image/png")), ("images", ("chest.jpeg", xray_bytes, "image/jpeg"))]

    async def scenario():
        async with client_for(refusing) as client, client_for(flagging) as flag_client:
            return (
                await client.post("/predict", content=dark, headers={"Content-Type": "image/png"}),
                await client.post("/predict_batch", files=parts),
                await flag_client.post("/predict", content=dark, headers={"Content-Type": "image/png"}),
                await client.post("/predict", content=xray_bytes, headers={"Content-Type": "image/jpeg"}),
            )

    refused, batch, flagged, passed = asyncio.run(scenario())
    assert refused.status_code == 422 and refused.json()["error"] == "not_a_chest_xray"
    results = BatchResponse.model_validate(batch.json()).results
    assert results[0].error.code == "not_a_chest_xray" and results[1].label in ("NORMAL", "PNEUMONIA")
    body = PredictionResponse.model_validate(flagged.json())
    assert body.out_of_distribution and body.ood_score == pytest.approx(2.0)
    assert PredictionResponse.model_validate(passed.json()).out_of_distribution is False


def test_core_and_http_agree_on_the_fhir_issue_type_of_every_core_error():
    """Job exports pick issue types in the core, HTTP answers from the status: they must match."""
    from pneumoscan.reports.fhir import outcome_for as core_outcome_for
    from service.http.errors import outcome_for as http_outcome_for

    core_classes = [
        cls for cls in vars(errors).values() if isinstance(cls, type) and issubclass(cls, errors.PneumoscanError)
    ]
    assert len(core_classes) > 20
    for cls in core_classes:
        error = cls("detail")
        assert core_outcome_for(error).issue[0].code == http_outcome_for(error).issue[0].code, cls.__name__


def test_accept_q_zero_is_respected_and_nothing_acceptable_is_406(app, xray_bytes):
    image = {"url": "/predict", "content": xray_bytes}
    plain, refused_fhir, nothing, anything = post_all(
        app,
        [
            {
                **image,
                "headers": {"Content-Type": "image/jpeg", "Accept": "application/fhir+json;q=0, application/json"},
            },
            {**image, "headers": {"Content-Type": "image/jpeg", "Accept": "application/fhir+json;q=0"}},
            {**image, "headers": {"Content-Type": "image/jpeg", "Accept": "text/csv"}},
            {**image, "headers": {"Content-Type": "image/jpeg", "Accept": "*/*"}},
        ],
    )
    assert plain.status_code == 200 and plain.headers["content-type"].startswith("application/json")
    assert refused_fhir.status_code == 406 and refused_fhir.json()["error"] == "not_acceptable"
    assert nothing.status_code == 406
    assert anything.status_code == 200 and PredictionResponse.model_validate(anything.json())


def test_export_status_follows_bulk_data_while_a_job_runs():
    from pneumoscan.schemas import JobStatus
    from service.http.routes.jobs import export_in_progress

    queued = export_in_progress(JobStatus(job_id="j", state="queued", total=512))
    assert queued.status_code == 202 and queued.headers["x-progress"] == "0 of 512 files scored"
    assert queued.headers["retry-after"] == "5", "no estimate yet: poll again soon"
    running = export_in_progress(JobStatus(job_id="j", state="running", total=512, done=120, eta_seconds=900.0))
    assert running.headers["x-progress"] == "120 of 512 files scored" and running.headers["retry-after"] == "60"
    nearly = export_in_progress(JobStatus(job_id="j", state="running", total=512, done=511, eta_seconds=0.2))
    assert nearly.headers["retry-after"] == "1"
    assert export_in_progress(JobStatus(job_id="j", state="done", total=512, done=512)) is None
    assert export_in_progress(JobStatus(job_id="j", state="failed", total=512, done=3)) is None, "409 as before"


def test_unknown_paths_and_wrong_methods_answer_in_the_error_shape(app):
    """In the app itself, and in BentoML's outer app, which mounts it with its ``PassiveMount``:
    a path the app has no route for never reaches it, and the outer router's plain text is reshaped."""
    from _bentoml_impl.server.mount import PassiveMount
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    from service.http.middleware import RoutingErrorMiddleware

    outer = RoutingErrorMiddleware(
        Starlette(
            routes=[
                Route("/healthz", lambda request: PlainTextResponse("ok")),
                PassiveMount("/", app),
            ]
        )
    )

    async def scenario():
        answers = []
        for target in (app, outer):
            async with client_for(target) as client:
                answers.append(
                    (
                        await client.get("/no/such/path"),
                        await client.get("/predict"),
                        await client.get("/no/such/path", headers={"Accept": "application/fhir+json"}),
                    )
                )
        async with client_for(outer) as client:
            answers.append((await client.post("/healthz"), await client.get("/healthz")))
        return answers

    *answers, (wrong_method_outside, healthz) = asyncio.run(scenario())
    for missing, wrong_method, missing_fhir in answers:
        assert missing.status_code == 404 and missing.json()["error"] == "not_found" and missing.json()["detail"]
        assert wrong_method.status_code == 405 and wrong_method.json()["error"] == "method_not_allowed"
        assert "POST" in wrong_method.headers["allow"]
        assert missing_fhir.status_code == 404
        assert missing_fhir.headers["content-type"].startswith("application/fhir+json")
        issue = OperationOutcome.model_validate_json(missing_fhir.text).issue[0]
        assert issue.code == "not-found" and issue.details.coding[0].code == "not_found"
    assert wrong_method_outside.status_code == 405 and wrong_method_outside.json()["error"] == "method_not_allowed"
    assert set(wrong_method_outside.headers["allow"].split(", ")) == {"GET", "HEAD"}
    assert healthz.status_code == 200 and healthz.text == "ok", "other answers pass through untouched"
