"""A scored DICOM chest radiograph -> DICOM objects that go back into its study.

Each result is a Comprehensive SR following TID 1500 (the finding, the probability and the
threshold, reported by the pneumoscan device), or an SR saying the image was not analysed and
why, plus an RGB Secondary Capture of the Grad-CAM overlay with a burned-in warning banner. All
carry the source's patient and study modules; none is verified (preliminary, unverified) until a
reader's review makes a new SR of it (``reviewed_report``: final, verified, naming its predecessor).

The SR follows TID 1500 as the DICOM templates have it, so that a PACS or viewer that reads AI
results (and pixelmed's DicomSRValidator, which the tests run) finds everything in its place:
- Procedure reported: SCT 363679005 "Imaging procedure" from CID 100 (Quantitative Diagnostic
  Imaging Procedures); the group's only other radiography code, LN 43468-8 "XR unspecified body
  region", is newer than the validator's edition of it;
- one measurement group (TID 1501) about the source image: tracking identifier and UID, the
  algorithm (TID 4019: name and version; that template has no row for a manufacturer), the
  probability of pneumonia (DCM 122157) and the threshold (DCM 122411), both in UCUM "1";
- the finding as a qualitative evaluation (TID 1500 rows 12-14, "Qualitative Evaluations"):
  ``pneumoscan.findings`` codes it, SCT 404684003 "Clinical finding" = 233604007 "Pneumonia" or
  17621005 "Normal"; an out-of-distribution flag, a refusal and the "not for diagnostic use"
  wording are DCM 121106 "Comment" text items beside it;
- the observer is the pneumoscan device, and the Contributing Equipment Sequence names it as
  processing equipment (manufacturer, model name, software version and a device UID that changes
  with the model version).

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
from pydicom.uid import ComprehensiveSRStorage, ExplicitVRLittleEndian, generate_uid

from pneumoscan import findings
from pneumoscan.findings import Code
from pneumoscan.reports.verification import Verification
from pneumoscan.schemas import Prediction

NAME = "pneumoscan"
MANUFACTURER = "pneumoscan"
SR_SERIES_DESCRIPTION = "pneumoscan AI result"
SC_SERIES_DESCRIPTION = "pneumoscan AI result (Grad-CAM)"
SR_SERIES_NUMBER = 9901
SC_SERIES_NUMBER = 9902


def _concept(code: Code) -> hd.sr.CodedConcept:
    return hd.sr.CodedConcept(code.value, code.scheme, code.meaning)


FINDING = _concept(findings.FINDING)
LABELS = {label: _concept(code) for label, code in findings.LABEL_CODES.items()}
PROBABILITY = _concept(findings.PROBABILITY)
NO_UNITS = _concept(findings.NO_UNITS)
THRESHOLD = hd.sr.CodedConcept("122411", "DCM", "Threshold Value")
COMMENT = hd.sr.CodedConcept("121106", "DCM", "Comment")
QUALITATIVE_EVALUATIONS = hd.sr.CodedConcept("C0034375", "UMLS", "Qualitative Evaluations")
PROCEDURE = hd.sr.CodedConcept.from_code(codes.cid100.ImagingProcedure)
PROCESSING_EQUIPMENT = hd.sr.CodedConcept.from_code(codes.cid7005.ProcessingEquipment)
SOURCE_FOR_PROCESSING = hd.sr.CodedConcept("121322", "DCM", "Source image for image processing operation")

OUT_OF_DISTRIBUTION_TEXT = (
    "The image is unlike the X-rays the model was trained on (out of distribution): do not trust the finding."
)
BANNER_TEXT = findings.NOT_FOR_DIAGNOSIS.upper().replace(", ", " - ") + " - pneumoscan {model_version}"

# Type 2 attributes highdicom reads from the source; a source without them still gets a result.
_PATIENT = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex")
_PATIENT_AND_STUDY = (*_PATIENT, "AccessionNumber", "StudyID", "StudyDate", "StudyTime", "ReferringPhysicianName")
_PIXEL_TAGS = frozenset(pydicom.tag.Tag(k) for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"))


def derived_uid(source_sop_instance_uid: str, model_version: str, kind: str) -> str:
    """The SOP instance UID of the ``kind`` result of one source instance under one model version."""
    return generate_uid(entropy_srcs=[NAME, "instance", source_sop_instance_uid, model_version, kind])


def series_uid(study_instance_uid: str, model_version: str, kind: str) -> str:
    """The series UID shared by every ``kind`` result of one study under one model version."""
    return generate_uid(entropy_srcs=[NAME, "series", study_instance_uid, model_version, kind])


def device_uid(model_version: str) -> str:
    """The UID that names pneumoscan at one model version: the SR's observer device and its
    contributing equipment."""
    return generate_uid(entropy_srcs=[NAME, "device", model_version])


def structured_report(source: pydicom.Dataset, prediction: Prediction) -> pydicom.Dataset:
    """A preliminary TID 1500 Comprehensive SR of one prediction, in the source's study."""
    header = _header(source)
    measurements = [
        hd.sr.Measurement(name=PROBABILITY, value=prediction.probability, unit=NO_UNITS),
        hd.sr.Measurement(name=THRESHOLD, value=prediction.threshold, unit=NO_UNITS),
    ]
    group = _group(header, prediction.model_version, "sr", measurements=measurements)
    comments = [OUT_OF_DISTRIBUTION_TEXT] if prediction.out_of_distribution else []
    evaluations = _evaluations(LABELS[prediction.label], comments)
    return _report(header, prediction.model_version, group, evaluations, kind="sr")


def not_analysed_report(source: pydicom.Dataset, model_version: str, code: str, detail: str) -> pydicom.Dataset:
    """A preliminary TID 1500 Comprehensive SR saying the image was not analysed and why; no finding."""
    header = _header(source)
    group = _group(header, model_version, "not-analysed")
    evaluations = _evaluations(None, [f"Not analysed ({code}): {detail}"])
    return _report(header, model_version, group, evaluations, kind="not-analysed")


def reviewed_report(
    source: pydicom.Dataset,
    prediction: Prediction | None,
    model_version: str,
    verification: Verification,
    organization: str,
) -> pydicom.Dataset:
    """The SR a reader's review makes of a result: FINAL and VERIFIED, the reader as verifying
    observer, the finding as the reader has it (the model's when they agree), and the report it
    replaces (the preliminary one, or the previous review's) in its Predecessor Documents Sequence.
    A new model version's correction (``verification.rescored``) stays unverified, with that
    version's finding, probability and algorithm version; the series is the first result's."""
    header = _header(source)
    kind = "sr" if prediction is not None else "not-analysed"
    answer = verification.rescored or prediction
    measurements = None
    if answer is not None:
        measurements = [
            hd.sr.Measurement(name=PROBABILITY, value=answer.probability, unit=NO_UNITS),
            hd.sr.Measurement(name=THRESHOLD, value=answer.threshold, unit=NO_UNITS),
        ]
    algorithm = answer.model_version if verification.rescored is not None and answer else model_version
    group = _group(header, model_version, kind, measurements=measurements, algorithm=algorithm)
    said = verification.said(prediction.label if prediction is not None else None)
    evaluations = _evaluations(LABELS.get(verification.label or ""), [said])
    replaced = kind if verification.sequence == 1 else f"review-{verification.sequence - 1}"
    predecessor = pydicom.Dataset()
    predecessor.StudyInstanceUID = header.StudyInstanceUID
    predecessor.SeriesInstanceUID = series_uid(header.StudyInstanceUID, model_version, "sr")
    predecessor.SOPClassUID = ComprehensiveSRStorage
    predecessor.SOPInstanceUID = derived_uid(header.SOPInstanceUID, model_version, replaced)
    observer = " ".join(verification.reader.replace("^", " ").replace("=", " ").split()) + "^"
    verified = (observer, organization) if verification.reader else None
    return _report(
        header,
        model_version,
        group,
        evaluations,
        kind=f"review-{verification.sequence}",
        verified=verified,
        previous=[predecessor],
    )


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
    # On the element: empty (None) is a valid value here, where highdicom's attribute is typed list[str].
    image["PatientOrientation"].value = _patient_orientation(header)
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
    algorithm: str | None = None,
) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=derived_uid(header.SOPInstanceUID, model_version, f"{kind}-tracking"),
            identifier=f"{NAME} pneumonia screening",
        ),
        algorithm_id=hd.sr.AlgorithmIdentification(name=NAME, version=algorithm or model_version),
        source_images=[hd.sr.SourceImageForMeasurementGroup.from_source_image(header)],
        measurements=measurements,
    )


def _evaluations(finding: hd.sr.CodedConcept | None, comments: list[str]) -> hd.sr.ContainerContentItem:
    """TID 1500 row 12: the finding (row 13) and the comments (row 14) of the whole report.

    Not in the measurement group: the validator's edition of TID 1501 has no rows for qualitative
    evaluations and flags them there, while both its edition and the current one of TID 1500 have
    these. The report is about one image, so the report's finding is the image's.
    """
    container = hd.sr.ContainerContentItem(
        name=QUALITATIVE_EVALUATIONS, relationship_type=hd.sr.RelationshipTypeValues.CONTAINS
    )
    items: list[hd.sr.ContentItem] = []
    if finding is not None:
        items.append(
            hd.sr.CodeContentItem(name=FINDING, value=finding, relationship_type=hd.sr.RelationshipTypeValues.CONTAINS)
        )
    for text in [*comments, findings.NOT_FOR_DIAGNOSIS]:
        items.append(
            hd.sr.TextContentItem(name=COMMENT, value=text, relationship_type=hd.sr.RelationshipTypeValues.CONTAINS)
        )
    container.ContentSequence = hd.sr.ContentSequence(items)
    return container


def _report(
    header: pydicom.Dataset,
    model_version: str,
    group: hd.sr.MeasurementsAndQualitativeEvaluations,
    evaluations: hd.sr.ContainerContentItem,
    *,
    kind: str,
    verified: tuple[str, str] | None = None,
    previous: list[pydicom.Dataset] | None = None,
) -> hd.sr.ComprehensiveSR:
    """A preliminary, unverified SR; with ``verified`` (the observer's name, the organization),
    final and verified; with the ``previous`` versions it replaces."""
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
    )[0]
    content.ContentSequence.append(evaluations)
    return hd.sr.ComprehensiveSR(
        evidence=[header],
        content=content,
        series_instance_uid=series_uid(header.StudyInstanceUID, model_version, "sr"),
        series_number=SR_SERIES_NUMBER,
        sop_instance_uid=derived_uid(header.SOPInstanceUID, model_version, kind),
        instance_number=_instance_number(header),
        manufacturer=MANUFACTURER,
        is_complete=True,
        is_final=verified is not None,
        is_verified=verified is not None,
        verifying_observer_name=verified[0] if verified else None,
        verifying_organization=verified[1] if verified else None,
        previous_versions=previous,
        series_description=SR_SERIES_DESCRIPTION,
        manufacturer_model_name=NAME,
        software_versions=model_version,
        contributing_equipment=[_equipment(model_version)],
    )


def _equipment(model_version: str) -> hd.ContributingEquipment:
    """pneumoscan at one model version as the equipment that processed the source image."""
    equipment = hd.ContributingEquipment(
        manufacturer=MANUFACTURER,
        purpose_of_reference=PROCESSING_EQUIPMENT,
        manufacturer_model_name=NAME,
        software_versions=model_version,
        contribution_description=f"{NAME} {model_version}: pneumonia screening of the source image",
    )
    # highdicom has no parameter for it; the UID tells one model version from another.
    equipment.DeviceUID = device_uid(model_version)
    return equipment


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
