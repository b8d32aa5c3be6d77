"""Model cost per image: models side by side, or one model by batch size, in one run.

    .venv/bin/python -m bench.model_cost MODEL_DIR [MODEL_DIR ...] [--seconds S]
    .venv/bin/python -m bench.model_cost MODEL_DIR --threads 1 --batch-sizes 1,8,32

Times ``Predictor.score`` (the forward pass, calibration and, for a model with one, the input
gate's features and distance) on batches of preprocessed X-rays (32 unless told), after a
warm-up, and prints wall-clock and CPU milliseconds per image for each model and batch size.
Pass an older model folder (for example one checked out with ``git worktree``) to put the
figures beside each other. ``--threads 1`` gives what one HTTP worker of the service pays on 2
cores (TensorFlow's intra-op threads are split between the workers), which is what bounds the
gain of batching on a CPU: ``make bench`` runs it so.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
BATCH = 32


def batch_of_xrays(size: int = BATCH) -> np.ndarray:
    from pneumoscan.imaging.preprocess import load_image

    files = sorted((REPO / "tests" / "fixtures" / "xrays").rglob("*.jpeg"))
    images = [load_image(path.read_bytes()) for path in files]
    return np.stack([images[i % len(images)] for i in range(size)])


def ms_per_image(predictor, batch: np.ndarray, seconds: float) -> tuple[float, float]:
    """(wall-clock, CPU) milliseconds per image of ``predictor.score`` on ``batch``, this process's
    CPU time over all its threads."""
    calls, started, cpu_started = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - started < seconds:
        predictor.score(batch)
        calls += 1
    images = calls * len(batch)
    return ((time.perf_counter() - started) * 1000 / images, (time.process_time() - cpu_started) * 1000 / images)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", type=Path)
    parser.add_argument("--seconds", type=float, default=10.0, help="time per model and batch size")
    parser.add_argument("--threads", type=int, default=0, help="TensorFlow intra-op threads (0: all cores)")
    parser.add_argument("--batch-sizes", default=str(BATCH), help="comma-separated, e.g. 1,8,32")
    args = parser.parse_args()
    from pneumoscan.model.architectures import configure_tensorflow
    from pneumoscan.model.predictor import Predictor

    configure_tensorflow(args.threads, 1 if args.threads else 0)
    sizes = [int(size) for size in args.batch_sizes.split(",")]
    batches = {size: batch_of_xrays(size) for size in sizes}
    for model_dir in args.models:
        predictor = Predictor.from_dir(model_dir)
        predictor.warm_up(max(sizes))
        for size, batch in batches.items():
            wall, cpu = ms_per_image(predictor, batch, args.seconds)
            print(
                json.dumps(
                    {
                        "model": str(model_dir),
                        "threads": args.threads,
                        "batch": size,
                        "ms_per_image": round(wall, 3),
                        "cpu_ms_per_image": round(cpu, 3),
                    }
                ),
                flush=True,
            )


if __name__ == "__main__":
    main()
