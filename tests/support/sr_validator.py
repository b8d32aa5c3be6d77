"""DICOM SR checks by code no one here wrote: pixelmed's ``DicomSRValidator`` (Debian's
``pixelmed-apps``), which checks an SR against its IOD and against the DCMR templates it names
(TID 1500 and those it includes, with their context groups)."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.support import require

JAR = Path("/usr/share/java/pixelmed.jar")
VALIDATOR = "com.pixelmed.validate.DicomSRValidator"
# The validator's XSLT needs more XPath operators than the JDK allows by default; with the limits
# in place it stops with an exception instead of validating.
UNLIMITED_XPATH = ("-Djdk.xml.xpathExprOpLimit=0", "-Djdk.xml.xpathExprGrpLimit=0", "-Djdk.xml.xpathTotalOpLimit=0")


@dataclass(frozen=True)
class Report:
    errors: list[str]
    warnings: list[str]


def missing() -> str | None:
    """None when the validator can run here; otherwise what is missing."""
    if shutil.which("java") is None or not JAR.exists():
        return f"pixelmed's DicomSRValidator ({JAR}, java) is not installed (apt-get install pixelmed-apps)"
    return None


def validate(path: Path) -> Report:
    """The validator's errors and warnings about the SR at ``path``; skips when it is not installed,
    or fails when ``PNEUMOSCAN_REQUIRE_DICOM_PEERS=1``."""
    require("PNEUMOSCAN_REQUIRE_DICOM_PEERS", missing())
    result = subprocess.run(
        ["java", *UNLIMITED_XPATH, "-cp", str(JAR), VALIDATOR, str(path)], capture_output=True, text=True, timeout=300
    )
    lines = (result.stdout + result.stderr).splitlines()
    errors = [line for line in lines if line.startswith("Error")]
    warnings = [line for line in lines if line.startswith("Warning")]
    # A run that dies (an unreadable file, an XPath limit) prints a stack trace and no verdict.
    if result.returncode != 0 or not any("IOD validation complete" in line for line in lines):
        errors.append(f"the validator did not finish (exit {result.returncode}): {' '.join(lines)[-2000:]}")
    return Report(errors, warnings)


def errors(path: Path) -> list[str]:
    """The validator's errors about the SR at ``path`` (see :func:`validate`)."""
    return validate(path).errors
