"""Load test of the pneumoscan HTTP service: real full-size X-rays posted to ``/predict``.

Headless, against a running service (``make run``)::

    .venv/bin/locust -f loadtests/locustfile.py --headless --host http://localhost:3000 \\
        --users 32 --spawn-rate 32 --run-time 60s --csv bench/out/load --html bench/out/load.html

or ``make loadtest`` (``USERS=``, ``SPAWN_RATE=``, ``RUN_TIME=``, ``HOST=`` override). Settings:

- ``PNEUMOSCAN_LOAD_SAMPLES``: folder of .jpg/.jpeg/.png X-rays to post (default: the test fixtures);
- ``PNEUMOSCAN_API_KEY``: sent as ``Authorization: Bearer`` when set.

Each user posts back to back (a closed loop), alternating multipart uploads and raw
``image/jpeg`` bodies; every response is checked against the ``PredictionResponse`` schema and any
non-2xx answer counts as a failure.
"""

from __future__ import annotations

import itertools
import os
import random
from pathlib import Path

from locust import FastHttpUser, constant, task
from pydantic import ValidationError

from pneumoscan.schemas import PredictionResponse

DEFAULT_SAMPLES = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "xrays"
SUFFIXES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".dcm": "application/dicom"}


def load_samples(folder: Path) -> list[tuple[str, bytes, str]]:
    samples = [
        (path.name, path.read_bytes(), SUFFIXES[path.suffix.lower()])
        for path in sorted(folder.rglob("*"))
        if path.suffix.lower() in SUFFIXES
    ]
    if not samples:
        raise SystemExit(f"No .jpg/.jpeg/.png/.dcm samples under {folder}")
    return samples


SAMPLES = load_samples(Path(os.environ.get("PNEUMOSCAN_LOAD_SAMPLES", DEFAULT_SAMPLES)))
API_KEY = os.environ.get("PNEUMOSCAN_API_KEY")


class XrayClient(FastHttpUser):
    wait_time = constant(0)

    def on_start(self) -> None:
        self.samples = itertools.cycle(random.sample(SAMPLES, len(SAMPLES)))
        self.auth = {"Authorization": f"Bearer {API_KEY}"} if API_KEY else {}

    def _check(self, response) -> None:
        if not 200 <= response.status_code < 300:
            response.failure(f"HTTP {response.status_code}: {response.text[:200]}")
            return
        try:
            PredictionResponse.model_validate_json(response.content)
        except ValidationError as exc:
            response.failure(f"response does not match the schema: {exc}")

    @task
    def predict_raw_body(self) -> None:
        _name, data, content_type = next(self.samples)
        with self.client.post(
            "/predict",
            data=data,  # type: ignore[arg-type]  # locust sends bytes as they are; its annotation leaves them out
            headers={**self.auth, "Content-Type": content_type},
            name="/predict (raw body)",
            catch_response=True,
        ) as response:
            self._check(response)

    @task
    def predict_multipart(self) -> None:
        name, data, content_type = next(self.samples)
        boundary = "pneumoscan-load-boundary"
        body = (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{name}"\r\n'
                f"Content-Type: {content_type}\r\n\r\n"
            ).encode()
            + data
            + f"\r\n--{boundary}--\r\n".encode()
        )
        with self.client.post(
            "/predict",
            data=body,  # type: ignore[arg-type]  # locust sends bytes as they are; its annotation leaves them out
            headers={**self.auth, "Content-Type": f"multipart/form-data; boundary={boundary}"},
            name="/predict (multipart)",
            catch_response=True,
        ) as response:
            self._check(response)
