"""The in-process micro-batcher: what queues during a call becomes the next batch; a request
that would wait past the budget is shed at once."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from service.http.batcher import MicroBatcher
from service.http.errors import Overloaded


class SlowModel:
    """A batch call that records its batch sizes and takes ``seconds`` (an outside boundary)."""

    def __init__(self, seconds: float = 0.02, fail: bool = False) -> None:
        self.seconds, self.fail = seconds, fail
        self.batches: list[int] = []

    async def __call__(self, planes: np.ndarray) -> np.ndarray:
        self.batches.append(len(planes))
        await asyncio.sleep(self.seconds)
        if self.fail:
            raise RuntimeError("model failed")
        means = planes.reshape(len(planes), -1).mean(axis=1)
        return np.stack([means, np.zeros_like(means)], axis=1)


def planes(*values: int) -> np.ndarray:
    return np.stack([np.full((4, 4), v, dtype=np.uint8) for v in values])


def test_a_lone_request_goes_at_once_and_the_rest_gather_behind_a_call():
    model = SlowModel()
    observed: list[int] = []
    batcher = MicroBatcher(model, max_batch_size=8, latency_budget_s=10.0, observe_batch=observed.append)

    async def scenario():
        first = asyncio.ensure_future(batcher(planes(0)))
        await asyncio.sleep(0.005)  # its call is under way
        return [await first, *await asyncio.gather(*(batcher(planes(i)) for i in range(1, 20)))]

    results = asyncio.run(scenario())
    # Each request gets its own rows back, in order.
    assert [float(r[0, 0]) for r in results] == [float(i) for i in range(20)]
    assert model.batches[0] == 1, "nothing queued before the first call: it does not wait for company"
    assert model.batches[1:] == [8, 8, 3], "then whatever queued meanwhile, up to the maximum"
    assert batcher.queued_images == 0
    assert observed == model.batches


def test_a_request_larger_than_a_batch_is_split_and_reassembled():
    model = SlowModel(seconds=0.0)
    batcher = MicroBatcher(model, max_batch_size=4, latency_budget_s=10.0)
    result = asyncio.run(batcher(planes(*range(10))))
    assert [float(v) for v in result[:, 0]] == [float(i) for i in range(10)]
    assert max(model.batches) <= 4 and sum(model.batches) == 10


def test_requests_beyond_the_latency_budget_are_shed():
    model = SlowModel(seconds=0.05)
    batcher = MicroBatcher(model, max_batch_size=2, latency_budget_s=0.12)

    async def scenario():
        await batcher(planes(0))  # measures one call: ~50 ms for one image
        return await asyncio.gather(*(batcher(planes(i)) for i in range(12)), return_exceptions=True)

    outcomes = asyncio.run(scenario())
    shed = [o for o in outcomes if isinstance(o, Overloaded)]
    served = [o for o in outcomes if isinstance(o, np.ndarray)]
    assert shed and served and len(shed) + len(served) == 12
    assert "budget" in shed[0].detail
    assert batcher.queued_images == 0


def test_a_failed_call_fails_its_requests_and_the_next_batch_still_runs():
    model = SlowModel(fail=True)
    batcher = MicroBatcher(model, max_batch_size=4, latency_budget_s=10.0)

    async def scenario():
        failed = await asyncio.gather(batcher(planes(1)), batcher(planes(2)), return_exceptions=True)
        model.fail = False
        return failed, await batcher(planes(3))

    failed, after = asyncio.run(scenario())
    assert all(isinstance(o, RuntimeError) for o in failed)
    assert float(after[0, 0]) == 3.0


def test_a_request_that_times_out_leaves_nothing_queued():
    model = SlowModel(seconds=0.1)
    batcher = MicroBatcher(model, max_batch_size=1, latency_budget_s=10.0)

    async def scenario():
        first = asyncio.ensure_future(batcher(planes(1)))
        await asyncio.sleep(0)
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.02):
                await batcher(planes(2))
        await first
        await asyncio.sleep(0.15)

    asyncio.run(scenario())
    assert model.batches == [1], "the timed-out request never reached the model"
    assert batcher.queued_images == 0
