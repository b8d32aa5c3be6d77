"""The soak's HTTP users: JPEG, PNG and DICOM X-rays to ``/predict`` (raw and multipart), pairs to
``/predict_batch``, FHIR answers; every request's outcome goes to ``SOAK_REQUESTS`` as one JSON
line (time, endpoint, status, ``Retry-After``, latency, the error), which the ledger reads.

Run by ``bench.soak`` (``locust -f bench/soak/locustfile.py --headless ...``) with ``SOAK_POOL``,
a folder of the images to post.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import threading
import time
from pathlib import Path

from locust import FastHttpUser, constant, events, task

CONTENT_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".dcm": "application/dicom"}
POOL = [
    (path.name, path.read_bytes(), CONTENT_TYPES[path.suffix.lower()])
    for path in sorted(Path(os.environ["SOAK_POOL"]).iterdir())
    if path.suffix.lower() in CONTENT_TYPES
]
LEDGER = open(os.environ["SOAK_REQUESTS"], "a", buffering=1)  # noqa: SIM115  # open for the process's life
_lock = threading.Lock()


@events.request.add_listener
def record(request_type, name, response_time, response_length, response=None, exception=None, **_):
    status = getattr(response, "status_code", 0) or 0
    headers = getattr(response, "headers", None) or {}
    line = {
        "t": round(time.time(), 3),
        "name": name,
        "status": status,
        "retry_after": headers.get("Retry-After"),
        "ms": round(response_time, 1),
        "error": None if exception is None else f"{type(exception).__name__}: {exception}"[:300],
    }
    with _lock:
        LEDGER.write(json.dumps(line) + "\n")


class SoakUser(FastHttpUser):
    wait_time = constant(0)
    network_timeout = 30.0
    connection_timeout = 10.0

    def on_start(self) -> None:
        self.images = itertools.cycle(random.sample(POOL, len(POOL)))
        self.dicoms = itertools.cycle([item for item in POOL if item[2] == "application/dicom"] or POOL)

    def _post(self, name: str, **kwargs) -> None:
        # Any status is recorded; the ledger, not Locust, decides what is a violation.
        with self.client.post(
            "/predict" if "batch" not in name else "/predict_batch", name=name, catch_response=True, **kwargs
        ) as response:
            response.success()

    @task(3)
    def raw(self) -> None:
        _, data, content_type = next(self.images)
        self._post("/predict (raw)", data=data, headers={"Content-Type": content_type})

    @task(2)
    def dicom(self) -> None:
        _, data, content_type = next(self.dicoms)
        self._post("/predict (DICOM)", data=data, headers={"Content-Type": content_type})

    @task(1)
    def multipart(self) -> None:
        name, data, content_type = next(self.images)
        boundary = "soak-boundary"
        body = (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{name}"\r\n'
                f"Content-Type: {content_type}\r\n\r\n"
            ).encode()
            + data
            + f"\r\n--{boundary}--\r\n".encode()
        )
        self._post(
            "/predict (multipart)", data=body, headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}
        )

    @task(1)
    def fhir(self) -> None:
        _, data, content_type = next(self.images)
        headers = {"Content-Type": content_type, "Accept": "application/fhir+json"}
        self._post("/predict (FHIR)", data=data, headers=headers)

    @task(1)
    def batch(self) -> None:
        boundary = "soak-batch"
        parts = b""
        for _ in range(2):
            name, data, content_type = next(self.images)
            parts += (
                (
                    f'--{boundary}\r\nContent-Disposition: form-data; name="images"; filename="{name}"\r\n'
                    f"Content-Type: {content_type}\r\n\r\n"
                ).encode()
                + data
                + b"\r\n"
            )
        body = parts + f"--{boundary}--\r\n".encode()
        self._post("/predict_batch", data=body, headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
