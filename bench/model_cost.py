"""Model cost per image at batch 32: models side by side, in one run.

    .venv/bin/python -m bench.model_cost MODEL_DIR [MODEL_DIR ...] [--seconds S]

Times ``Predictor.score`` (the forward pass, calibration and, for a model with one, the input
gate's features and distance) on batches of 32 preprocessed X-rays, after one warm-up call, and
prints milliseconds per image for each model. Pass an older model folder (for example one
checked out with ``git worktree``) to put the figures beside each other.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
BATCH = 32


def batch_of_xrays() -> np.ndarray:
    from pneumoscan.imaging import load_image

    files = sorted((REPO / "tests" / "fixtures" / "xrays").rglob("*.jpeg"))
    images = [load_image(path.read_bytes()) for path in files]
    return np.stack([images[i % len(images)] for i in range(BATCH)])


def ms_per_image(model_dir: Path, batch: np.ndarray, seconds: float) -> float:
    from pneumoscan.model import Predictor

    predictor = Predictor.from_dir(model_dir)
    predictor.score(batch)  # trace once
    calls, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        predictor.score(batch)
        calls += 1
    return (time.perf_counter() - started) * 1000 / (calls * len(batch))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", type=Path)
    parser.add_argument("--seconds", type=float, default=10.0, help="time per model")
    args = parser.parse_args()
    from pneumoscan.model import configure_tensorflow

    configure_tensorflow()
    batch = batch_of_xrays()
    for model_dir in args.models:
        cost = ms_per_image(model_dir, batch, args.seconds)
        print(json.dumps({"model": str(model_dir), "batch": BATCH, "ms_per_image": round(cost, 3)}))


if __name__ == "__main__":
    main()
