"""Bytes -> model input. The one preprocessing path shared by training, the service and the worker.

Four steps, each a function: ``decode`` (bytes -> upright grey image, DICOM UIDs),
``resize_plane`` (image -> the uint8 128x128 plane, refusing blank ones), ``plane_to_input``
(planes -> float32 model inputs); ``load_plane`` and ``load_image`` compose them for bytes.

Every X-ray, whatever its format, becomes a float32 array of shape (128, 128, 3) in [0, 1]:
decoded (JPEGs with DCT downscaling via ``Image.draft`` first, which is ~3x faster on full-size
radiographs; DICOM through its display pipeline in ``pneumoscan.dicom.decode``), turned upright by its
EXIF orientation, mapped to 8-bit grayscale, resized and replicated to three channels. Anything
that cannot take that path raises an ``InvalidImage``.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from pneumoscan import DEFAULT_MAX_PIXELS, IMAGE_SIZE
from pneumoscan.dicom.decode import DicomSource, decode_dicom, is_dicom
from pneumoscan.errors import (
    BlankImage,
    ColourImage,
    EmptyImage,
    ImageTooLarge,
    ImageTooSmall,
    InvalidImage,
    NotAnImage,
    TruncatedImage,
    UnsupportedFormat,
    UnsupportedMode,
)

SUPPORTED_FORMATS: frozenset[str] = frozenset({"JPEG", "PNG"})
IMAGE_SUFFIXES: frozenset[str] = frozenset({".jpg", ".jpeg", ".png", ".dcm"})
# Half the model's side: anything smaller is a thumbnail or an icon, and the model would score
# an upscaled blur. Chest radiographs are hundreds to thousands of pixels on a side.
MIN_IMAGE_SIDE = 64
# A radiograph at the model size spreads over a wide range of grey levels: in the training data the
# standard deviation is at least 19 and 95% of the pixels take at least 80 distinct levels. An
# image below either floor has nothing for the model to read: a blank or uniform frame, a two-tone
# pattern or a flat drawing, a failed exposure.
MIN_PLANE_STD = 4.0
MIN_GREY_LEVELS = 16
GREY_LEVEL_COVERAGE = 0.95
# A radiograph is grey: every training, site-sample and full-size X-ray has no pixel whose channels
# differ by more than 32 of 255. Coloured annotations on a small part of a film pass; a photograph,
# a fundus or histology image, a drawing or a colour chart, coloured almost everywhere, does not.
COLOUR_CHROMA = 32
MAX_COLOUR_SHARE = 0.20
COLOUR_CHECK_SIDE = 128
_COLOUR_MODES = frozenset({"P", "PA", "RGB", "RGBA", "RGBX", "YCbCr"})

_EIGHT_BIT_MODES = frozenset({"1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX"})
_SIXTEEN_BIT_MODES = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N"})


@dataclass(frozen=True)
class Decoded:
    """An upright 8-bit grayscale image and, for DICOM input, the UIDs that identify it."""

    image: Image.Image
    dicom: DicomSource | None = None


def decode(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Decoded:
    """JPEG, PNG or DICOM bytes -> an upright 8-bit grayscale ("L") image (JPEGs already reduced
    near the model size) and, for DICOM, the UIDs that identify it."""
    if not data:
        raise EmptyImage("The upload is empty (0 bytes).")
    if is_dicom(data):
        decoded = Decoded(*decode_dicom(data, max_pixels=max_pixels))
    else:
        decoded = Decoded(_decode_pillow(data, max_pixels))
    # JPEG draft mode only reduces images to at least the model size, so this sees the real size
    # of every image it refuses.
    width, height = decoded.image.size
    if min(width, height) < MIN_IMAGE_SIDE:
        raise ImageTooSmall(
            f"The image is {width}x{height} pixels; an X-ray needs at least {MIN_IMAGE_SIDE} on each side."
        )
    return decoded


def _decode_pillow(data: bytes, max_pixels: int) -> Image.Image:
    image = _open(data)
    width, height = image.size
    if width * height > max_pixels:
        raise ImageTooLarge(
            f"The image is {width}x{height} = {width * height:,} pixels; the limit is {max_pixels:,} pixels."
        )
    if image.format == "JPEG":
        # DCT-domain downscaling by 1/2, 1/4 or 1/8 while staying at least the model size. A colour
        # JPEG is kept as YCbCr: its Y is what decoding to "L" gives, and Cb, Cr feed check_colour.
        image.draft("YCbCr" if image.mode == "RGB" else "L", IMAGE_SIZE[::-1])
    try:
        image.load()
        image = ImageOps.exif_transpose(image)
    except (OSError, SyntaxError, ValueError) as exc:
        raise TruncatedImage(f"The {image.format} file is truncated or corrupt: {exc}") from exc
    if min(image.size) >= MIN_IMAGE_SIDE:  # smaller ones are refused as image_too_small by decode
        check_colour(image)
    return _to_eight_bit_gray(image)


def colour_share(image: Image.Image) -> float:
    """The share of the pixels whose channels differ by more than ``COLOUR_CHROMA`` (0 for grey
    modes), measured on a copy at most ``COLOUR_CHECK_SIDE`` pixels on a side."""
    if image.mode not in _COLOUR_MODES:
        return 0.0
    small = image.copy()
    small.thumbnail((COLOUR_CHECK_SIDE, COLOUR_CHECK_SIDE), Image.Resampling.NEAREST)
    red, green, blue = (np.asarray(channel) for channel in small.convert("RGB").split())
    chroma = np.maximum(np.maximum(red, green), blue) - np.minimum(np.minimum(red, green), blue)
    return float(np.mean(chroma > COLOUR_CHROMA))


def check_colour(image: Image.Image) -> None:
    """``ColourImage`` when more than ``MAX_COLOUR_SHARE`` of an image's pixels are coloured."""
    share = colour_share(image)
    if share > MAX_COLOUR_SHARE:
        raise ColourImage(
            f"{share:.0%} of the image is in colour (a radiograph is grey; at most {MAX_COLOUR_SHARE:.0%} may "
            "carry coloured annotations); it looks like a photograph or a drawing, not a chest X-ray."
        )


def resize_plane(grayscale: Image.Image) -> np.ndarray:
    """Resize an "L" image to the model size (bilinear, no crop): uint8 (128, 128); refuses
    planes without usable content (``check_content``)."""
    height, width = IMAGE_SIZE
    plane = np.asarray(grayscale.resize((width, height), Image.Resampling.BILINEAR), dtype=np.uint8)
    check_content(plane)
    return plane


def check_content(plane: np.ndarray) -> None:
    """``BlankImage`` for a near-constant plane or one whose pixels take too few grey levels."""
    spread = float(plane.std())
    if spread < MIN_PLANE_STD:
        raise BlankImage(
            f"The image is nearly uniform (grey-level standard deviation {spread:.1f}, an X-ray has "
            f"at least {MIN_PLANE_STD:g}); there is nothing to score."
        )
    # Counted over the levels that hold most pixels, so resampled edges of a flat drawing do not count.
    counts = np.sort(np.bincount(plane.ravel(), minlength=256))[::-1]
    levels = int(np.searchsorted(np.cumsum(counts), GREY_LEVEL_COVERAGE * plane.size) + 1)
    if levels < MIN_GREY_LEVELS:
        raise BlankImage(
            f"{GREY_LEVEL_COVERAGE:.0%} of the image takes only {levels} grey levels (an X-ray takes at least "
            f"{MIN_GREY_LEVELS}); it looks like a drawing, a pattern or a blank frame, not a radiograph."
        )


def load_plane(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """``resize_plane(decode(data).image)``: the uint8 (128, 128) plane of an upload.

    The service ships planes (16 KiB) instead of model inputs (192 KiB) to its model process,
    which finishes with ``plane_to_input``.
    """
    return resize_plane(decode(data, max_pixels=max_pixels).image)


def load_image(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """``plane_to_input(load_plane(data))``: the model input of an upload, float32 (128, 128, 3)."""
    return plane_to_input(load_plane(data, max_pixels=max_pixels))


def plane_to_input(planes: np.ndarray) -> np.ndarray:
    """uint8 planes (..., 128, 128) to model inputs: float32 (..., 128, 128, 3) in [0, 1]."""
    scaled = np.asarray(planes, dtype=np.float32) / np.float32(255.0)
    return np.repeat(scaled[..., np.newaxis], 3, axis=-1)


def _open(data: bytes) -> Image.Image:
    with warnings.catch_warnings():
        # Our own pixel limit is checked right after opening; Pillow's warning adds nothing.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data))
        except Image.DecompressionBombError as exc:
            raise ImageTooLarge(f"The image has too many pixels: {exc}") from exc
        except UnidentifiedImageError as exc:
            raise NotAnImage("The data is not a recognisable image; send a JPEG, PNG or DICOM chest X-ray.") from exc
        except (OSError, SyntaxError, ValueError) as exc:
            raise TruncatedImage(f"The image header is corrupt: {exc}") from exc
    if image.format not in SUPPORTED_FORMATS:
        raise UnsupportedFormat(f"{image.format} images are not accepted; send a JPEG, PNG or DICOM chest X-ray.")
    return image


def _to_eight_bit_gray(image: Image.Image) -> Image.Image:
    if image.mode == "L":
        return image
    if image.mode == "YCbCr":
        return image.getchannel("Y")
    if image.mode in _EIGHT_BIT_MODES:
        # Alpha is dropped; palette and colour images map to luminance.
        return image.convert("L")
    if image.mode in _SIXTEEN_BIT_MODES:
        # PNG 16-bit samples span 0..65535; k * 257 maps back exactly to the 8-bit value k.
        samples = np.asarray(image, dtype=np.float64)
        if samples.min() < 0 or samples.max() > 65535:
            raise UnsupportedMode(f"{image.mode} samples fall outside the 16-bit range.")
        return Image.fromarray(np.rint(samples / 257.0).astype(np.uint8), mode="L")
    raise UnsupportedMode(f"Pixel mode {image.mode!r} is not supported; send grayscale or RGB images.")


__all__ = [
    "IMAGE_SUFFIXES",
    "Decoded",
    "InvalidImage",
    "check_colour",
    "check_content",
    "colour_share",
    "decode",
    "load_image",
    "load_plane",
    "plane_to_input",
    "resize_plane",
]
