"""Per-client rate limits: a token bucket per client, so that one runaway client cannot starve the
others. Each process keeps its own buckets (with several HTTP workers, a client may reach the
rate once per worker); the number of buckets is bounded, the least recently used forgotten first."""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from dataclasses import dataclass

MAX_BUCKETS = 10_000


@dataclass
class Bucket:
    rate: float
    capacity: float
    tokens: float
    updated: float

    def take(self, now: float) -> float:
        """0 when a request may go now (a token taken); otherwise the seconds until one may."""
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


class RateLimiter:
    """``wait(name, rate)``: 0 to go ahead, else the seconds the client must wait (Retry-After)."""

    def __init__(self, burst: int = 0, clock=time.monotonic) -> None:
        self.burst = burst
        self.clock = clock
        self.buckets: OrderedDict[str, Bucket] = OrderedDict()

    def capacity(self, rate: float) -> float:
        return float(self.burst) if self.burst else max(1.0, 2 * rate)

    def wait(self, name: str, rate: float) -> float:
        if rate <= 0:
            return 0.0
        now = self.clock()
        bucket = self.buckets.get(name)
        if bucket is None or bucket.rate != rate:
            capacity = self.capacity(rate)
            bucket = Bucket(rate, capacity, capacity, now)
        self.buckets[name] = bucket
        self.buckets.move_to_end(name)
        while len(self.buckets) > MAX_BUCKETS:
            self.buckets.popitem(last=False)
        return bucket.take(now)


def retry_after(seconds: float) -> int:
    """Whole seconds for a Retry-After header, at least 1."""
    return max(1, math.ceil(seconds))
