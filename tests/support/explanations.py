"""Checks of an explanation picture (``/explain``, ``pneumoscan explain``) that need no OCR."""

from __future__ import annotations

import numpy as np
from PIL import Image


def is_banner_yellow(pixels: np.ndarray) -> np.ndarray:
    """The Secondary Capture banner's text colour, (255, 255, 0), give or take anti-aliasing."""
    red, green, blue = (pixels[..., channel].astype(np.int16) for channel in range(3))
    return (red > 200) & (green > 200) & (blue < 80)


def colour_bar_rows(pixels: np.ndarray) -> list[int]:
    """Rows that run across most of the width from blue (no evidence) to red (the strongest)."""
    red, blue = pixels[..., 0].astype(np.int16), pixels[..., 2].astype(np.int16)
    tinted = np.abs(red - blue) > 20
    width = pixels.shape[1]
    rows = []
    for row in np.flatnonzero(tinted.sum(axis=1) > width // 2):
        columns = np.flatnonzero(tinted[row])
        left, right = columns[: len(columns) // 5], columns[-len(columns) // 5 :]
        if (blue[row, left] > red[row, left]).all() and (red[row, right] > blue[row, right]).all():
            rows.append(int(row))
    return rows


def assert_explained(image: Image.Image, input_size: tuple[int, int]) -> Image.Image:
    """The picture is the map at the input's aspect on top, the banner and legend under it; the map."""
    assert image.format in (None, "PNG") and image.mode == "RGB"
    # The map spans the width at the input's aspect (the decoder may have shrunk a JPEG already).
    width, height = image.width, round(image.width * input_size[1] / input_size[0])
    assert 512 <= max(width, height) <= 1024 and image.height > height, "no legend under the map"
    pixels = np.asarray(image)
    legend = pixels[height:]
    banner = np.flatnonzero(is_banner_yellow(legend).any(axis=1))
    assert banner.size and banner[0] < legend.shape[0] // 3, "no not-for-diagnostic-use banner under the map"
    assert colour_bar_rows(legend), "no colour bar in the legend"
    assert not is_banner_yellow(pixels[: height - 2]).sum(axis=1).max(initial=0) > width // 4, "a banner over the map"
    return image.crop((0, 0, width, height))
