"""``POST /explain``: one X-ray in, its Grad-CAM overlay out as a PNG, the prediction in headers.

The upload is read and decoded exactly as for ``/predict``; the plane is scored through the
batcher (the path ``/predict`` uses, so both report the same probability) and the model computes
the heatmap; the heatmap is drawn over the decoded X-ray at the image's own aspect.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
from collections.abc import Awaitable, Callable
from functools import partial

import anyio
import numpy as np
from fastapi import APIRouter, Request
from PIL import Image
from starlette.responses import Response

from pneumoscan.decision import judge_scores
from pneumoscan.errors import PneumoscanError
from pneumoscan.explain import overlay
from pneumoscan.imaging import decode, resize_plane
from service.errors import ExplanationUnavailable
from service.http import (
    ERROR_RESPONSES,
    IMAGE_BODY,
    in_decode_thread,
    model_call,
    model_info,
    read_single_image,
    request_record,
)

# uint8 plane (128, 128) -> float32 heatmap (h, w) in [0, 1].
ExplainFn = Callable[[np.ndarray], Awaitable[np.ndarray]]
router = APIRouter()
PNG_RESPONSE = {
    "description": "The X-ray with the Grad-CAM heatmap of P(pneumonia) over it; the result in X-Pneumoscan-* headers.",
    "content": {"image/png": {"schema": {"type": "string", "format": "binary"}}},
    "headers": {
        name: {"schema": {"type": "string"}, "description": description}
        for name, description in {
            "X-Pneumoscan-Label": "PNEUMONIA or NORMAL",
            "X-Pneumoscan-Probability": "P(pneumonia)",
            "X-Pneumoscan-Threshold": "PNEUMONIA when the probability reaches it",
            "X-Pneumoscan-Model-Version": "the model that answered",
            "X-Pneumoscan-Out-Of-Distribution": (
                "true when PNEUMOSCAN_OOD_POLICY=flag let an image unlike the training X-rays through"
            ),
            "X-Request-Id": "this request's id, as in the request log",
        }.items()
    },
}


def render_png(image: Image.Image, heatmap: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    overlay(image, heatmap).save(buffer, format="PNG")
    return buffer.getvalue()


@router.post(
    "/explain",
    response_class=Response,
    responses={200: PNG_RESPONSE, **ERROR_RESPONSES},
    openapi_extra=IMAGE_BODY,
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
        record.update(bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
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
        png = await in_decode_thread(request, render_png, image, np.asarray(heatmap, dtype=np.float32))
    headers = {
        "X-Pneumoscan-Label": prediction.label,
        "X-Pneumoscan-Probability": repr(prediction.probability),
        "X-Pneumoscan-Threshold": repr(prediction.threshold),
        "X-Pneumoscan-Model-Version": prediction.model_version,
        "X-Pneumoscan-Out-Of-Distribution": str(prediction.out_of_distribution).lower(),
        "X-Request-Id": record["request_id"],
        "Cache-Control": "no-store",  # a patient's image: no shared caches
    }
    return Response(png, media_type="image/png", headers=headers)
