"""Queue fixtures: an isolated queue (SQLite file or a uniquely named Redis queue) per test."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import pydicom
import pytest
from fhir.resources.R4B.bundle import Bundle
from PIL import Image

from tests.conftest import XRAYS
from tests.dicom_files import make_dicom
from training.not_xrays import not_xrays

REDIS_URL = os.environ.get("PNEUMOSCAN_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def redis_available() -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


@pytest.fixture(params=["sqlite", "redis"])
def queue_env(request, tmp_path) -> dict[str, str]:
    """Settings for one test's queue and job folders; Redis tests need a server on REDIS_URL."""
    env = {
        "PNEUMOSCAN_DATA_DIR": str(tmp_path / "var"),
        "PNEUMOSCAN_SHARD_SIZE": "4",
        "PNEUMOSCAN_QUEUE_NAME": f"test-{uuid.uuid4().hex[:12]}",
    }
    if request.param == "redis":
        if not redis_available():
            if os.environ.get("PNEUMOSCAN_REQUIRE_REDIS") == "1":
                pytest.fail(f"PNEUMOSCAN_REQUIRE_REDIS=1 but no Redis answers at {REDIS_URL}")
            pytest.skip(f"no Redis at {REDIS_URL} (set PNEUMOSCAN_REQUIRE_REDIS=1 to make this a failure)")
        env["PNEUMOSCAN_QUEUE_URL"] = REDIS_URL
    yield env
    if request.param == "redis":
        import redis

        client = redis.Redis.from_url(REDIS_URL)
        for key in client.scan_iter(f"huey.*.{env['PNEUMOSCAN_QUEUE_NAME'].replace('-', '')}"):
            client.delete(key)


BAD_FILES = {
    "corrupt/not-an-image.png": b"this is text, not a PNG",
    "corrupt/empty.jpeg": b"",
}


def make_input_folder(root: Path, copies: int = 1) -> tuple[Path, int, int]:
    """Fixture X-rays (``copies`` of each, in nested folders) plus corrupt files; (folder, good, bad)."""
    folder = root / "input"
    good = 0
    for copy in range(copies):
        for source in sorted(XRAYS.glob("*/*.jpeg")):
            target = folder / f"batch{copy:02d}" / source.parent.name / source.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
            good += 1
    for name, data in BAD_FILES.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    source = next(XRAYS.glob("NORMAL/*.jpeg")).read_bytes()
    (folder / "corrupt" / "truncated.jpeg").write_bytes(source[: len(source) // 3])
    (folder / "notes.txt").write_text("not scored: not an image suffix")
    radiograph = Image.open(next(XRAYS.glob("PNEUMONIA/*.jpeg"))).convert("L")
    radiograph.thumbnail((512, 512))
    (folder / "dicom").mkdir()
    (folder / "dicom" / "chest.dcm").write_bytes(make_dicom(radiograph, bits=16, photometric="MONOCHROME1"))
    (folder / "dicom" / "head-ct.dcm").write_bytes(make_dicom(radiograph, modality="CT"))
    # What the input gate refuses: a blank frame and a photograph.
    (folder / "not-xrays").mkdir()
    Image.new("L", (400, 400), 255).save(folder / "not-xrays" / "white.png")
    photo = next(image for image in not_xrays() if image.name == "grace_hopper")
    (folder / "not-xrays" / "portrait.jpg").write_bytes(photo.data)
    return folder, good + 1, len(BAD_FILES) + 4


def check_fhir_export(bundle: Bundle, rows: list[dict], folder: Path) -> None:
    """One entry per results.csv row, in its order: the row's report, or the refusal's code."""
    assert bundle.type == "collection" and len(bundle.entry) == len(rows)
    for entry, row in zip(bundle.entry, rows):
        resource = entry.resource
        if row["status"] != "ok":
            assert resource.get_resource_type() == "OperationOutcome"
            assert resource.issue[0].details.coding[0].code == row["error_code"]
            continue
        assert resource.get_resource_type() == "DiagnosticReport" and resource.status == "preliminary"
        contained = {item.id: item for item in resource.contained}
        values = {c.code.coding[0].code: c.valueQuantity.value for c in contained["observation"].component}
        assert float(values["probability"]) == pytest.approx(float(row["probability"]), abs=1e-6)
        assert contained["observation"].valueCodeableConcept.text == row["label"]
        if row["path"].endswith(".dcm"):
            uids = pydicom.dcmread(folder / row["path"], stop_before_pixels=True)
            series = contained["study"].series[0]
            assert (series.uid, series.instance[0].uid, series.modality.code) == (
                uids.SeriesInstanceUID, uids.SOPInstanceUID, uids.Modality)
            assert series.instance[0].sopClass.code == f"urn:oid:{uids.SOPClassUID}"
        else:
            assert resource.imagingStudy is None
