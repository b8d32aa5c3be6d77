"""Decoding cost per input format, and the cost of a Grad-CAM explanation, in one run.

    .venv/bin/python bench/formats_bench.py [--samples DIR] [--repeats N]

Each full-size sample X-ray is converted to PNG and to DICOM (8-bit, 16-bit MONOCHROME1,
RLE, JPEG 2000, JPEG-LS, JPEG baseline) at its own size; each variant is then decoded to the
model's 128x128 plane with the core pipeline (one thread) and reported as images/s beside the
original JPEG. Last, Grad-CAM heatmaps of the bundled model are timed against plain predictions.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pydicom.uid import JPEG2000Lossless, JPEGBaseline8Bit, JPEGLSLossless, RLELossless  # noqa: E402

from pneumoscan.imaging.preprocess import load_image, load_plane  # noqa: E402
from tests.support import encode  # noqa: E402
from tests.support.dicom_files import make_dicom  # noqa: E402

VARIANTS: dict[str, dict[str, Any]] = {
    "DICOM 8-bit": {},
    "DICOM 16-bit MONOCHROME1": {"bits": 16, "photometric": "MONOCHROME1"},
    "DICOM RLE 16-bit": {"bits": 16, "transfer_syntax": RLELossless},
    "DICOM JPEG 2000 16-bit": {"bits": 16, "transfer_syntax": JPEG2000Lossless},
    "DICOM JPEG-LS 16-bit": {"bits": 16, "transfer_syntax": JPEGLSLossless},
    "DICOM JPEG baseline": {"transfer_syntax": JPEGBaseline8Bit},
}


def rate(blobs: list[bytes], repeats: int) -> float:
    started = time.perf_counter()
    for _ in range(repeats):
        for blob in blobs:
            load_plane(blob)
    return len(blobs) * repeats / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=Path, default=REPO / "tests" / "fixtures" / "xrays")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    paths = sorted(p for p in args.samples.rglob("*") if p.suffix.lower() in {".jpeg", ".jpg"})[:12]
    images = [Image.open(path).convert("L") for path in paths]
    pixels = sum(image.width * image.height for image in images) / len(images)
    print(f"{len(paths)} X-rays, mean {pixels / 1e6:.2f} megapixels; images/s on one thread:")
    formats = {"JPEG (original)": [path.read_bytes() for path in paths]}
    formats["PNG 8-bit"] = [encode(image, "PNG") for image in images]
    for name, options in VARIANTS.items():
        formats[name] = [make_dicom(image, **options) for image in images]
    for name, blobs in formats.items():
        size = sum(map(len, blobs)) / len(blobs) / 1024
        print(f"  {name:28s} {rate(blobs, args.repeats):8.1f}   ({size:,.0f} KiB each)")

    import numpy as np

    from pneumoscan.model.architectures import configure_tensorflow
    from pneumoscan.model.gradcam import GradCam
    from pneumoscan.model.predictor import Predictor
    from pneumoscan.settings import BUNDLED_MODEL_DIR

    configure_tensorflow(0, 1)
    predictor = Predictor.from_dir(BUNDLED_MODEL_DIR)
    grad_cam = GradCam(predictor.model)
    inputs = [load_image(blob) for blob in formats["JPEG (original)"]]
    grad_cam(inputs[0]), predictor.predict_proba(inputs[0][np.newaxis])  # trace both once
    started = time.perf_counter()
    for item in inputs:
        grad_cam(item)
    explain_ms = (time.perf_counter() - started) / len(inputs) * 1000
    started = time.perf_counter()
    for item in inputs:
        predictor.predict_proba(item[np.newaxis])
    predict_ms = (time.perf_counter() - started) / len(inputs) * 1000
    print(f"Grad-CAM {explain_ms:.1f} ms per image, prediction at batch 1 {predict_ms:.1f} ms per image")


if __name__ == "__main__":
    main()
