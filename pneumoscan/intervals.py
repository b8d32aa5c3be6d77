"""The 95% Wilson score interval: the one interval every proportion in pneumoscan is given with
(readers' agreement, drift, a site's figures)."""

from __future__ import annotations

import math

Z_95 = 1.959963984540054
"""The standard normal quantile of 0.975."""


def wilson_interval(successes: int, n: int) -> tuple[float, float] | None:
    """The 95% Wilson score interval of ``successes / n``; None when n is 0."""
    if n <= 0:
        return None
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be in [0, {n}], got {successes}.")
    p = successes / n
    denominator = 1 + Z_95**2 / n
    centre = (p + Z_95**2 / (2 * n)) / denominator
    half = Z_95 * math.sqrt(p * (1 - p) / n + Z_95**2 / (4 * n * n)) / denominator
    return (max(0.0, centre - half), min(1.0, centre + half))
