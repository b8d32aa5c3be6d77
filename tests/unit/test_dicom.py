"""DICOM input: the display pipeline recovers the radiograph, and each unusable file is refused."""

from __future__ import annotations

import io
import logging

import numpy as np
import pydicom
import pytest
from pydicom.encaps import generate_frames
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, JPEGBaseline8Bit, JPEGLSLossless, RLELossless

from pneumoscan.errors import (
    ImageTooLarge,
    MultiFrameImage,
    NoPixelData,
    NotAnImage,
    TruncatedImage,
    UnsupportedModality,
    UnsupportedMode,
)
from pneumoscan.imaging import decode, load_image, load_plane
from tests.support import encode
from tests.support.dicom_files import PATIENT_ID, PATIENT_NAME, make_dicom

LOSSLESS_VARIANTS = [
    pytest.param({}, id="mono2-8bit"),
    pytest.param({"photometric": "MONOCHROME1"}, id="mono1-8bit"),
    pytest.param({"bits": 16}, id="mono2-16bit"),
    pytest.param({"bits": 16, "photometric": "MONOCHROME1"}, id="mono1-16bit"),
    pytest.param({"transfer_syntax": RLELossless}, id="rle-8bit"),
    pytest.param({"transfer_syntax": RLELossless, "bits": 16, "photometric": "MONOCHROME1"}, id="rle-mono1-16bit"),
    pytest.param({"transfer_syntax": JPEG2000Lossless, "bits": 16}, id="jpeg2000-16bit"),
    pytest.param({"transfer_syntax": JPEGLSLossless, "bits": 16, "photometric": "MONOCHROME1"}, id="jpegls-16bit"),
    pytest.param({"bits": 16, "rescale": (2.0, -100.0)}, id="rescale-slope-intercept"),
    pytest.param({"modality": "CR"}, id="modality-cr"),
    pytest.param({"modality": None}, id="modality-unset"),
]


@pytest.mark.parametrize("variant", LOSSLESS_VARIANTS)
def test_lossless_dicom_gives_the_same_model_input_as_png(xray_image, variant):
    data = make_dicom(xray_image, **variant)
    syntax = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).file_meta.TransferSyntaxUID
    assert syntax == variant.get("transfer_syntax", ExplicitVRLittleEndian)
    assert load_image(data).tobytes() == load_image(encode(xray_image, "PNG")).tobytes()


def test_jpeg_compressed_dicom_decodes_like_the_jpeg(xray_image):
    data = make_dicom(xray_image, transfer_syntax=JPEGBaseline8Bit)
    from_dicom = load_image(data)
    codestream = next(generate_frames(pydicom.dcmread(io.BytesIO(data)).PixelData, number_of_frames=1))
    # The same codestream through the JPEG path: equal but for the DICOM path's min-max stretch.
    assert np.abs(from_dicom - load_image(codestream)).max() <= 1 / 255 + 1e-6
    # Lossy (quality 95), so close to the original rather than equal.
    assert np.abs(from_dicom - load_image(encode(xray_image, "PNG"))).mean() < 0.01


def test_window_is_applied(xray_image):
    center, width = 100.0, 51.0
    image = np.asarray(decode(make_dicom(xray_image, window=(center, width))).image).astype(int)
    original = np.asarray(xray_image).astype(int)
    assert (image[original <= center - width / 2 - 1] == 0).all()
    assert (image[original >= center + width / 2] == 255).all()
    inside = (original > center - 20) & (original < center + 20)
    expected = ((original[inside] - (center - 0.5)) / (width - 1) + 0.5) * 255
    assert np.abs(image[inside] - expected).max() <= 1


def test_twelve_bit_data_without_window_spans_the_full_range(xray_image):
    data = make_dicom(xray_image, bits=16, rescale=(1 / 16, 0.0))  # values 0..4095 in 16 bits
    image = np.asarray(decode(data).image)
    assert image.min() == 0 and image.max() == 255


def test_dicom_source_carries_uids_and_no_patient_data(xray_image):
    data = make_dicom(xray_image, modality="DX")
    plane, source = load_plane(data), decode(data).dicom
    assert plane.shape == (128, 128)
    assert source.study_instance_uid and source.series_instance_uid and source.sop_instance_uid
    assert source.study_instance_uid != source.series_instance_uid
    assert source.modality == "DX"
    assert PATIENT_NAME not in repr(source) and PATIENT_ID not in repr(source)
    assert decode(encode(xray_image, "PNG")).dicom is None


@pytest.mark.parametrize(
    ("variant", "error"),
    [
        pytest.param({"pixel_data": False}, NoPixelData, id="no-pixel-data"),
        pytest.param({"frames": 3}, MultiFrameImage, id="multi-frame"),
        pytest.param({"colour": True}, UnsupportedMode, id="colour"),
        pytest.param({"modality": "CT"}, UnsupportedModality, id="ct"),
        pytest.param({"modality": "MR"}, UnsupportedModality, id="mr"),
        pytest.param({"modality": "US"}, UnsupportedModality, id="us"),
    ],
)
def test_unusable_dicom_is_refused(xray_image, variant, error):
    with pytest.raises(error) as raised:
        load_image(make_dicom(xray_image, **variant))
    assert PATIENT_NAME not in str(raised.value) and PATIENT_ID not in str(raised.value)


def test_truncated_dicom_is_refused(xray_image):
    data = make_dicom(xray_image, transfer_syntax=ExplicitVRLittleEndian)
    with pytest.raises(TruncatedImage):
        load_image(data[: len(data) - 5000])


def test_dicom_magic_with_garbage_is_refused():
    with pytest.raises((NotAnImage, TruncatedImage, NoPixelData)):
        load_image(b"\0" * 128 + b"DICM" + b"\xff" * 64)


def test_pixel_limit_is_checked_before_decoding(xray_image):
    with pytest.raises(ImageTooLarge):
        load_image(make_dicom(xray_image), max_pixels=1000)


def test_patient_fields_never_reach_the_log(xray_image, caplog):
    caplog.set_level(logging.DEBUG)
    for variant in ({}, {"modality": "CT"}, {"frames": 2}, {"colour": True}):
        try:
            load_image(make_dicom(xray_image, **variant))
        except Exception:
            pass
    assert PATIENT_NAME not in caplog.text and PATIENT_ID not in caplog.text


@pytest.mark.parametrize("variant", [
    pytest.param({"bits": 16}, id="no-voi"),
    pytest.param({"bits": 16, "photometric": "MONOCHROME1", "window": (30000.0, 20000.0)}, id="window"),
    pytest.param({"bits": 16, "rescale": (-0.5, 40000.0)}, id="negative-slope"),
])
def test_lookup_table_equals_the_pixelwise_pipeline(xray_image, variant):
    from pneumoscan.dicom import _display_values, _transform

    dataset = pydicom.dcmread(io.BytesIO(make_dicom(xray_image, **variant)))
    rng = np.random.default_rng(0)
    # Gaps in the values, so that the table covers values the image does not contain.
    pixels = (rng.integers(1000, 3000, size=(64, 48)) * 13).astype(np.uint16)
    assert np.array_equal(_display_values(pixels, dataset), _transform(pixels, dataset))
    assert np.array_equal(_display_values(dataset.pixel_array, dataset), _transform(dataset.pixel_array, dataset))


def test_non_monotonic_modality_table_is_scaled_over_the_values_that_occur(xray_image):
    from pydicom.dataset import Dataset

    from pneumoscan.dicom import _display_values, _transform

    dataset = pydicom.dcmread(io.BytesIO(make_dicom(xray_image, bits=16)))
    item = Dataset()
    item.LUTDescriptor = [4096, 0, 16]
    item.ModalityLUTType = "US"
    # Identity with one spike at a value the image does not contain.
    item.LUTData = [65535 if value == 2000 else value for value in range(4096)]
    dataset.ModalityLUTSequence = [item]
    pixels = np.arange(1500, 2600, dtype=np.uint16).reshape(50, 22)
    pixels[pixels == 2000] = 2001
    display = _display_values(pixels, dataset)
    assert np.array_equal(display, _transform(pixels, dataset))
    assert display.min() == 0 and display.max() == 255
