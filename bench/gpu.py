"""The GPU part of the benchmark (``bench/gpu_check.sh``): ceiling and service on an accelerator.

Uses TensorFlow when it is installed with GPU support, otherwise Keras' JAX backend
(``KERAS_BACKEND=jax``, the forward pass compiled with ``jax.jit``), so that the same saved model
and ``Predictor`` run on a GPU machine that has JAX but no TensorFlow. The ceiling decodes in one
process per core. The service stage runs the GPU layout: one HTTP worker per core, each batching
its requests, in front of one model process on the GPU whose adaptive batching merges their
batches. It needs BentoML and is skipped, with the reason printed, where it is not installed.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import tempfile
from pathlib import Path

from bench.run import DEFAULT_SAMPLES, OUT, ceiling_stage, sample_paths

GPU_BATCH_SIZES = (1, 8, 32, 64, 256)


def device_name() -> str:
    try:
        return subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "no NVIDIA GPU visible"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=Path, default=DEFAULT_SAMPLES)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    import keras

    report: dict = {"device": device_name(), "keras_backend": keras.backend.backend(), "cores": os.cpu_count()}
    if backend == "jax":
        import jax

        report["jax_devices"] = [str(d) for d in jax.devices()]
    report["ceiling"] = ceiling_stage(sample_paths(args.samples), args.seconds, GPU_BATCH_SIZES)
    if importlib.util.find_spec("bentoml") is None:
        report["service"] = "skipped: BentoML is not installed on this machine"
    else:
        from bench.run import service_stage
        from service.launch import register_model

        with tempfile.TemporaryDirectory() as tmp:
            home = Path(tmp) / "bentoml"
            register_model(home)
            report["service"] = service_stage(
                home, args.samples, args.seconds, (1, 8, 32, 64, 128), placement="model_service"
            )
    (OUT / "gpu_report.json").write_text(json.dumps(report, indent=2) + "\n")
    ceiling = report["ceiling"]
    print(f"Device: {report['device']} ({report['cores']} CPU cores), Keras backend {report['keras_backend']}")
    print("| stage | images/s |\n|---|---|")
    print(f"| decode alone ({ceiling['decode_processes']} processes) | {ceiling['decode_images_per_s']} |")
    for size, rate in ceiling["model_images_per_s"].items():
        print(f"| model alone, batch {size} | {rate} |")
    print(f"| decode + batched predict (batch {ceiling['best_batch_size']}) | {ceiling['images_per_s']} |")
    if isinstance(report["service"], str):
        print(report["service"])
    else:
        for run in report["service"]["runs"]:
            print(
                f"| service, {run['users']} users | {run['requests_per_s']} req/s, p99 {run['p99_ms']:g} ms, "
                f"{run['failures']} failed, {run['retries']} retries, mean batch {run['mean_batch_size']} |"
            )


if __name__ == "__main__":
    main()
