"""pneumoscan: pneumonia screening on chest X-rays.

The core package: image decoding and preprocessing, the model architectures and predictor,
shared schemas, settings and errors. It never imports bentoml, huey or locust.
"""

__version__ = "0.1.0"

CLASS_NAMES: tuple[str, str] = ("NORMAL", "PNEUMONIA")
"""Model output order: column 1 of the softmax is P(pneumonia)."""

IMAGE_SIZE: tuple[int, int] = (128, 128)
"""(height, width) of the model input; it always has 3 channels."""

DEFAULT_MAX_PIXELS: int = 50_000_000
"""Largest accepted image, width x height (``PNEUMOSCAN_MAX_IMAGE_PIXELS``): decompression bombs stop here."""
