"""The bins a deployed model's answers are counted in.

``/metrics`` (service, queue worker, DICOM node) and the validation reference in a model folder
count with the same edges, so ``pneumoscan drift`` and the Prometheus alert rules compare like with
like. The probability bins are fine between 0.5 and 0.99, where operating points lie (the bundled
model's and the site-calibrated ones); the distance bins are the gate's distance as a multiple of its
limit, fine around 1 (the refusal line).
"""

from __future__ import annotations

PROBABILITY_BUCKETS: tuple[float, ...] = (
    0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.55, 0.6, 0.625, 0.65, 0.675, 0.7, 0.725, 0.75,
    0.775, 0.8, 0.825, 0.85, 0.875, 0.9, 0.925, 0.95, 0.975, 0.99,
)  # fmt: skip

OOD_BUCKETS: tuple[float, ...] = (0.25, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.25, 1.5, 2.0, 3.0, 5.0)
