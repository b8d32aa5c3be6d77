"""Micro-batching in the process that receives the requests.

Concurrent requests each hand the batcher their decoded planes and await their own rows of the
result. One consumer task makes the model calls: a batch is whatever queued while the previous
call ran, up to ``max_batch_size`` images, so there is no timer to tune. An idle service answers
a lone request at once; a busy one gathers as much as arrived during the call in progress (the
default of Triton's dynamic batcher and Ray Serve's ``@serve.batch``).

A request is shed at once with ``Overloaded`` (503 with ``Retry-After``) when the queue ahead of
it would take longer than the latency budget: the estimate is the running call plus the queued
images at the measured seconds per image.

The batch call is pluggable: the model in this process (CPU), or the model service's batching
endpoint (GPU), so the same queueing and shedding serve both.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import numpy as np

from service.http.errors import Overloaded

log = logging.getLogger("pneumoscan.service")

# uint8 planes (n, 128, 128) -> (n, 2) scores.
BatchCall = Callable[[np.ndarray], Awaitable[np.ndarray]]
# Weight of the newest call in the running estimates of call time and time per image.
SMOOTHING = 0.2


@dataclass
class _Pending:
    planes: np.ndarray
    future: asyncio.Future = field(repr=False)


class MicroBatcher:
    """``await batcher(planes)`` -> the batch call's rows for ``planes``, batched with whatever
    else is queued."""

    def __init__(
        self,
        call: BatchCall,
        *,
        max_batch_size: int,
        latency_budget_s: float,
        observe_batch: Callable[[int], None] | None = None,
    ) -> None:
        self.call = call
        self.max_batch_size = max_batch_size
        self.latency_budget_s = latency_budget_s
        self.observe_batch = observe_batch
        self.queued_images = 0
        self.call_seconds: float | None = None  # running estimate of one call
        self.image_seconds: float | None = None  # running estimate of a call's time per image
        self._queue: deque[_Pending] = deque()
        self._wakeup: asyncio.Event | None = None
        self._consumer: asyncio.Task | None = None
        self._call_started: float | None = None

    async def __call__(self, planes: np.ndarray) -> np.ndarray:
        if len(planes) == 0:
            return np.zeros((0, 2))
        self._check_budget(len(planes))
        loop = asyncio.get_running_loop()
        chunks = [planes[i : i + self.max_batch_size] for i in range(0, len(planes), self.max_batch_size)]
        pending = [_Pending(chunk, loop.create_future()) for chunk in chunks]
        self._queue.extend(pending)
        self.queued_images += len(planes)
        self._start()
        try:
            return np.concatenate(await asyncio.gather(*(item.future for item in pending)))
        finally:
            for item in pending:  # a request that timed out leaves no work behind
                item.future.cancel()

    def expected_wait_s(self, images: int) -> float:
        """How long ``images`` more would wait for their result, by the running estimates."""
        if self.call_seconds is None or self.image_seconds is None:
            return 0.0
        running = 0.0
        if self._call_started is not None:
            running = max(self.call_seconds - (time.perf_counter() - self._call_started), 0.0)
        return running + (self.queued_images + images) * self.image_seconds

    def _check_budget(self, images: int) -> None:
        if self.queued_images == 0 and self._call_started is None:
            return  # nothing ahead: the call starts at once, however slow it is
        wait = self.expected_wait_s(images)
        if wait > self.latency_budget_s:
            raise Overloaded(
                f"The model queue holds {self.queued_images} images (about {wait * 1000:.0f} ms of work), "
                f"beyond the {self.latency_budget_s * 1000:.0f} ms budget; retry shortly."
            )

    def _start(self) -> None:
        if self._wakeup is None or self._consumer is None or self._consumer.done():
            self._wakeup = asyncio.Event()
            self._consumer = asyncio.get_running_loop().create_task(self._consume(self._wakeup), name="micro-batcher")
        self._wakeup.set()

    def _next_batch(self) -> list[_Pending]:
        batch: list[_Pending] = []
        images = 0
        while self._queue:
            item = self._queue[0]
            if item.future.done():  # cancelled: its request timed out or went away
                self._queue.popleft()
                self.queued_images -= len(item.planes)
                continue
            if batch and images + len(item.planes) > self.max_batch_size:
                break
            self._queue.popleft()
            self.queued_images -= len(item.planes)
            batch.append(item)
            images += len(item.planes)
        return batch

    async def _consume(self, wakeup: asyncio.Event) -> None:
        while True:
            batch = self._next_batch()
            if not batch:
                wakeup.clear()
                await wakeup.wait()
                continue
            planes = np.concatenate([item.planes for item in batch]) if len(batch) > 1 else batch[0].planes
            self._call_started = time.perf_counter()
            try:
                scores = await self.call(planes)
            except Exception as exc:  # noqa: BLE001 - every request in the batch gets the error, whatever it is
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(exc)
                continue
            finally:
                seconds = time.perf_counter() - self._call_started
                self._call_started = None
            self._learn(seconds, len(planes))
            offset = 0
            for item in batch:
                if not item.future.done():
                    item.future.set_result(scores[offset : offset + len(item.planes)])
                offset += len(item.planes)

    def _learn(self, seconds: float, images: int) -> None:
        if self.observe_batch is not None:
            self.observe_batch(images)
        per_image = seconds / images
        if self.call_seconds is None or self.image_seconds is None:
            self.call_seconds, self.image_seconds = seconds, per_image
        else:
            self.call_seconds += SMOOTHING * (seconds - self.call_seconds)
            self.image_seconds += SMOOTHING * (per_image - self.image_seconds)
