"""The shared image pipeline on real X-rays and on every kind of malformed input."""

from __future__ import annotations

import io
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from pneumoscan.errors import (
    EmptyImage,
    ImageTooLarge,
    ImageTooSmall,
    InvalidImage,
    NotAnImage,
    TruncatedImage,
    UnsupportedFormat,
    UnsupportedMode,
)
from pneumoscan.imaging.preprocess import load_image, load_plane, plane_to_input
from tests.support import encode, png_bomb
from tests.support.dicom_files import make_dicom


def test_real_xrays_become_model_inputs(xray_files):
    for path in xray_files:
        array = load_image(path.read_bytes())
        assert array.shape == (128, 128, 3)
        assert array.dtype == np.float32
        assert 0.0 <= array.min() < array.max() <= 1.0
        # Grayscale replicated to three identical channels.
        assert np.array_equal(array[..., 0], array[..., 1])
        assert np.array_equal(array[..., 0], array[..., 2])
        # A radiograph has real contrast, not a flat field.
        assert array.std() > 0.05


def test_plane_path_composes_to_load_image(xray_files):
    planes = np.stack([load_plane(path.read_bytes()) for path in xray_files])
    assert planes.dtype == np.uint8 and planes.shape == (len(xray_files), 128, 128)
    inputs = np.stack([load_image(path.read_bytes()) for path in xray_files])
    assert np.array_equal(plane_to_input(planes), inputs)


def test_rgb_and_grayscale_versions_agree(xray_image):
    gray = load_image(encode(xray_image, "PNG"))
    rgb = load_image(encode(xray_image.convert("RGB"), "PNG"))
    assert np.array_equal(gray, rgb)


def test_sixteen_bit_png_matches_eight_bit(xray_image):
    eight_bit = load_image(encode(xray_image, "PNG"))
    samples = np.asarray(xray_image).astype(np.uint16) * 257
    sixteen = Image.fromarray(samples)
    assert sixteen.mode.startswith("I;16")
    png16 = encode(sixteen, "PNG")
    reopened = Image.open(io.BytesIO(png16))
    assert reopened.mode in {"I", "I;16"}
    assert np.array_equal(load_image(png16), eight_bit)


def test_palette_and_alpha_pngs_are_accepted(xray_image):
    reference = load_image(encode(xray_image, "PNG"))
    palette = xray_image.convert("P")
    with_alpha = xray_image.convert("LA")
    rgba = xray_image.convert("RGBA")
    for image in (palette, with_alpha, rgba):
        array = load_image(encode(image, "PNG"))
        assert array.shape == (128, 128, 3)
        assert np.abs(array - reference).max() <= 2 / 255


def test_exif_orientation_is_applied(xray_image):
    reference = load_image(encode(xray_image, "PNG"))
    # Stored rotated, with the EXIF tag (6: rotate 90 degrees clockwise to view) that undoes it.
    stored = xray_image.transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    oriented = load_image(encode(stored, "PNG", exif=exif))
    assert np.array_equal(oriented, reference)
    # Without the tag the image really is sideways.
    assert not np.allclose(load_image(encode(stored, "PNG")), reference, atol=0.05)


def test_jpeg_with_exif_orientation(xray_image):
    stored = xray_image.transpose(Image.Transpose.ROTATE_270)
    exif = Image.Exif()
    exif[0x0112] = 8
    upright = load_image(encode(xray_image, "JPEG", quality=95))
    oriented = load_image(encode(stored, "JPEG", quality=95, exif=exif))
    assert np.abs(oriented - upright).mean() < 0.02


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"", EmptyImage),
        (b"this is a plain text file, not an X-ray" * 10, NotAnImage),
        (bytes(range(256)) * 8, NotAnImage),
        (b"%PDF-1.7\n" + b"0" * 500, NotAnImage),
    ],
)
def test_non_images_are_refused(data, error):
    with pytest.raises(error) as caught:
        load_image(data)
    assert caught.value.code == error.code
    assert caught.value.detail


def test_truncated_jpeg_is_refused(xray_bytes):
    with pytest.raises(TruncatedImage):
        load_image(xray_bytes[: len(xray_bytes) // 2])


def test_truncated_png_is_refused(xray_image):
    png = encode(xray_image, "PNG")
    with pytest.raises(TruncatedImage):
        load_image(png[: len(png) // 2])


def test_corrupt_jpeg_header_is_refused(xray_bytes):
    with pytest.raises(InvalidImage):
        load_image(xray_bytes[:200])


def test_other_formats_are_refused(xray_image):
    for format in ("GIF", "BMP", "TIFF"):
        with pytest.raises(UnsupportedFormat) as caught:
            load_image(encode(xray_image, format))
        assert format in caught.value.detail


def test_cmyk_jpeg_is_refused(xray_image):
    with pytest.raises(UnsupportedMode):
        load_image(encode(xray_image.convert("CMYK"), "JPEG"))


def test_pixel_limit(xray_image):
    data = encode(xray_image, "PNG")
    width, height = xray_image.size
    load_image(data, max_pixels=width * height)
    with pytest.raises(ImageTooLarge) as caught:
        load_image(data, max_pixels=width * height - 1)
    assert f"{width}x{height}" in caught.value.detail


@pytest.mark.parametrize(
    ("size", "refused"),
    [
        ((1, 1), True),
        ((63, 600), True),
        ((900, 40), True),
        ((64, 64), False),
        ((64, 900), False),
    ],
)
def test_images_too_small_to_be_xrays_are_refused(xray_image, size, refused):
    small = xray_image.resize(size)
    for data in (encode(small, "PNG"), encode(small, "JPEG"), make_dicom(small)):
        if refused:
            with pytest.raises(ImageTooSmall) as caught:
                load_image(data)
            assert f"{size[0]}x{size[1]}" in caught.value.detail
        else:
            assert load_image(data).shape == (128, 128, 3)


def test_decompression_bomb_is_refused_before_decoding():
    bomb = png_bomb(60_000, 60_000)  # 3.6 gigapixels in a few kilobytes
    assert len(bomb) < 100_000
    with pytest.raises(ImageTooLarge):
        load_image(bomb)


def test_core_does_not_import_frameworks():
    code = (
        "import sys\n"
        "import pneumoscan, pneumoscan.imaging.preprocess, pneumoscan.model.predictor, pneumoscan.schemas\n"
        "import pneumoscan.settings, pneumoscan.errors, pneumoscan.model.scoring, cli\n"
        "print(sorted(m for m in ('bentoml', 'huey', 'locust') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
