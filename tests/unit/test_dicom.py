"""DICOM input: the display pipeline recovers the radiograph, and each unusable file is refused."""

from __future__ import annotations

import contextlib
import io
import logging

import numpy as np
import pydicom
import pytest
from pydicom.encaps import generate_frames
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, JPEGBaseline8Bit, JPEGLSLossless, RLELossless

from pneumoscan.errors import (
    BlankImage,
    ImageTooLarge,
    InvalidImage,
    MultiFrameImage,
    NoPixelData,
    NotAnImage,
    NotForPresentation,
    TruncatedImage,
    UnsupportedBodyPart,
    UnsupportedModality,
    UnsupportedMode,
    UnsupportedView,
    error_from_code,
)
from pneumoscan.imaging.preprocess import decode, load_image, load_plane
from tests.support import encode
from tests.support.dicom_files import PATIENT_ID, PATIENT_NAME, make_dicom

# Code strings are upper case; some vendors write lower case anyway, and pydicom warns on writing it.
LOWER_CASE_CS = pytest.mark.filterwarnings("ignore:Invalid value for VR CS")

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
    # The intended use: frontal chest radiographs meant for presentation.
    pytest.param({"view_position": "AP"}, id="view-ap"),
    pytest.param({"view_position": "PA"}, id="view-pa"),
    pytest.param({"view_position": "AP SUPINE"}, id="view-ap-qualified"),
    pytest.param({"view_position": ""}, id="view-empty"),
    pytest.param({"view_position": None}, id="view-absent"),
    pytest.param({"body_part": "THORAX"}, id="body-part-thorax"),
    pytest.param({"body_part": "LUNG"}, id="body-part-lung"),
    pytest.param({"body_part": "Chest"}, id="body-part-any-case", marks=LOWER_CASE_CS),
    pytest.param({"body_part": " thorax "}, id="body-part-spaces", marks=LOWER_CASE_CS),
    pytest.param({"body_part": "CHEST PA"}, id="body-part-with-view"),
    # The words sites write in their own language.
    *(
        pytest.param({"body_part": word}, id=f"body-part-{word.lower()}")
        for word in ("TORAX", "BRUST", "POITRINE", "PECHO", "TORACE")
    ),
    # No body part is no evidence against the chest: the image gate judges the pixels, as for a JPEG.
    pytest.param({"body_part": ""}, id="body-part-empty"),
    pytest.param({"body_part": None}, id="body-part-absent"),
    pytest.param({"presentation_intent": "FOR PRESENTATION"}, id="for-presentation"),
    pytest.param({"presentation_lut_shape": "IDENTITY"}, id="presentation-lut-identity"),
    pytest.param({"presentation_lut_shape": "INVERSE", "bits": 16}, id="presentation-lut-inverse"),
    # INVERSE is what MONOCHROME1 means already (the DX module requires it there): one inversion.
    pytest.param({"photometric": "MONOCHROME1", "presentation_lut_shape": "INVERSE"}, id="mono1-inverse"),
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
    data = make_dicom(xray_image, bits=16, rescale=(16.0, 0.0))  # stored values 0..4096 in 16 bits
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
        pytest.param({"modality": None}, UnsupportedModality, id="modality-missing"),
        pytest.param({"modality": ""}, UnsupportedModality, id="modality-empty"),
    ],
)
def test_unusable_dicom_is_refused(xray_image, variant, error):
    with pytest.raises(error) as raised:
        load_image(make_dicom(xray_image, **variant))
    assert PATIENT_NAME not in str(raised.value) and PATIENT_ID not in str(raised.value)


# Files that decode fine but are not the frontal chest radiographs the model was made for.
NOT_INTENDED_USE = [
    pytest.param({"view_position": "LL"}, "unsupported_view", "LL", id="lateral-ll"),
    pytest.param({"view_position": "RL"}, "unsupported_view", "RL", id="lateral-rl"),
    pytest.param({"view_position": "LATERAL"}, "unsupported_view", "LATERAL", id="lateral-word"),
    pytest.param({"view_position": "RLD"}, "unsupported_view", "RLD", id="decubitus-rld"),
    pytest.param({"view_position": "LLD"}, "unsupported_view", "LLD", id="decubitus-lld"),
    pytest.param({"view_position": "RLO"}, "unsupported_view", "RLO", id="oblique-rlo"),
    pytest.param({"view_position": "LLO"}, "unsupported_view", "LLO", id="oblique-llo"),
    pytest.param({"view_position": "AP LLD"}, "unsupported_view", "AP LLD", id="decubitus-ap-lld"),
    pytest.param({"body_part": "HAND"}, "unsupported_body_part", "HAND", id="body-part-hand"),
    pytest.param({"body_part": "SKULL"}, "unsupported_body_part", "SKULL", id="body-part-skull"),
    pytest.param(
        {"body_part": "abdomen"}, "unsupported_body_part", "ABDOMEN", id="body-part-abdomen", marks=LOWER_CASE_CS
    ),
    pytest.param({"body_part": "HAND CHEST"}, "unsupported_body_part", "HAND CHEST", id="body-part-hand-first"),
    pytest.param(
        {"presentation_intent": "FOR PROCESSING"}, "not_for_presentation", "FOR PRESENTATION", id="for-processing"
    ),
    pytest.param({"modality": None}, "unsupported_modality", "Modality", id="modality-missing"),
    # The modality is checked first; a frontal chest CT is still a CT.
    pytest.param({"modality": "CT", "body_part": "HAND"}, "unsupported_modality", "CT", id="ct-before-body-part"),
]


@pytest.mark.parametrize(("variant", "code", "quoted"), NOT_INTENDED_USE)
def test_dicom_outside_the_intended_use_is_refused_with_a_code(xray_image, variant, code, quoted):
    from service.http.errors import status_for

    with pytest.raises(InvalidImage) as raised:
        load_image(make_dicom(xray_image, **variant))
    error = raised.value
    assert error.code == code
    assert type(error_from_code(code, error.detail)) is type(error)
    assert status_for(error) == 422, "refused as unusable input, like unsupported_modality, never a 500"
    assert quoted in error.detail
    for patient_field in (PATIENT_NAME, PATIENT_ID, "20190101"):
        assert patient_field not in error.detail


def test_intended_use_errors_sit_beside_unsupported_modality():
    for cls in (UnsupportedView, UnsupportedBodyPart, NotForPresentation):
        assert cls.__bases__ == UnsupportedModality.__bases__


def test_for_processing_sop_class_is_refused_without_a_presentation_intent(xray_image):
    from pydicom.uid import DigitalXRayImageStorageForProcessing

    dataset = pydicom.dcmread(io.BytesIO(make_dicom(xray_image)))
    dataset.SOPClassUID = dataset.file_meta.MediaStorageSOPClassUID = DigitalXRayImageStorageForProcessing
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    with pytest.raises(NotForPresentation, match="only FOR PRESENTATION"):
        load_image(buffer.getvalue())


def test_presentation_lut_inverse_inverts_a_monochrome2_image(xray_image):
    plain = np.asarray(decode(make_dicom(xray_image)).image).astype(int)
    dataset = pydicom.dcmread(io.BytesIO(make_dicom(xray_image)))
    dataset.PresentationLUTShape = "INVERSE"  # the same stored values, now to be shown inverted
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    inverse = np.asarray(decode(buffer.getvalue()).image).astype(int)
    assert np.abs(inverse - (255 - plain)).max() <= 1
    assert np.abs(inverse - plain).mean() > 50


@pytest.mark.parametrize(
    ("rescale", "padding_value"),
    [
        pytest.param((16.0, 0.0), 65535, id="high-padding"),  # stored 0..4096, padding 65535
        pytest.param((16.0, -16000.0), 0, id="low-padding"),  # stored 1000..5096, padding 0
    ],
)
def test_padding_does_not_squash_the_contrast(xray_image, rescale, padding_value):
    border = 24
    unpadded = np.asarray(decode(make_dicom(xray_image, bits=16, rescale=rescale)).image).astype(int)
    padded_file = make_dicom(xray_image, bits=16, rescale=rescale, padding=(border, padding_value))
    padded = np.asarray(decode(padded_file).image).astype(int)
    inside = (slice(border, -border), slice(border, -border))
    difference = np.abs(padded[inside] - unpadded[inside])
    # The unpadded image's range includes its border, so the stretch may differ by a level or two.
    assert difference.mean() < 2 and difference.max() <= 4
    assert (padded[:border] == 0).all() and (padded[:, -border:] == 0).all(), "padding is shown black"
    # Without the padding declared, the same pixels would squash the contrast.
    dataset = pydicom.dcmread(io.BytesIO(padded_file))
    del dataset.PixelPaddingValue
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    squashed = np.asarray(decode(buffer.getvalue()).image).astype(int)
    assert np.abs(squashed[inside] - unpadded[inside]).mean() > 10


def test_padding_range_limit_excludes_the_whole_range(xray_image):
    border = 16
    rescale = (16.0, 0.0)  # stored 0..4096
    unpadded = np.asarray(decode(make_dicom(xray_image, bits=16, rescale=rescale)).image).astype(int)
    padded = np.asarray(
        decode(
            make_dicom(
                xray_image,
                bits=16,
                rescale=rescale,
                padding=(border, 60000),
                padding_range_limit=65535,
            )
        ).image
    ).astype(int)
    inside = (slice(border, -border), slice(border, -border))
    assert np.abs(padded[inside] - unpadded[inside]).mean() < 2
    assert (padded[:border] == 0).all()


def test_padding_on_the_lookup_table_and_pixelwise_paths_agree(xray_image, monkeypatch):
    from pneumoscan.dicom import display as dicom_display

    dataset = pydicom.dcmread(io.BytesIO(make_dicom(xray_image, bits=16, padding=(8, 65535))))
    by_table = dicom_display.display_values(dataset.pixel_array, dataset)
    monkeypatch.setattr(dicom_display, "LOOKUP_TABLE_LIMIT", 0)  # every value range goes pixel by pixel
    by_pixel = dicom_display.display_values(dataset.pixel_array, dataset)
    assert np.array_equal(by_table, by_pixel)
    assert (by_table[:8] == 0).all() and by_table[8:-8, 8:-8].max() == 255


def test_an_image_that_is_all_padding_is_blank(xray_image):
    with pytest.raises(BlankImage):
        load_image(make_dicom(xray_image, bits=16, padding=(400, 1000)))


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
        with contextlib.suppress(Exception):  # refused or not, the log is what is checked
            load_image(make_dicom(xray_image, **variant))
    assert PATIENT_NAME not in caplog.text and PATIENT_ID not in caplog.text


@pytest.mark.parametrize(
    "variant",
    [
        pytest.param({"bits": 16}, id="no-voi"),
        pytest.param({"bits": 16, "photometric": "MONOCHROME1", "window": (30000.0, 20000.0)}, id="window"),
        pytest.param({"bits": 16, "rescale": (-0.5, 40000.0)}, id="negative-slope"),
    ],
)
def test_lookup_table_equals_the_pixelwise_pipeline(xray_image, variant):
    from pneumoscan.dicom.display import display_values, transform

    dataset = pydicom.dcmread(io.BytesIO(make_dicom(xray_image, **variant)))
    rng = np.random.default_rng(0)
    # Gaps in the values, so that the table covers values the image does not contain.
    pixels = (rng.integers(1000, 3000, size=(64, 48)) * 13).astype(np.uint16)
    assert np.array_equal(display_values(pixels, dataset), transform(pixels, dataset))
    assert np.array_equal(display_values(dataset.pixel_array, dataset), transform(dataset.pixel_array, dataset))


def test_non_monotonic_modality_table_is_scaled_over_the_values_that_occur(xray_image):
    from pydicom.dataset import Dataset

    from pneumoscan.dicom.display import display_values, transform

    dataset = pydicom.dcmread(io.BytesIO(make_dicom(xray_image, bits=16)))
    item = Dataset()
    item.LUTDescriptor = [4096, 0, 16]
    item.ModalityLUTType = "US"
    # Identity with one spike at a value the image does not contain.
    item.LUTData = [65535 if value == 2000 else value for value in range(4096)]
    dataset.ModalityLUTSequence = [item]
    pixels = np.arange(1500, 2600, dtype=np.uint16).reshape(50, 22)
    pixels[pixels == 2000] = 2001
    display = display_values(pixels, dataset)
    assert np.array_equal(display, transform(pixels, dataset))
    assert display.min() == 0 and display.max() == 255
