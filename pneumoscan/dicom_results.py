"""A scored DICOM chest radiograph -> DICOM objects that go back into its study.

Each result is a Comprehensive SR following TID 1500 (the finding, the probability and the
threshold, reported by the pneumoscan device), or an SR saying the image was not analysed and
why, plus an RGB Secondary Capture of the Grad-CAM overlay with a burned-in warning banner. All
carry the source's patient and study modules; none is verified (preliminary, unverified).

Codes: the finding is SCT 404684003 "Clinical finding" with the value SCT 233604007 "Pneumonia"
(label PNEUMONIA) or SCT 17621005 "Normal" (label NORMAL, the model's own class name); the
probability is DCM 122157 "Probability" and the threshold DCM 122411 "Threshold Value", both in
UCUM "1"; an out-of-distribution flag and a refusal are DCM 121106 "Comment" text items.

UIDs are derived from the source's UIDs, the model version and the kind of result, so scoring
the same image with the same model again gives the same objects, which a PACS then replaces.
"""

from __future__ import annotations

import copy

import highdicom as hd
import numpy as np
import pydicom
from PIL import Image, ImageDraw, ImageFont
from pydicom.sr.codedict import codes
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from pneumoscan.schemas import Prediction

NAME = "pneumoscan"
MANUFACTURER = "pneumoscan"
SR_SERIES_DESCRIPTION = "pneumoscan AI result"
SC_SERIES_DESCRIPTION = "pneumoscan AI result (Grad-CAM)"
SR_SERIES_NUMBER = 9901
SC_SERIES_NUMBER = 9902

FINDING = hd.sr.CodedConcept("404684003", "SCT", "Clinical finding")
PNEUMONIA = hd.sr.CodedConcept("233604007", "SCT", "Pneumonia")
NORMAL = hd.sr.CodedConcept("17621005", "SCT", "Normal")
PROBABILITY = hd.sr.CodedConcept("122157", "DCM", "Probability")
THRESHOLD = hd.sr.CodedConcept("122411", "DCM", "Threshold Value")
COMMENT = hd.sr.CodedConcept("121106", "DCM", "Comment")
NO_UNITS = hd.sr.CodedConcept("1", "UCUM", "no units")
PROCEDURE = hd.sr.CodedConcept("399208008", "SCT", "Plain chest X-ray")
SOURCE_FOR_PROCESSING = hd.sr.CodedConcept("121322", "DCM", "Source image for image processing operation")

OUT_OF_DISTRIBUTION_TEXT = (
    "The image is unlike the X-rays the model was trained on (out of distribution): do not trust the finding."
)
BANNER_TEXT = "AI RESULT - NOT FOR DIAGNOSTIC USE - pneumoscan {model_version}"

# Type 2 attributes highdicom reads from the source; a source without them still gets a result.
_PATIENT_AND_STUDY = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "AccessionNumber",
    "StudyID", "StudyDate", "StudyTime", "ReferringPhysicianName",
)
_PIXEL_TAGS = frozenset(pydicom.tag.Tag(k) for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"))


def derived_uid(source_sop_instance_uid: str, model_version: str, kind: str) -> str:
    """The SOP instance UID of the ``kind`` result of one source instance under one model version."""
    return generate_uid(entropy_srcs=[NAME, "instance", source_sop_instance_uid, model_version, kind])


def series_uid(study_instance_uid: str, model_version: str, kind: str) -> str:
    """The series UID shared by every ``kind`` result of one study under one model version."""
    return generate_uid(entropy_srcs=[NAME, "series", study_instance_uid, model_version, kind])


def device_uid(model_version: str) -> str:
    """The UID that names pneumoscan at one model version as the SR's observer device."""
    return generate_uid(entropy_srcs=[NAME, "device", model_version])


def structured_report(source: pydicom.Dataset, prediction: Prediction) -> pydicom.Dataset:
    """A preliminary TID 1500 Comprehensive SR of one prediction, in the source's study."""
    header = _header(source)
    finding = hd.sr.QualitativeEvaluation(FINDING, PNEUMONIA if prediction.label == "PNEUMONIA" else NORMAL)
    measurements = [
        hd.sr.Measurement(name=PROBABILITY, value=prediction.probability, unit=NO_UNITS),
        hd.sr.Measurement(name=THRESHOLD, value=prediction.threshold, unit=NO_UNITS),
    ]
    group = _group(header, prediction.model_version, "sr", measurements=measurements, evaluations=[finding])
    if prediction.out_of_distribution:
        _add_comment(group, OUT_OF_DISTRIBUTION_TEXT)
    return _report(header, prediction.model_version, group, kind="sr")


def not_analysed_report(source: pydicom.Dataset, model_version: str, code: str, detail: str) -> pydicom.Dataset:
    """A preliminary TID 1500 Comprehensive SR saying the image was not analysed and why; no finding."""
    header = _header(source)
    group = _group(header, model_version, "not-analysed")
    _add_comment(group, f"Not analysed ({code}): {detail}")
    return _report(header, model_version, group, kind="not-analysed")


def secondary_capture(source: pydicom.Dataset, overlay: Image.Image, model_version: str) -> pydicom.Dataset:
    """An RGB Secondary Capture of the overlay under a burned-in "not for diagnostic use" banner."""
    header = _header(source)
    pixels = np.asarray(with_banner(overlay.convert("RGB"), model_version), dtype=np.uint8)
    image = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=header,
        pixel_array=pixels,
        photometric_interpretation="RGB",
        bits_allocated=8,
        coordinate_system="PATIENT",
        series_instance_uid=series_uid(header.StudyInstanceUID, model_version, "sc"),
        series_number=SC_SERIES_NUMBER,
        sop_instance_uid=derived_uid(header.SOPInstanceUID, model_version, "sc"),
        instance_number=_instance_number(header),
        manufacturer=MANUFACTURER,
        patient_orientation=("L", "F"),
        transfer_syntax_uid=ExplicitVRLittleEndian,
        series_description=SC_SERIES_DESCRIPTION,
        manufacturer_model_name=NAME,
        software_versions=model_version,
    )
    # highdicom wants single letters when building; the source's own values (compound ones too,
    # or empty for unknown: Type 2C) are the ones that describe the overlay.
    image.PatientOrientation = _patient_orientation(header)
    image.copy_patient_and_study_information(header)
    image.ConversionType = "WSD"
    image.BurnedInAnnotation = "YES"
    image.RecognizableVisualFeatures = "NO"
    image.BodyPartExamined = header.get("BodyPartExamined") or "CHEST"
    for keyword in ("Laterality", "ImageLaterality", "LossyImageCompression"):
        if header.get(keyword):
            setattr(image, keyword, header.get(keyword))
    image.DerivationDescription = f"Grad-CAM heatmap of {NAME} {model_version} blended over the source image"
    image.SourceImageSequence = [_source_reference(header)]
    return image


def with_banner(overlay: Image.Image, model_version: str) -> Image.Image:
    """The RGB overlay below a black band that reads "AI RESULT - NOT FOR DIAGNOSTIC USE - ..."."""
    text = BANNER_TEXT.format(model_version=model_version)
    width, height = overlay.size
    size = max(10, width // 40)
    font = ImageFont.load_default(size=size)
    while size > 6 and font.getlength(text) > width * 0.96:
        size -= 1
        font = ImageFont.load_default(size=size)
    band = int(size * 1.8)
    image = Image.new("RGB", (width, height + band), (0, 0, 0))
    image.paste(overlay, (0, band))
    ImageDraw.Draw(image).text((width / 2, band / 2), text, fill=(255, 255, 0), font=font, anchor="mm")
    return image


def _header(source: pydicom.Dataset) -> pydicom.Dataset:
    """A copy of the source without its pixels, with empty Type 2 patient and study attributes where absent.

    highdicom adds the source's elements themselves to a result; copies keep the two apart.
    """
    header = pydicom.Dataset()
    for element in source:
        if element.tag not in _PIXEL_TAGS:
            header.add(copy.deepcopy(element))
    for keyword in _PATIENT_AND_STUDY:
        if keyword not in header:
            setattr(header, keyword, None)
    return header


def _group(
    header: pydicom.Dataset,
    model_version: str,
    kind: str,
    *,
    measurements: list[hd.sr.Measurement] | None = None,
    evaluations: list[hd.sr.QualitativeEvaluation] | None = None,
) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=derived_uid(header.SOPInstanceUID, model_version, f"{kind}-tracking"),
            identifier=f"{NAME} pneumonia screening",
        ),
        algorithm_id=hd.sr.AlgorithmIdentification(name=NAME, version=model_version, manufacturer=MANUFACTURER),
        source_images=[hd.sr.SourceImageForMeasurementGroup.from_source_image(header)],
        measurements=measurements,
        qualitative_evaluations=evaluations,
    )


def _add_comment(group: hd.sr.MeasurementsAndQualitativeEvaluations, text: str) -> None:
    comment = hd.sr.TextContentItem(name=COMMENT, value=text, relationship_type=hd.sr.RelationshipTypeValues.CONTAINS)
    group[0].ContentSequence.append(comment)


def _report(
    header: pydicom.Dataset, model_version: str, group: hd.sr.MeasurementsAndQualitativeEvaluations, *, kind: str
) -> hd.sr.ComprehensiveSR:
    device = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=device_uid(model_version), name=NAME, manufacturer_name=MANUFACTURER, model_name=model_version
    )
    context = hd.sr.ObservationContext(
        observer_device_context=hd.sr.ObserverContext(
            observer_type=codes.cid270.Device, observer_identifying_attributes=device
        )
    )
    content = hd.sr.MeasurementReport(
        observation_context=context, procedure_reported=PROCEDURE, imaging_measurements=[group]
    )
    return hd.sr.ComprehensiveSR(
        evidence=[header],
        content=content[0],
        series_instance_uid=series_uid(header.StudyInstanceUID, model_version, "sr"),
        series_number=SR_SERIES_NUMBER,
        sop_instance_uid=derived_uid(header.SOPInstanceUID, model_version, kind),
        instance_number=_instance_number(header),
        manufacturer=MANUFACTURER,
        is_complete=True,
        is_final=False,
        is_verified=False,
        series_description=SR_SERIES_DESCRIPTION,
        manufacturer_model_name=NAME,
        software_versions=model_version,
    )


def _instance_number(header: pydicom.Dataset) -> int:
    number = header.get("InstanceNumber")
    return int(number) if number not in (None, "") and int(number) > 0 else 1


def _patient_orientation(header: pydicom.Dataset) -> list[str] | None:
    values = header.get("PatientOrientation")
    return list(values) if values is not None and not isinstance(values, str) and len(values) == 2 else None


def _source_reference(header: pydicom.Dataset) -> pydicom.Dataset:
    item = pydicom.Dataset()
    item.ReferencedSOPClassUID = header.SOPClassUID
    item.ReferencedSOPInstanceUID = header.SOPInstanceUID
    item.PurposeOfReferenceCodeSequence = [SOURCE_FOR_PROCESSING]
    return item
