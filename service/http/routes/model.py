"""``GET /version``: which model version answers, with which operating point."""

from __future__ import annotations

from fastapi import APIRouter, Request

from pneumoscan.schemas import ServedModel
from service.http.context import model_info

router = APIRouter()


@router.get("/version", response_model=ServedModel, summary="The model version served and its operating point")
async def version(request: Request) -> ServedModel:
    info = model_info(request)
    if info.served is not None:
        return info.served
    return ServedModel(
        name="pneumonia-cnn",
        version=info.model_version,
        recipe="unknown",
        threshold=info.decision.threshold,
        threshold_overridden=False,
        site_calibrated=False,
        ood_threshold=info.decision.ood_threshold,
        ood_policy=info.decision.ood_policy,
    )
