"""The naive baseline: what a first deployment commonly looks like.

A minimal Starlette app that decodes each upload at full resolution (no DCT downscaling) and
calls ``model.predict`` once per request, without the input gate. ``make bench`` serves it with uvicorn beside the real
service to show what the real service's batching and decoding buy.

    .venv/bin/uvicorn bench.naive_app:app --port 3001
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from pneumoscan.model.decision import calibrate
from pneumoscan.model.predictor import load_keras_model, load_metadata
from pneumoscan.settings import get_settings

MODEL_DIR = get_settings().model_dir
model = load_keras_model(MODEL_DIR)
metadata = load_metadata(MODEL_DIR)
TEMPERATURE = metadata.calibration.temperature if metadata.calibration else 1.0


async def predict(request: Request) -> JSONResponse:
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        form = await request.form()
        upload = form["image"]
        if not isinstance(upload, UploadFile):
            raise HTTPException(400, "The image field must be a file.")
        data = await upload.read()
    else:
        data = await request.body()
    image = Image.open(io.BytesIO(data)).convert("RGB").resize((128, 128))
    batch = np.asarray(image, dtype=np.float32)[np.newaxis] / 255.0
    # The saved threshold applies to calibrated P(pneumonia); no input gate here.
    probability = float(calibrate(model.predict(batch, verbose=0), TEMPERATURE)[0])
    label = "PNEUMONIA" if probability >= metadata.threshold else "NORMAL"
    return JSONResponse(
        {
            "label": label,
            "probability": probability,
            "threshold": metadata.threshold,
            "model_version": metadata.version,
            "request_id": "naive",
        }
    )


app = Starlette(routes=[Route("/predict", predict, methods=["POST"])])
