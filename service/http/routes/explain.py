"""``POST /explain``: one X-ray in, its Grad-CAM overlay with its legend out as a PNG, the result in headers.

The upload is read and decoded exactly as for ``/predict``; the plane is scored through the
batcher (the path ``/predict`` uses, so both report the same probability) and the model computes
the heatmap. The picture and the headers are rendered from one ``Result``
(``pneumoscan.model.legend``), as ``pneumoscan explain`` renders its PNG and its JSON line.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import anyio
import numpy as np
from fastapi import APIRouter, Request
from starlette.responses import Response

from pneumoscan.access.clients import Scope
from pneumoscan.errors import PneumoscanError
from pneumoscan.imaging.preprocess import decode, resize_plane
from pneumoscan.model.decision import judge_scores
from pneumoscan.model.legend import HEADERS, explained_png, explanation_headers
from pneumoscan.result import Result
from service.http.access import audited, scoped
from service.http.context import (
    ERROR_RESPONSES,
    IMAGE_BODY,
    in_decode_thread,
    model_call,
    model_info,
    read_single_image,
    request_record,
)
from service.http.errors import ExplanationUnavailable

# uint8 plane (128, 128) -> float32 heatmap (h, w) in [0, 1].
ExplainFn = Callable[[np.ndarray], Awaitable[np.ndarray]]
router = APIRouter()
PNG_RESPONSE = {
    "description": (
        "The X-ray with the Grad-CAM heatmap of P(pneumonia) over it, above a legend (the not-for-diagnostic-use "
        "banner, the result, a colour bar); the result in X-Pneumoscan-* headers."
    ),
    "content": {"image/png": {"schema": {"type": "string", "format": "binary"}}},
    "headers": {
        name: {"schema": {"type": "string"}, "description": description}
        for name, description in [*HEADERS.values(), ("X-Request-Id", "this request's id, as in the request log")]
    },
}
RESPONSES: dict[int | str, dict[str, Any]] = dict([(200, PNG_RESPONSE), *ERROR_RESPONSES.items()])


@router.post(
    "/explain",
    response_class=Response,
    responses=RESPONSES,
    **scoped(Scope.SCORE, "explain", IMAGE_BODY),
    summary="Grad-CAM explanation of one chest X-ray as a PNG (same upload forms as /predict)",
)
async def explain(request: Request) -> Response:
    info = model_info(request)
    async with request_record(request, "explain", info) as record:
        if not info.explanations:
            raise ExplanationUnavailable(
                "Grad-CAM explanations need Keras' TensorFlow backend; this service runs another "
                "(KERAS_BACKEND). /predict is unaffected."
            )
        data = await read_single_image(request)
        sha256 = hashlib.sha256(data).hexdigest()
        record.update(bytes=len(data), sha256=sha256)
        decoded = await in_decode_thread(request, partial(decode, data, max_pixels=info.max_pixels))
        image = decoded.image
        plane = resize_plane(image)
        with anyio.fail_after(info.timeout_s):
            scores, heatmap = await asyncio.gather(
                model_call(request, "infer")(plane[np.newaxis]), model_call(request, "explain")(plane)
            )
        prediction = judge_scores(info.decision, scores)[0]
        if isinstance(prediction, PneumoscanError):
            raise prediction
        result = Result(prediction=prediction, sha256=sha256, dicom=decoded.dicom)
        audited(request).add(results=[result])
        png = await in_decode_thread(request, explained_png, image, np.asarray(heatmap, dtype=np.float32), result)
    headers = {
        **explanation_headers(result),
        "X-Request-Id": record["request_id"],
        "Cache-Control": "no-store",  # a patient's image: no shared caches
    }
    return Response(png, media_type="image/png", headers=headers)
