"""Where a gathered batch is scored: the model in this HTTP worker, or the model service.

``LocalModel`` (the CPU default) owns a ``Predictor`` and runs its calls one at a time in a
thread of their own, so the event loop goes on reading and decoding requests meanwhile; each HTTP
worker holds its own copy, with TensorFlow's threads split between the workers.

``RemoteModel`` (the GPU default) sends each gathered batch to the ``PneumoniaModel`` BentoML
service, whose adaptive batching merges the batches of every HTTP worker into GPU batches: the
process hop is paid once per batch, not once per image.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from pneumoscan.imaging.preprocess import plane_to_input
from pneumoscan.model.predictor import Predictor
from service.http.errors import Overloaded

log = logging.getLogger("pneumoscan.service")


class LocalModel:
    """The model in this process; ``infer`` and ``explain`` await a call in its own thread."""

    def __init__(self, model_dir: str | Path, threshold: float | None, max_batch_size: int) -> None:
        self.predictor = Predictor.from_dir(model_dir, threshold=threshold)
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")
        self.predictor.warm_up(max_batch_size)

    def score(self, planes: np.ndarray) -> np.ndarray:
        """(n, 2) for uint8 (n, 128, 128) planes: calibrated P(pneumonia) and the gate's distance."""
        return self.predictor.score(plane_to_input(planes))

    def heatmap(self, plane: np.ndarray) -> np.ndarray:
        """Grad-CAM heatmap of P(pneumonia) for one uint8 (128, 128) plane, float32 (h, w) in [0, 1]."""
        return self.predictor.heatmap(plane_to_input(plane))

    async def infer(self, planes: np.ndarray) -> np.ndarray:
        return await asyncio.get_running_loop().run_in_executor(self._thread, self.score, planes)

    async def explain(self, plane: np.ndarray) -> np.ndarray:
        return await asyncio.get_running_loop().run_in_executor(self._thread, self.heatmap, plane)


class RemoteModel:
    """The ``PneumoniaModel`` service, reached through BentoML's dependency client.

    A call that fails on the connection (a pooled connection the model service has just closed)
    is retried on a fresh one: inference is idempotent. Each retry is counted.
    """

    RETRIES = 2

    def __init__(self, client, count_retry: Callable[[], None] | None = None) -> None:
        self.client = client
        self.count_retry = count_retry

    async def infer(self, planes: np.ndarray) -> np.ndarray:
        return await self._call("infer", planes)

    async def explain(self, plane: np.ndarray) -> np.ndarray:
        return await self._call("explain", plane)

    async def _call(self, method: str, payload: np.ndarray) -> np.ndarray:
        import aiohttp
        from bentoml.exceptions import ServiceUnavailable

        retries_left = self.RETRIES
        while True:
            try:
                return await getattr(self.client.to_async, method)(payload)
            except ServiceUnavailable as exc:
                raise Overloaded("The model queue is full; retry shortly.") from exc
            except (aiohttp.ClientConnectionError, RuntimeError) as exc:
                if retries_left == 0:
                    raise Overloaded("The model service is unreachable; retry shortly.") from exc
                retries_left -= 1
                if self.count_retry is not None:
                    self.count_retry()
                log.warning("Model call %s failed on its connection (%s); retrying.", method, type(exc).__name__)
