"""Helpers every test layer shares: fixture files, inputs made from them, stand-ins for the model
service, the real CLI in a subprocess, and the checks several test modules make.

Fixtures (``conftest.py`` files) build on these; no test module imports another test module.
"""

from __future__ import annotations

import ast
import functools
import io
import json
import os
import shutil
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pydicom
import pytest
from fhir.resources.R4B.bundle import Bundle
from PIL import Image

from pneumoscan.files import atomic_write
from pneumoscan.imaging.preprocess import plane_to_input
from pneumoscan.jobs.folder import ShardMeta, create_job, csv_bytes, load_job, shard_files, shard_path
from pneumoscan.jobs.results import finalize
from pneumoscan.model.decision import Decision
from pneumoscan.model.predictor import load_metadata
from pneumoscan.result import Result
from pneumoscan.schemas import PredictionResponse
from pneumoscan.settings import BUNDLED_MODEL_DIR
from tests.support.dicom_files import make_dicom
from training.gate.not_xrays import not_xrays

METADATA = load_metadata(BUNDLED_MODEL_DIR)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
XRAYS = FIXTURES / "xrays"
REPO_ROOT = Path(__file__).resolve().parents[2]
API_KEY = "test-key-0123456789"


def xray_paths() -> list[Path]:
    return sorted(XRAYS.glob("*/*.jpeg"))


def encode(image: Image.Image, format: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format, **options)
    return buffer.getvalue()


@functools.cache
def check_image(name: str) -> bytes:
    """The bytes of one image of the non-X-ray check set (which takes about a second to build)."""
    return next(image.data for image in not_xrays() if image.name == name)


def grey_photo(name: str) -> bytes:
    """An image of the non-X-ray check set as a grey PNG, for the distance gate: in colour, a
    photograph is refused as ``colour_image`` while decoding, before the gate measures it."""
    return encode(Image.open(io.BytesIO(check_image(name))).convert("L"), "PNG")


def make_tiny_dataset(root: Path, copies: int = 3) -> Path:
    """A labelled folder of ``8 * copies`` images: the fixtures, shifted, one patient per copy."""
    for number, source in enumerate(xray_paths()):
        base = Image.open(source).convert("L")
        base.thumbnail((256, 256))
        for copy in range(copies):
            # Rolled, not padded: a shift small enough that the seam it leaves keeps every copy
            # within the input gate's limit.
            shifted = Image.fromarray(np.roll(np.asarray(base), copy * 5, axis=1))
            # One patient (or study) per source and copy; the numbers never collide.
            if source.parent.name == "PNEUMONIA":
                name = f"person{900 + copy}{number:03d}_bacteria_{copy}.jpeg"
            else:
                name = f"IM-{copy}{number:03d}-0001.jpeg"
            target = root / source.parent.name / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shifted.save(target, quality=90)
    return root


def make_site_dataset(root: Path) -> Path:
    """``make_tiny_dataset`` with 7 copies (28 X-rays per class, enough for ``calibrate``) and a
    photograph filed as NORMAL, which the input gate refuses."""
    make_tiny_dataset(root, copies=7)
    (root / "NORMAL" / "astronaut.png").write_bytes(grey_photo("astronaut"))
    return root


STAND_IN_DECISION = Decision(threshold=0.5, model_version="test-1", ood_threshold=1.0)
# Planes darker than this on average are "out of distribution" for the stand-in model.
STAND_IN_DARK = 0.2


def stand_in_scores(planes: np.ndarray) -> np.ndarray:
    """A deterministic stand-in for the model service's ``infer`` (n, 2): the mean pixel as
    P(pneumonia), and a gate distance of 2 (twice the limit) for dark planes, 0.5 otherwise."""
    means = plane_to_input(planes).mean(axis=(1, 2, 3)).astype(np.float64)
    return np.stack([means, np.where(means < STAND_IN_DARK, 2.0, 0.5)], axis=1)


# A one-epoch model's input gate is loose and arbitrary (its limit is the farthest of 8 validation
# images): tests of the CLI's plumbing with such a model score everything and only flag. The
# gate itself is tested with the bundled model.
SCORE_EVERYTHING = {"PNEUMOSCAN_OOD_POLICY": "flag"}


async def stand_in_heatmap(plane: np.ndarray) -> np.ndarray:
    """A stand-in for the model service's ``explain``: the plane's own brightness on an 8x8 grid."""
    return np.asarray(plane, dtype=np.float32)[::16, ::16] / 255.0


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run the real ``pneumoscan`` command in a subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "cli", *args],
        cwd=REPO_ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def png_bomb(width: int, height: int) -> bytes:
    """A valid 1-bit PNG header claiming huge dimensions, with a tiny compressed body."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    row = b"\x00" + b"\x00" * ((width + 7) // 8)
    body = zlib.compress(row * 64, 9)
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


def reachable_modules(root: Path, *starts: str) -> tuple[set[str], set[str]]:
    """(project modules, other top-level names) imported at any depth, lazily or not, from ``starts``."""
    local = {path.name for path in root.iterdir() if (path / "__init__.py").is_file()}

    def module_file(name: str) -> Path | None:
        base = root.joinpath(*name.split("."))
        return next((p for p in (base.with_suffix(".py"), base / "__init__.py") if p.is_file()), None)

    seen: set[str] = set()
    others: set[str] = set()
    todo = list(starts)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        path = module_file(name)
        assert path is not None, f"{name} is imported but not under {root}"
        seen.add(name)
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module] + [
                    f"{node.module}.{alias.name}" for alias in node.names if module_file(f"{node.module}.{alias.name}")
                ]
            for imported in names:
                top = imported.split(".")[0]
                if top in local:
                    todo.append(imported)
                elif top not in sys.stdlib_module_names and top != "__future__":
                    others.add(top)
    return seen, others


def wait_until(check: Callable[[], object], timeout: float, message: Callable[[], str] | str, interval: float = 0.5):
    """``check()``'s first true value within ``timeout`` seconds, asked every ``interval``;
    otherwise fail with ``message`` (a callable is read only then, so it can show logs written
    while waiting)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(message() if callable(message) else message)


def require(variable: str, missing: str | None) -> None:
    """Nothing when ``missing`` is None; otherwise skip, saying what this run lacks, or fail when
    ``variable`` is set to 1 (as ``.ci/run`` does, so that CI never skips a test quietly)."""
    if missing is None:
        return
    if os.environ.get(variable) == "1":
        pytest.fail(f"{variable}=1 but {missing}")
    pytest.skip(f"{missing}; set {variable}=1 to make this a failure")


def assert_error(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["error"] == code, body
    assert isinstance(body["detail"], str) and body["detail"]
    return body


def check_prediction(body: dict) -> PredictionResponse:
    """A /predict answer of the bundled model, its label consistent with its threshold."""
    prediction = PredictionResponse.model_validate(body)
    assert prediction.model_version == METADATA.version
    assert prediction.threshold == METADATA.threshold
    expected = "PNEUMONIA" if prediction.probability >= prediction.threshold else "NORMAL"
    assert prediction.label == expected
    return prediction


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
    xray = next(XRAYS.glob("NORMAL/*.jpeg")).read_bytes()
    (folder / "corrupt" / "truncated.jpeg").write_bytes(xray[: len(xray) // 3])
    (folder / "notes.txt").write_text("not scored: not an image suffix")
    radiograph = Image.open(next(XRAYS.glob("PNEUMONIA/*.jpeg"))).convert("L")
    radiograph.thumbnail((512, 512))
    (folder / "dicom").mkdir()
    (folder / "dicom" / "chest.dcm").write_bytes(make_dicom(radiograph, bits=16, photometric="MONOCHROME1"))
    (folder / "dicom" / "head-ct.dcm").write_bytes(make_dicom(radiograph, modality="CT"))
    # What the input gate refuses: a blank frame, a colour photograph and the same one in grey.
    (folder / "not-xrays").mkdir()
    Image.new("L", (400, 400), 255).save(folder / "not-xrays" / "white.png")
    (folder / "not-xrays" / "portrait.jpg").write_bytes(check_image("grace_hopper"))
    (folder / "not-xrays" / "portrait-grey.png").write_bytes(grey_photo("grace_hopper"))
    return folder, good + 1, len(BAD_FILES) + 5


def check_fhir_export(bundle: Bundle, rows: list[dict], folder: Path) -> None:
    """The entries of each results.csv row, in its order: a scored row's DiagnosticReport,
    Observation, Device (the first time its model version appears) and Provenance, linked by
    fullUrl; a refused row's OperationOutcome with its code, naming the row."""
    assert bundle.type == "collection"
    entries = iter(json.loads(bundle.json())["entry"])
    devices: dict[str, str] = {}
    for number, row in enumerate(rows, start=1):
        first = next(entries)
        resource = first["resource"]
        if row["status"] != "ok":
            assert resource["resourceType"] == "OperationOutcome"
            assert resource["issue"][0]["details"]["coding"][0]["code"] == row["error_code"]
            assert resource["issue"][0]["diagnostics"].startswith(f"results.csv row {number} ({row['path']}): ")
            continue
        report, observation = resource, next(entries)
        if row["model_version"] not in devices:
            device = next(entries)
            assert device["resource"]["version"] == [{"value": row["model_version"]}]
            devices[row["model_version"]] = device["fullUrl"]
        provenance = next(entries)["resource"]
        assert report["resourceType"] == "DiagnosticReport" and report["status"] == "preliminary"
        assert report["result"] == [{"reference": observation["fullUrl"]}]
        assert observation["resource"]["device"]["reference"] == devices[row["model_version"]]
        assert provenance["agent"][0]["who"]["reference"] == devices[row["model_version"]]
        assert [target["reference"] for target in provenance["target"]] == [first["fullUrl"], observation["fullUrl"]]
        check_observation(observation["resource"], row)
        if row["path"].endswith(".dcm"):
            uids = pydicom.dcmread(folder / row["path"], stop_before_pixels=True)
            [study] = report["imagingStudy"]
            assert study["identifier"] == {"system": "urn:dicom:uid", "value": f"urn:oid:{uids.StudyInstanceUID}"}
            assert uids.SeriesInstanceUID in study["display"] and uids.SOPInstanceUID in study["display"]
            assert observation["resource"]["derivedFrom"] == [study]
        else:
            assert "imagingStudy" not in report and "subject" not in report
    assert next(entries, None) is None
    assert '"contained"' not in bundle.json()


def check_observation(observation: dict, row: dict) -> None:
    """The Observation holds the row's label and probability."""
    values = {c["code"]["coding"][0]["code"]: c["valueQuantity"]["value"] for c in observation["component"]}
    assert float(values["probability"]) == pytest.approx(float(row["probability"]), abs=1e-6)
    assert observation["valueCodeableConcept"]["coding"][0]["code"] == row["label"]


def finished_job(root: Path, results: list[Result], model_version: str = "v1") -> Path:
    """A finished job folder whose ``results.csv`` holds ``results`` (each named by a file of the
    job's input folder), written as a worker leaves a shard and finalized, without a model."""
    folder = root / "input"
    by_file: dict[str, Result] = {}
    for result in results:
        if result.file is None:
            raise ValueError("Each result of a finished job needs the file it was scored from.")
        (folder / result.file).parent.mkdir(parents=True, exist_ok=True)
        (folder / result.file).write_bytes(b"x")
        by_file[result.file] = result
    job_dir = create_job(folder, root / "jobs", model_version, shard_size=len(results))
    rows = [by_file[file].to_row(model_version) for file in shard_files(job_dir, load_job(job_dir), 0)]
    now = time.time()
    meta = ShardMeta.of(worker="test", started=now - 1, finished=now, results=results)
    atomic_write(shard_path(job_dir, 0, "json"), meta.model_dump_json().encode())
    atomic_write(shard_path(job_dir, 0, "csv"), csv_bytes(rows, header=False))
    assert finalize(job_dir)
    return job_dir
