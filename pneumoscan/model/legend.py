"""An explanation as it goes out: the overlay with its legend, and the result it explains.

``explained`` is the picture ``POST /explain`` answers and ``pneumoscan explain`` writes: the
Grad-CAM overlay (``pneumoscan.model.gradcam.overlay``) unchanged at the top left, then the "not for
diagnostic use" banner the DICOM Secondary Capture burns in (``pneumoscan.dicom.results.with_banner``,
which names the model version), then a panel with the result (label, P(pneumonia), threshold, the
out-of-distribution flag), a colour bar and what the colour means: evidence for pneumonia, whatever
the label; for a NORMAL result, what the model would have needed to see, not evidence for NORMAL.

``explanation_headers`` renders the same :class:`~pneumoscan.result.Result` as ``/explain``'s
``X-Pneumoscan-*`` headers, field for field as ``/predict``'s JSON has them.
"""

from __future__ import annotations

import io
import textwrap

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from pneumoscan.model.gradcam import overlay
from pneumoscan.result import Result
from pneumoscan.schemas import Prediction

# Result field -> (response header, what it holds); the order is the headers' order.
HEADERS: dict[str, tuple[str, str]] = {
    "label": ("X-Pneumoscan-Label", "PNEUMONIA or NORMAL"),
    "probability": ("X-Pneumoscan-Probability", "P(pneumonia), as /predict's probability"),
    "threshold": ("X-Pneumoscan-Threshold", "PNEUMONIA when the probability reaches it"),
    "model_version": ("X-Pneumoscan-Model-Version", "the model that answered"),
    "out_of_distribution": (
        "X-Pneumoscan-Out-Of-Distribution",
        "true when PNEUMOSCAN_OOD_POLICY=flag let an image unlike the training X-rays through",
    ),
    "ood_score": (
        "X-Pneumoscan-Ood-Score",
        "distance from the training X-rays as a multiple of the input gate's limit (absent without a gate)",
    ),
}
MAP_MEANING = "Colour: evidence for pneumonia (Grad-CAM), relative to its strongest point in this image."
NORMAL_MEANING = (
    "The result is NORMAL: the colour shows what would count towards pneumonia, what the model would "
    "need to see, not evidence for NORMAL."
)
EMPTY_MEANING = "No region counts towards pneumonia: the map is empty."
OUT_OF_DISTRIBUTION = "OUT OF DISTRIBUTION: unlike the X-rays the model was trained on; do not trust the finding."
BACKGROUND = (0, 0, 0)
TEXT = (235, 235, 235)
WARNING = (255, 96, 96)
# The colour bar is drawn over this grey, as the overlay blends its colours over the radiograph.
BAR_GREY = 0.5


def _header_value(value: object) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return repr(value)
    return str(value)


def explanation_headers(result: Result) -> dict[str, str]:
    """``/explain``'s ``X-Pneumoscan-*`` headers for a scored result, in ``HEADERS`` order."""
    if result.prediction is None:
        raise ValueError("Only a scored result has explanation headers; a refusal is answered as an error.")
    values = result.prediction.model_dump()
    return {header: _header_value(values[field]) for field, (header, _) in HEADERS.items() if values[field] is not None}


def _font(width: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=max(10, width // 40))


def _wrapped(text: str, font, width: float) -> list[str]:
    """``text`` in lines no wider than ``width`` at ``font``."""
    average = max(font.getlength("abcdefghijklmnopqrstuvwxyz") / 26, 1.0)
    columns = max(int(width / average), 10)
    while columns > 10:
        lines = textwrap.wrap(text, columns)
        if all(font.getlength(line) <= width for line in lines):
            return lines
        columns -= 1
    return textwrap.wrap(text, columns)


def colour_bar(width: int, height: int, colormap: str = "jet", alpha: float = 0.5) -> Image.Image:
    """The overlay's colours from no evidence (left) to the strongest (right), over mid-grey."""
    from matplotlib import colormaps

    heat = np.linspace(0.0, 1.0, max(width, 2), dtype=np.float32)
    weight = alpha * heat[:, np.newaxis]
    row = BAR_GREY * (1.0 - weight) + colormaps[colormap](heat)[:, :3] * weight
    pixels = np.rint(np.repeat(row[np.newaxis], max(height, 1), axis=0) * 255.0).astype(np.uint8)
    return Image.fromarray(pixels[:, :width])


def legend_panel(width: int, prediction: Prediction, *, empty_map: bool = False) -> Image.Image:
    """The panel under the banner: the result, the colour bar and what the colour means."""
    font = _font(width)
    size = int(font.size) if hasattr(font, "size") else 10
    margin, line = max(size // 2, 4), int(size * 1.4)
    usable = width - 2 * margin
    result = f"{prediction.label}   P(pneumonia) {prediction.probability:.3f}   threshold {prediction.threshold:.3f}"
    rows: list[tuple[str, tuple[int, int, int]]] = [(text, TEXT) for text in _wrapped(result, font, usable)]
    if prediction.out_of_distribution:
        rows += [(text, WARNING) for text in _wrapped(OUT_OF_DISTRIBUTION, font, usable)]
    meaning = [MAP_MEANING]
    if prediction.label == "NORMAL":
        meaning.append(NORMAL_MEANING)
    if empty_map:
        meaning.append(EMPTY_MEANING)
    notes = [text for paragraph in meaning for text in _wrapped(paragraph, font, usable)]
    ends = ("none", "strongest")
    bar_left = margin + int(font.getlength(ends[0])) + margin
    bar_right = width - margin - int(font.getlength(ends[1])) - margin
    bar_height = size
    height = margin + line * len(rows) + margin + bar_height + margin + line * len(notes) + margin
    panel = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(panel)
    y = margin
    for text, colour in rows:
        draw.text((margin, y), text, fill=colour, font=font)
        y += line
    y += margin
    if bar_right - bar_left >= 16:
        panel.paste(colour_bar(bar_right - bar_left, bar_height), (bar_left, y))
        draw.text((margin, y + bar_height / 2), ends[0], fill=TEXT, font=font, anchor="lm")
        draw.text((width - margin, y + bar_height / 2), ends[1], fill=TEXT, font=font, anchor="rm")
    y += bar_height + margin
    for text in notes:
        draw.text((margin, y), text, fill=TEXT, font=font)
        y += line
    return panel


def explained(image: Image.Image, heatmap: np.ndarray, result: Result) -> Image.Image:
    """The overlay of ``heatmap`` on ``image`` at the top left, above the banner and the legend."""
    from pneumoscan.dicom.results import with_banner

    if result.prediction is None:
        raise ValueError("Only a scored result can be explained.")
    picture = overlay(image, heatmap)
    empty = not bool(np.asarray(heatmap).max(initial=0.0) > 0.0)
    legend = with_banner(
        legend_panel(picture.width, result.prediction, empty_map=empty), result.prediction.model_version
    )
    combined = Image.new("RGB", (picture.width, picture.height + legend.height), BACKGROUND)
    combined.paste(picture, (0, 0))
    combined.paste(legend, (0, picture.height))
    return combined


def explained_png(image: Image.Image, heatmap: np.ndarray, result: Result) -> bytes:
    """``explained`` as PNG bytes."""
    buffer = io.BytesIO()
    explained(image, heatmap, result).save(buffer, format="PNG")
    return buffer.getvalue()
