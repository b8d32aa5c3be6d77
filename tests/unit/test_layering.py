"""The layers hold: the core imports no adapter, and its job record and settings stay light."""

from __future__ import annotations

import ast
import json
import subprocess
import sys

import pytest

from tests.support import REPO_ROOT

# The `pneumoscan` command (the pneumoscan.cli package) is the one composition root: only it may
# reach into the adapters.
COMPOSITION_ROOT = "pneumoscan.cli"
ADAPTERS = {"training", "service", "bench", "loadtests"}
FRAMEWORKS = {"huey", "bentoml", "starlette", "fastapi", "redis", "tensorflow", "keras", "locust", "aiohttp"}


def imports_under(folder: str) -> dict[str, list[str]]:
    """Each module under ``folder`` and every module it imports (top-level and inside functions)."""
    modules = {}
    for path in sorted((REPO_ROOT / folder).rglob("*.py")):
        parts = path.relative_to(REPO_ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        imported = []
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported += [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.append(node.module)
        modules[name] = imported
    return modules


def core_modules() -> dict[str, list[str]]:
    return imports_under("pneumoscan")


def in_composition_root(module: str) -> bool:
    return module == COMPOSITION_ROOT or module.startswith(f"{COMPOSITION_ROOT}.")


def test_only_the_command_line_imports_adapters():
    modules = core_modules()
    assert {"pneumoscan.cli", "pneumoscan.cli.jobs", "pneumoscan.jobs.folder"} <= modules.keys()
    assert any(i.split(".")[0] in ADAPTERS for i in modules["pneumoscan.cli.model"]), "the check sees imports"
    offenders = {
        name: sorted(i for i in imported if i.split(".")[0] in ADAPTERS or in_composition_root(i))
        for name, imported in modules.items()
        if not in_composition_root(name)
    }
    assert {name: bad for name, bad in offenders.items() if bad} == {}


def test_tests_import_no_other_test_module_and_no_bench():
    modules = imports_under("tests")
    assert "tests.support" in modules["tests.unit.test_layering"], "the check sees imports"
    offenders = {
        name: sorted(
            i
            for i in imported
            if i.split(".")[0] == "bench"
            or (i.startswith("tests.") and not (i == "tests.support" or i.startswith("tests.support.")))
        )
        for name, imported in modules.items()
    }
    assert {name: bad for name, bad in offenders.items() if bad} == {}


def loaded_by(*modules: str) -> set[str]:
    """Top-level packages loaded by importing ``modules`` in a fresh interpreter."""
    code = (
        f"import sys; import {', '.join(modules)}; "
        "import json; print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return set(json.loads(result.stdout))


def test_the_job_record_loads_no_queue_server_or_tensorflow():
    loaded = loaded_by(
        "pneumoscan.jobs",
        "pneumoscan.jobs.folder",
        "pneumoscan.jobs.leases",
        "pneumoscan.jobs.results",
        "pneumoscan.jobs.export",
        "pneumoscan.jobs.shards",
        "pneumoscan.jobs.plot",
        "pneumoscan.jobs.reviews",
    )
    assert loaded & FRAMEWORKS == set()


@pytest.mark.parametrize(
    "module, heavy",
    [
        ("pneumoscan.settings", {"PIL", "pydicom", "numpy", *FRAMEWORKS}),
        ("pneumoscan.errors", {"PIL", "pydicom", "numpy", "pydantic", *FRAMEWORKS}),
        ("pneumoscan.files", {"PIL", "pydicom", "numpy", "pydantic", *FRAMEWORKS}),
    ],
)
def test_leaf_modules_stay_leaves(module, heavy):
    assert loaded_by(module) & heavy == set()
