"""The layers hold: the core imports no adapter, and its job record and settings stay light."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys

import pytest

from tests.support import REPO_ROOT

# The `pneumoscan` command (the top-level cli package) is the one composition root: only it imports
# the core, training and the adapters together. Inside service/, each adapter imports the core and the
# shared modules beside it, never another adapter; service.service, the BentoML entry point, wires the
# HTTP adapter to the queue.
COMPOSITION_ROOT = "cli"
ADAPTERS = {"training", "service", "bench", "loadtests", "cli"}
SERVICE_ADAPTERS = ("service.http", "service.worker", "service.dicom_node")
PROJECT = ("pneumoscan", "service", "training", "cli")
FRAMEWORKS = {"huey", "bentoml", "starlette", "fastapi", "redis", "tensorflow", "keras", "locust", "aiohttp"}
MAX_MODULES_PER_FOLDER = 12


def imports_under(folder: str) -> dict[str, list[str]]:
    """Each module under ``folder`` and every module it imports (top-level and inside functions);
    ``from package import name`` counts ``package.name`` too, for a name that is a module."""
    modules = {}
    for path in sorted((REPO_ROOT / folder).rglob("*.py")):
        if "node_modules" in path.parts:
            continue
        parts = path.relative_to(REPO_ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        imported = []
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported += [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.append(node.module)
                imported += [f"{node.module}.{alias.name}" for alias in node.names]
        modules[name] = imported
    return modules


def project_modules() -> dict[str, list[str]]:
    modules: dict[str, list[str]] = {}
    for folder in PROJECT:
        modules.update(imports_under(folder))
    return {
        name: [i for i in imported if i in modules or i.split(".")[0] in PROJECT] for name, imported in modules.items()
    }


def core_modules() -> dict[str, list[str]]:
    return imports_under("pneumoscan")


def within(module: str, package: str) -> bool:
    return module == package or module.startswith(f"{package}.")


def test_the_core_imports_no_adapter_and_not_the_command_line():
    modules = core_modules()
    assert {"pneumoscan.jobs.folder", "pneumoscan.delivery.outbox", "pneumoscan.model.predictor"} <= modules.keys()
    offenders = {name: sorted(i for i in imported if i.split(".")[0] in ADAPTERS) for name, imported in modules.items()}
    assert {name: bad for name, bad in offenders.items() if bad} == {}


def test_only_the_command_line_imports_the_adapters_together():
    modules = project_modules()
    assert any(within(i, "training") for i in modules["cli.model"]), "the check sees imports"
    assert any(within(i, "service") for i in modules["cli.model"]), "the check sees imports"
    offenders = {
        name: sorted(i for i in imported if within(i, COMPOSITION_ROOT))
        for name, imported in modules.items()
        if not within(name, COMPOSITION_ROOT)
    }
    assert {name: bad for name, bad in offenders.items() if bad} == {}


def test_training_imports_the_core_only():
    offenders = {
        name: sorted(i for i in imported if i.split(".")[0] in ADAPTERS - {"training"})
        for name, imported in imports_under("training").items()
    }
    assert {name: bad for name, bad in offenders.items() if bad} == {}


def test_no_service_adapter_imports_another():
    modules = imports_under("service")
    assert any(within(i, "service.worker") for i in modules["service.service"]), "the check sees imports"
    offenders = {}
    for name, imported in modules.items():
        own = next((adapter for adapter in SERVICE_ADAPTERS if within(name, adapter)), None)
        if own is None:
            continue
        bad = sorted(i for i in imported if any(within(i, other) for other in SERVICE_ADAPTERS if other != own))
        if bad:
            offenders[name] = bad
    assert offenders == {}


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for other in sorted(graph[module]):
            if other not in index:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in on_stack:
                low[module] = min(low[module], index[other])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return cycles


def test_import_cycles_are_found():
    assert import_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycles():
    modules = project_modules()
    # A module importing its own package's __init__ (for a constant) is no cycle.
    graph = {
        name: {i for i in imported if i in modules and i != name and not within(name, i)}
        for name, imported in modules.items()
    }
    assert import_cycles(graph) == []


def packages() -> list:
    return [path.parent for folder in PROJECT for path in sorted((REPO_ROOT / folder).rglob("__init__.py"))]


def test_every_package_says_what_it_holds_and_stays_small():
    found = packages()
    assert REPO_ROOT / "pneumoscan" / "delivery" in found, "the check sees packages"
    for package in found:
        doc = ast.get_docstring(ast.parse((package / "__init__.py").read_text()))
        assert doc and doc.strip(), f"{package} says nothing of what it holds"
        modules = [path for path in package.glob("*.py") if path.name != "__init__.py"]
        assert len(modules) <= MAX_MODULES_PER_FOLDER, f"{package} holds {len(modules)} modules"


def test_no_two_modules_share_a_name_and_a_subject():
    """A module's name says what it is about: no ``dicom_*`` beside ``dicom/``, no name repeated
    for another job in the same tree."""
    for folder in PROJECT:
        for package in [REPO_ROOT / folder, *(p for p in (REPO_ROOT / folder).rglob("*") if p.is_dir())]:
            names = {path.stem for path in package.glob("*.py")} | {p.name for p in package.iterdir() if p.is_dir()}
            prefixed = {name for name in names for other in names if name.startswith(f"{other}_") and other != name}
            assert prefixed == set(), f"{package}: {sorted(prefixed)}"


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


def test_importing_the_worker_reads_no_setting_and_opens_no_queue(tmp_path):
    env = {**os.environ, "PNEUMOSCAN_DATA_DIR": str(tmp_path / "data"), "PNEUMOSCAN_QUEUE_URL": ""}
    code = "import service.worker.queue as q; print(q._huey is None)"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "True"
    assert not (tmp_path / "data").exists(), "the SQLite queue was opened at import"
