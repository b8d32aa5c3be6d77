"""What the model answers, per model version, on ``/metrics``: the service, the queue worker and
the DICOM node count with the one function here, ``observe_result``, once per image.

- ``pneumoscan_result_probability``: calibrated P(pneumonia) of each scored image;
- ``pneumoscan_result_ood_score``: the input gate's distance as a multiple of its limit, for scored
  images and for those the gate refused;
- ``pneumoscan_results_total`` by label and ``pneumoscan_refusals_total`` by error code;
- ``pneumoscan_reference_*``: what the model answered on its validation data
  (``drift_reference.json`` in its folder), for the alert rules to compare the live rates with.

Bins are ``pneumoscan.monitoring.bins``'s, the ones the reference is counted in. Like ``service.http.metrics``,
the metrics are made on first use, once the process knows where multiprocess values go.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from pathlib import Path

from pneumoscan.errors import InvalidImage, NotAChestXray, UnreadableFile
from pneumoscan.monitoring.bins import OOD_BUCKETS, PROBABILITY_BUCKETS
from pneumoscan.monitoring.drift import DriftReference, load_reference
from pneumoscan.result import Result

log = logging.getLogger("pneumoscan.metrics")

# (gauge name after pneumoscan_reference_, DriftReference field, help)
REFERENCE_GAUGES = (
    ("pneumonia_share", "pneumonia_share", "Share of PNEUMONIA labels among the images scored on validation data."),
    ("refusal_rate", "refusal_rate", "Share of refused images among all the model was given on validation data."),
    ("ood_score_median", "ood_median", "Median input-gate distance (a multiple of its limit) on validation data."),
)


@lru_cache(maxsize=1)
def _probability():
    from prometheus_client import Histogram

    return Histogram(
        "pneumoscan_result_probability",
        "Calibrated P(pneumonia) of each scored image.",
        ["model_version"],
        buckets=PROBABILITY_BUCKETS,
    )


@lru_cache(maxsize=1)
def _ood_score():
    from prometheus_client import Histogram

    return Histogram(
        "pneumoscan_result_ood_score",
        "The input gate's distance of each image as a multiple of its limit (above 1: unlike the training "
        "X-rays), refused images included.",
        ["model_version"],
        buckets=OOD_BUCKETS,
    )


@lru_cache(maxsize=1)
def _results():
    from prometheus_client import Counter

    return Counter("pneumoscan_results", "Scored images by label.", ["model_version", "label"])


@lru_cache(maxsize=1)
def _refusals():
    from prometheus_client import Counter

    return Counter(
        "pneumoscan_refusals",
        "Images refused instead of scored, by error code (not_a_chest_xray, blank_image, ...).",
        ["model_version", "code"],
    )


@lru_cache(maxsize=1)
def _reference_gauges() -> dict:
    from prometheus_client import Gauge

    # A property of the model folder: every process serving it reads the same number.
    return {
        field: Gauge(f"pneumoscan_reference_{name}", text, ["model_version"], multiprocess_mode="mostrecent")
        for name, field, text in REFERENCE_GAUGES
    }


def observe_result(result: Result, model_version: str) -> None:
    """Count one image's result; ``model_version`` is the scoring model's (a refusal carries none).
    Only refusals of an image are counted: not a file that could not be read, nor errors that are
    not about an image (a request without one, a file that kept killing workers)."""
    if result.prediction is not None:
        prediction = result.prediction
        version = prediction.model_version
        _probability().labels(model_version=version).observe(prediction.probability)
        _results().labels(model_version=version, label=prediction.label).inc()
        if prediction.ood_score is not None:
            _ood_score().labels(model_version=version).observe(prediction.ood_score)
        return
    error = result.error
    if not isinstance(error, InvalidImage) or isinstance(error, UnreadableFile):
        return
    _refusals().labels(model_version=model_version, code=error.code).inc()
    if isinstance(error, NotAChestXray) and error.ood_score is not None:
        _ood_score().labels(model_version=model_version).observe(error.ood_score)


def set_reference(model_version: str, reference: DriftReference | None) -> bool:
    """Set the reference gauges of the served ``model_version``; nothing for a model without a
    reference or with another version's (a stale file would compare the live rates with the wrong
    model). True when set."""
    if reference is None:
        return False
    if reference.model_version != model_version:
        log.warning(
            "Ignoring the drift reference of model %s: the served model is %s.", reference.model_version, model_version
        )
        return False
    for field, gauge in _reference_gauges().items():
        gauge.labels(model_version=model_version).set(getattr(reference, field))
    return True


def register(model_dir: str | Path | None = None, model_version: str | None = None) -> None:
    """Create the metrics now, so ``/metrics`` lists them before the first image; with the served
    model's folder and version, set the reference gauges from its ``drift_reference.json``."""
    _probability()
    _ood_score()
    _results()
    _refusals()
    _reference_gauges()
    if model_dir is None or model_version is None:
        return
    try:
        reference = load_reference(model_dir)
    except (OSError, ValueError) as exc:  # the model is still served; only the comparison is lost
        log.error("Cannot read the drift reference in %s: %s", model_dir, exc)
        return
    set_reference(model_version, reference)
