"""Images that are not chest X-rays, for fitting and checking the input gate.

Built only from what installed packages ship (scikit-image's and matplotlib's sample data,
pydicom's test files) and from generated images, never downloaded, so every machine builds the
same set. Three kinds:

- ``synthetic``: blank, uniform and noise frames, gradients, patterns, a page of text, a drawing;
- ``photo``: natural photographs, scans and logos;
- ``medical``: other modalities and body parts (CT, MR, nuclear medicine whole-body, ultrasound,
  fundus, histology, a CT phantom), converted to PNG so that the DICOM modality check does not
  already refuse them.
"""

from __future__ import annotations

import gzip
import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

KINDS = ("synthetic", "photo", "medical")
SIZE = 512


@dataclass(frozen=True)
class NotXray:
    kind: str
    name: str
    data: bytes  # PNG or JPEG bytes


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _to_uint8(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    low, high = np.percentile(values, 0.5), np.percentile(values, 99.5)
    scaled = (values - low) / (high - low) if high > low else np.zeros_like(values)
    return np.rint(np.clip(scaled, 0, 1) * 255).astype(np.uint8)


def _figure_png(draw: Callable) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure = plt.figure(figsize=(6, 6), dpi=96)
    draw(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return buffer.getvalue()


def _text_page(figure) -> None:
    words = [
        *("radiograph", "patient", "study", "report", "finding", "impression", "lung", "clear", "no"),
        *("acute", "process", "opacity", "consolidation", "effusion", "heart", "size", "normal"),
    ]
    rng = np.random.default_rng(3)
    for line in range(40):
        text = " ".join(rng.choice(words, size=9))
        figure.text(0.05, 0.97 - line * 0.024, text, fontsize=9, family="serif")


def _cartoon(figure) -> None:
    from matplotlib import patches

    axis = figure.add_axes((0, 0, 1, 1))
    axis.set_xlim(0, 10)
    axis.set_ylim(0, 10)
    axis.axis("off")
    axis.add_patch(patches.Rectangle((0, 0), 10, 10, color="#9fd4f5"))
    axis.add_patch(patches.Rectangle((0, 0), 10, 3, color="#5fa84b"))
    axis.add_patch(patches.Circle((8, 8), 1.0, color="#f7d23e"))
    axis.add_patch(patches.Circle((4, 5), 2.0, color="#f2c49b", ec="black", lw=3))
    axis.add_patch(patches.Circle((3.3, 5.6), 0.25, color="black"))
    axis.add_patch(patches.Circle((4.7, 5.6), 0.25, color="black"))
    axis.add_patch(patches.Arc((4, 4.6), 2, 1.2, theta1=200, theta2=340, lw=3))


def _chart(figure) -> None:
    axis = figure.add_subplot()
    x = np.linspace(0, 10, 200)
    for k in range(4):
        axis.plot(x, np.sin(x + k) * (k + 1), label=f"series {k}")
    axis.legend()
    axis.grid(True)


def synthetic() -> list[NotXray]:
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:SIZE, 0:SIZE] / (SIZE - 1)
    smooth = np.asarray(
        Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8)).resize((SIZE, SIZE), Image.Resampling.BICUBIC)
    )
    arrays = {
        "black": np.zeros((SIZE, SIZE), np.uint8),
        "white": np.full((SIZE, SIZE), 255, np.uint8),
        "mid_grey": np.full((SIZE, SIZE), 128, np.uint8),
        "grey_faint_noise": (128 + rng.integers(-2, 3, (SIZE, SIZE))).astype(np.uint8),
        "uniform_noise": rng.integers(0, 256, (SIZE, SIZE), dtype=np.uint8),
        "gaussian_noise": np.clip(rng.normal(128, 40, (SIZE, SIZE)), 0, 255).astype(np.uint8),
        "colour_noise": rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8),
        "smooth_blobs": smooth,
        "horizontal_gradient": np.rint(x * 255).astype(np.uint8),
        "radial_gradient": np.rint(np.clip(1 - np.hypot(x - 0.5, y - 0.5) * 1.6, 0, 1) * 255).astype(np.uint8),
        "checkerboard": ((((x * 8).astype(int) + (y * 8).astype(int)) % 2) * 255).astype(np.uint8),
        "stripes": np.rint((np.sin(x * 40) + 1) * 127.5).astype(np.uint8),
    }
    images = [NotXray("synthetic", name, _png(array)) for name, array in arrays.items()]
    images += [
        NotXray("synthetic", "text_page", _figure_png(_text_page)),
        NotXray("synthetic", "cartoon", _figure_png(_cartoon)),
        NotXray("synthetic", "line_chart", _figure_png(_chart)),
    ]
    return images


def photos() -> list[NotXray]:
    import matplotlib.cbook
    from skimage import data

    names = [
        "astronaut",
        "camera",
        "coffee",
        "chelsea",
        "rocket",
        "motorcycle_left",
        "coins",
        "moon",
        "page",
        "text",
        "brick",
        "grass",
        "gravel",
        "clock_motion",
        "hubble_deep_field",
        "color",
        "logo",
        "horse",
    ]
    data_dir = Path(data.__file__).parent
    images = []
    for name in names:
        path = next(data_dir.glob(f"{name}.*"))
        images.append(NotXray("photo", name, path.read_bytes()))
    for sample in ("grace_hopper.jpg", "Minduka_Present_Blue_Pack.png", "logo2.png"):
        path = Path(matplotlib.cbook.get_sample_data(sample, asfileobj=False))
        images.append(NotXray("photo", Path(sample).stem, path.read_bytes()))
    return images


def _dicom_png(file_name: str) -> bytes:
    import pydicom
    from pydicom.data import get_testdata_file
    from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut

    path = get_testdata_file(file_name, download=False)
    if not isinstance(path, str):
        raise FileNotFoundError(f"pydicom's test data has no {file_name}; install pydicom with its test files.")
    dataset = pydicom.dcmread(path)
    pixels = dataset.pixel_array
    if dataset.PhotometricInterpretation == "PALETTE COLOR":
        return _png(np.asarray(apply_color_lut(pixels, dataset) >> 8, dtype=np.uint8))
    if pixels.ndim == 3:
        return _png(pixels.astype(np.uint8))
    values = apply_modality_lut(pixels, dataset)
    if "WindowCenter" in dataset and "WindowWidth" in dataset:
        values = apply_voi_lut(values, dataset)
    return _png(_to_uint8(values))


def medical() -> list[NotXray]:
    import matplotlib.cbook
    from skimage import data

    data_dir = Path(data.__file__).parent
    images = [
        NotXray("medical", name, next(data_dir.glob(f"{name}.*")).read_bytes())
        for name in ("retina", "microaneurysms", "ihc", "cell", "phantom")
    ]
    packed = Path(matplotlib.cbook.get_sample_data("s1045.ima.gz", asfileobj=False)).read_bytes()
    slice_ = np.frombuffer(gzip.decompress(packed), dtype=np.uint16).reshape(256, 256)
    images.append(NotXray("medical", "mr_head_s1045", _png(_to_uint8(slice_))))
    for file_name, name in [
        ("CT_small.dcm", "ct_small"),
        ("693_J2KI.dcm", "ct_693"),
        ("MR_small.dcm", "mr_small"),
        ("JPEG2000.dcm", "nm_whole_body"),
        ("JPGExtended.dcm", "nm_whole_body_12bit"),
        ("image_dfl.dcm", "ot_image_dfl"),
        ("examples_jpeg2k.dcm", "us_colour"),
        ("examples_palette.dcm", "us_palette"),
    ]:
        images.append(NotXray("medical", name, _dicom_png(file_name)))
    return images


def not_xrays() -> list[NotXray]:
    """The whole set, in a fixed order."""
    return synthetic() + photos() + medical()
