"""DICOM results: a TID 1500 SR, a not-analysed SR and a Grad-CAM Secondary Capture, in the source's study.

Every SR passes dciodvfy (dicom3tools) and pixelmed's DicomSRValidator, which checks the TID 1500
templates and their context groups too."""

from __future__ import annotations

import copy
import io
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.uid import ComprehensiveSRStorage, SecondaryCaptureImageStorage

from pneumoscan import findings
from pneumoscan.dicom.results import (
    BANNER_TEXT,
    derived_uid,
    device_uid,
    not_analysed_report,
    reviewed_report,
    secondary_capture,
    structured_report,
)
from pneumoscan.model.gradcam import overlay
from pneumoscan.reports.verification import Verification
from pneumoscan.result import Result
from pneumoscan.schemas import Prediction
from tests.support import REPO_ROOT, sr_validator
from tests.support.dicom_files import PATIENT_ID, PATIENT_NAME, make_dicom

MODEL_VERSION = "20240601-abc123"
FINDING = ("404684003", "SCT")
PNEUMONIA = ("233604007", "SCT")
NORMAL = ("17621005", "SCT")
PROBABILITY = ("122157", "DCM")
THRESHOLD = ("122411", "DCM")
COMMENT = ("121106", "DCM")
PROCEDURE_REPORTED = ("121058", "DCM")
QUALITATIVE_EVALUATIONS = ("C0034375", "UMLS")
ALGORITHM_MANUFACTURER = ("122405", "DCM")


@pytest.fixture()
def source(xray_image) -> pydicom.Dataset:
    """A DX image as a PACS sends it: with the study's accession number, date and ID."""
    dataset = pydicom.dcmread(io.BytesIO(make_dicom(xray_image)))
    dataset.AccessionNumber = "ACC-2024-0042"
    dataset.StudyDate, dataset.StudyTime, dataset.StudyID = "20240601", "101500", "S-17"
    dataset.PatientSex = "F"
    dataset.InstanceNumber = 3
    return dataset


def prediction(label: str = "PNEUMONIA", *, model_version: str = MODEL_VERSION, **extra) -> Prediction:
    probability = 0.83 if label == "PNEUMONIA" else 0.12
    return Prediction(label=label, probability=probability, threshold=0.42, model_version=model_version, **extra)


def written(dataset: pydicom.Dataset, path: Path) -> pydicom.Dataset:
    dataset.save_as(path, enforce_file_format=True)
    return pydicom.dcmread(path)


def items(dataset: pydicom.Dataset) -> Iterator[pydicom.Dataset]:
    """Every content item of an SR, depth first."""
    for item in dataset.get("ContentSequence", []):
        yield item
        yield from items(item)


def named(dataset: pydicom.Dataset, code: tuple[str, str]) -> list[pydicom.Dataset]:
    return [
        item
        for item in items(dataset)
        if (item.ConceptNameCodeSequence[0].CodeValue, item.ConceptNameCodeSequence[0].CodingSchemeDesignator) == code
    ]


def coded(item: pydicom.Dataset) -> tuple[str, str]:
    return item.ConceptCodeSequence[0].CodeValue, item.ConceptCodeSequence[0].CodingSchemeDesignator


def assert_in_source_study(result: pydicom.Dataset, source: pydicom.Dataset) -> None:
    assert result.PatientID == PATIENT_ID and str(result.PatientName) == PATIENT_NAME
    assert result.PatientBirthDate == source.PatientBirthDate and result.PatientSex == "F"
    assert result.StudyInstanceUID == source.StudyInstanceUID
    assert result.AccessionNumber == source.AccessionNumber and result.StudyID == source.StudyID
    assert result.StudyDate == source.StudyDate
    assert result.SeriesInstanceUID != source.SeriesInstanceUID
    assert result.SOPInstanceUID != source.SOPInstanceUID


def assert_valid(path: Path) -> None:
    """dciodvfy (dicom3tools) finds no errors in the IOD."""
    if shutil.which("dciodvfy") is None:
        pytest.skip("dciodvfy (apt-get install dicom3tools) is not installed")
    result = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
    errors = [line for line in (result.stdout + result.stderr).splitlines() if "Error" in line]
    assert errors == []


def assert_valid_sr(path: Path) -> None:
    """dciodvfy finds no errors, and pixelmed's DicomSRValidator neither errors nor content items
    that its templates do not have."""
    assert_valid(path)
    report = sr_validator.validate(path)
    assert (report.errors, report.warnings) == ([], [])


def comments(dataset: pydicom.Dataset) -> list[str]:
    return [item.TextValue for item in named(dataset, COMMENT)]


@pytest.mark.parametrize("label, value", [("PNEUMONIA", PNEUMONIA), ("NORMAL", NORMAL)])
def test_structured_report_is_a_tid_1500_sr_in_the_source_study(source, tmp_path, label, value):
    result = prediction(label)
    path = tmp_path / "sr.dcm"
    sr = written(structured_report(source, result), path)

    assert sr.SOPClassUID == ComprehensiveSRStorage and sr.Modality == "SR"
    assert sr.file_meta.MediaStorageSOPInstanceUID == sr.SOPInstanceUID
    assert sr.ContentTemplateSequence[0].TemplateIdentifier == "1500"
    assert sr.ContentTemplateSequence[0].MappingResource == "DCMR"
    assert_in_source_study(sr, source)
    assert sr.SeriesDescription == "pneumoscan AI result" and sr.Manufacturer == "pneumoscan"
    assert (sr.CompletionFlag, sr.VerificationFlag, sr.PreliminaryFlag) == ("COMPLETE", "UNVERIFIED", "PRELIMINARY")
    evidence = sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
    assert evidence.ReferencedSOPInstanceUID == source.SOPInstanceUID

    [procedure] = named(sr, PROCEDURE_REPORTED)
    assert coded(procedure) == ("363679005", "SCT")  # "Imaging procedure", in CID 100
    [evaluations] = named(sr, QUALITATIVE_EVALUATIONS)
    [finding] = named(sr, FINDING)
    assert coded(finding) == value and finding in evaluations.ContentSequence
    assert comments(sr) == [findings.NOT_FOR_DIAGNOSIS]
    for code, expected in [(PROBABILITY, result.probability), (THRESHOLD, result.threshold)]:
        [measurement] = named(sr, code)
        [measured] = measurement.MeasuredValueSequence
        assert float(measured.NumericValue) == pytest.approx(expected)
        assert (
            measured.MeasurementUnitsCodeSequence[0].CodeValue,
            measured.MeasurementUnitsCodeSequence[0].CodingSchemeDesignator,
        ) == ("1", "UCUM")
    assert_valid_sr(path)


def test_structured_report_reads_back_with_highdicom(source, tmp_path):
    path = tmp_path / "sr.dcm"
    written(structured_report(source, prediction()), path)
    sr = hd.sr.srread(path)
    assert isinstance(sr, hd.sr.ComprehensiveSR)

    [observer] = sr.content.get_observer_contexts()
    assert observer.observer_type.value == "121007"  # DCM "Device"
    device = {item.name.value: item.value for item in observer.observer_identifying_attributes}
    assert device["121013"] == "pneumoscan" and device["121014"] == "pneumoscan"
    assert device["121015"] == MODEL_VERSION

    [group] = sr.content.get_image_measurement_groups()
    assert group.tracking_identifier and group.tracking_uid
    [image] = group.source_images
    assert image.referenced_sop_instance_uid == source.SOPInstanceUID
    algorithm = {item.ConceptNameCodeSequence[0].CodeValue: item.TextValue for item in named(sr, ("111001", "DCM"))}
    algorithm |= {item.ConceptNameCodeSequence[0].CodeValue: item.TextValue for item in named(sr, ("111003", "DCM"))}
    assert algorithm == {"111001": "pneumoscan", "111003": MODEL_VERSION}
    assert named(sr, ALGORITHM_MANUFACTURER) == []  # TID 4019 has no such row
    probability = group.get_measurements(name=hd.sr.CodedConcept(*PROBABILITY, "Probability"))[0]
    assert probability.value == pytest.approx(0.83) and probability.unit.value == "1"


def test_the_contributing_equipment_names_the_model_version(source):
    def equipment(model_version: str) -> pydicom.Dataset:
        sr = structured_report(source, prediction(model_version=model_version))
        [item] = [item for item in sr.ContributingEquipmentSequence if item.Manufacturer == "pneumoscan"]
        return item

    item = equipment(MODEL_VERSION)
    assert (item.ManufacturerModelName, item.SoftwareVersions) == ("pneumoscan", MODEL_VERSION)
    assert item.PurposeOfReferenceCodeSequence[0].CodeValue == "109102"  # DCM "Processing Equipment"
    assert item.DeviceUID == device_uid(MODEL_VERSION) != equipment("20250101-def456").DeviceUID


def test_an_out_of_distribution_result_says_so(source, tmp_path):
    sr = structured_report(source, prediction(out_of_distribution=True, ood_score=1.7))
    [comment, _] = comments(sr)
    assert "out of distribution" in comment
    assert len(named(sr, FINDING)) == 1
    assert_valid_sr(Path(written(sr, tmp_path / "sr.dcm").filename))


def test_not_analysed_report_carries_the_reason_and_no_finding(source, tmp_path):
    detail = "The image does not look like a frontal chest X-ray."
    path = tmp_path / "not-analysed.dcm"
    sr = written(not_analysed_report(source, MODEL_VERSION, "not_a_chest_xray", detail), path)

    assert sr.SOPClassUID == ComprehensiveSRStorage
    assert sr.ContentTemplateSequence[0].TemplateIdentifier == "1500"
    assert_in_source_study(sr, source)
    comment, wording = comments(sr)
    assert "not_a_chest_xray" in comment and detail in comment
    assert "Not analysed" in comment and wording == findings.NOT_FOR_DIAGNOSIS
    assert named(sr, FINDING) == [] and named(sr, PROBABILITY) == [] and named(sr, THRESHOLD) == []
    assert [item for item in items(sr) if item.ValueType == "NUM"] == []
    assert PATIENT_ID not in comment
    assert sr.SOPInstanceUID != structured_report(source, prediction()).SOPInstanceUID
    assert sr.SeriesInstanceUID == structured_report(source, prediction()).SeriesInstanceUID
    assert_valid_sr(path)


def test_a_source_without_optional_study_attributes_still_gets_results(xray_image):
    bare = pydicom.dcmread(io.BytesIO(make_dicom(xray_image)))
    assert "AccessionNumber" not in bare and "PatientSex" not in bare
    sr = structured_report(bare, prediction())
    assert sr.PatientID == PATIENT_ID and sr.AccessionNumber in (None, "")
    assert not_analysed_report(bare, MODEL_VERSION, "unsupported_view", "Lateral view.").PatientID == PATIENT_ID
    assert secondary_capture(bare, xray_image.convert("RGB"), MODEL_VERSION).PatientID == PATIENT_ID


def test_secondary_capture_is_an_rgb_overlay_with_a_burned_in_banner(source, xray_image, tmp_path):
    drawn = overlay(xray_image, np.linspace(0.0, 1.0, 64 * 64, dtype=np.float32).reshape(64, 64))
    path = tmp_path / "sc.dcm"
    sc = written(secondary_capture(source, drawn, MODEL_VERSION), path)

    assert sc.SOPClassUID == SecondaryCaptureImageStorage
    assert_in_source_study(sc, source)
    assert (sc.SamplesPerPixel, sc.PhotometricInterpretation) == (3, "RGB")
    assert (sc.BitsAllocated, sc.BitsStored, sc.PixelRepresentation) == (8, 8, 0)
    assert sc.BurnedInAnnotation == "YES"
    assert sc.SourceImageSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
    assert "pneumoscan" in sc.SeriesDescription
    pixels = sc.pixel_array
    assert pixels.dtype == np.uint8 and pixels.shape[2] == 3 and pixels.shape[1] == drawn.width
    band = pixels.shape[0] - drawn.height
    assert band > 0, "the banner sits above the overlay"
    assert np.array_equal(pixels[band:], np.asarray(drawn))
    # The banner: black, with yellow text in it.
    banner = pixels[:band]
    assert (banner == 0).all(axis=2).mean() > 0.5
    assert ((banner[..., 0] > 200) & (banner[..., 1] > 200) & (banner[..., 2] < 80)).any()
    assert "NOT FOR DIAGNOSTIC USE" in BANNER_TEXT
    assert_valid(path)


def test_uids_are_deterministic(source):
    first = structured_report(source, prediction())
    again = structured_report(source, prediction("NORMAL"))
    assert (again.SOPInstanceUID, again.SeriesInstanceUID) == (first.SOPInstanceUID, first.SeriesInstanceUID)
    newer = structured_report(source, prediction(model_version="20250101-def456"))
    assert newer.SOPInstanceUID != first.SOPInstanceUID and newer.SeriesInstanceUID != first.SeriesInstanceUID

    overlay_image = Image.new("RGB", (64, 80), (20, 40, 60))
    sc = secondary_capture(source, overlay_image, MODEL_VERSION)
    assert sc.SOPInstanceUID == secondary_capture(source, overlay_image, MODEL_VERSION).SOPInstanceUID
    assert sc.SOPInstanceUID != first.SOPInstanceUID and sc.SeriesInstanceUID != first.SeriesInstanceUID

    # One series per study, model version and kind: another image of the study joins it.
    sibling = copy.deepcopy(source)
    sibling.SOPInstanceUID = pydicom.uid.generate_uid()
    other = structured_report(sibling, prediction())
    assert other.SeriesInstanceUID == first.SeriesInstanceUID and other.SOPInstanceUID != first.SOPInstanceUID

    uid = derived_uid(source.SOPInstanceUID, MODEL_VERSION, "sr")
    assert uid == first.SOPInstanceUID == derived_uid(source.SOPInstanceUID, MODEL_VERSION, "sr")
    assert (
        len(
            {
                uid,
                derived_uid(source.SOPInstanceUID, MODEL_VERSION, "sc"),
                derived_uid(source.SOPInstanceUID, "other", "sr"),
            }
        )
        == 3
    )
    assert pydicom.uid.UID(uid).is_valid


def test_the_module_loads_no_framework():
    code = (
        "import sys, json, pneumoscan.dicom.results; print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    loaded = set(json.loads(result.stdout))
    assert loaded & {"bentoml", "fastapi", "starlette", "huey", "redis", "tensorflow", "keras"} == set()


def test_results_share_no_element_with_the_source(source):
    sr = structured_report(source, prediction())
    sc = secondary_capture(source, Image.new("RGB", (64, 80)), MODEL_VERSION)
    sr.PatientName = sc.PatientName = "Changed^Later"
    sr.AccessionNumber = "changed"
    assert str(source.PatientName) == PATIENT_NAME and source.AccessionNumber == "ACC-2024-0042"


def test_a_rescore_correction_is_an_unverified_sr_replacing_the_first_with_the_new_version(source, tmp_path):
    from datetime import UTC, datetime

    first = prediction("PNEUMONIA")
    new = prediction("NORMAL", model_version="20241201-def456")
    verification = Verification.rescore(Result(prediction=first), new, datetime.now(UTC), 1)
    assert (
        verification is not None and Verification.rescore(Result(prediction=first), first, datetime.now(UTC), 1) is None
    )
    path = tmp_path / "rescored.dcm"
    sr = written(reviewed_report(source, first, MODEL_VERSION, verification, "Reading room"), path)

    assert (sr.CompletionFlag, sr.VerificationFlag, sr.PreliminaryFlag) == ("COMPLETE", "UNVERIFIED", "PRELIMINARY")
    assert "VerifyingObserverSequence" not in sr
    [predecessor] = sr.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence
    assert predecessor.ReferencedSOPInstanceUID == derived_uid(source.SOPInstanceUID, MODEL_VERSION, "sr")
    assert sr.SeriesInstanceUID == structured_report(source, first).SeriesInstanceUID
    [finding] = named(sr, FINDING)
    assert coded(finding) == NORMAL
    [measurement] = named(sr, PROBABILITY)
    assert float(measurement.MeasuredValueSequence[0].NumericValue) == pytest.approx(new.probability)
    assert any(text.startswith("Corrected on rescoring with model 20241201-def456: NORMAL") for text in comments(sr))
    [algorithm_version] = named(sr, ("111003", "DCM"))
    assert algorithm_version.TextValue == "20241201-def456"
    assert_valid_sr(path)
