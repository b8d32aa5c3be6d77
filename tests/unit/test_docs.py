"""The reference pages are generated from the code: every setting, error code and results.csv column
has its description, and each appears in the page built from it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pneumoscan.result import RESULT_COLUMN_DESCRIPTIONS, RESULT_COLUMNS
from pneumoscan.settings import Settings
from tests.support.docs import load_generator

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def generator():
    return load_generator()


def test_every_setting_has_a_description():
    for name, field in Settings.model_fields.items():
        assert field.description and field.description.strip(), f"PNEUMOSCAN_{name.upper()} has no description"


def test_every_setting_is_in_the_settings_reference(generator):
    page = generator.settings_markdown()
    for name in Settings.model_fields:
        assert f"`PNEUMOSCAN_{name.upper()}`" in page, f"the settings reference lacks PNEUMOSCAN_{name.upper()}"
    for row in generator.settings_rows():
        assert row["description"], f"{row['variable']} has no description"
        assert row["type"] and row["default"], row


def test_every_error_code_has_a_status_and_a_meaning(generator):
    rows = generator.error_rows()
    codes = [row["code"] for row in rows]
    assert len(codes) == len(set(codes)), "two error classes share a code"
    for row in rows:
        assert row["meaning"], (
            f"error code {row['code']} has no meaning (docstring, tree drawing or HTTP_ERROR_MEANINGS)"
        )
        assert row["status"] is not None, f"error code {row['code']} has no HTTP status in service/http/errors.py"


def test_every_error_code_is_in_the_errors_reference(generator):
    from pneumoscan import errors
    from service.http import errors as http_errors

    page = generator.errors_markdown()
    classes = generator.error_classes()
    for module in (errors, http_errors):
        for value in vars(module).values():
            if (
                isinstance(value, type)
                and issubclass(value, errors.PneumoscanError)
                and value.__module__ == module.__name__
            ):
                assert value in classes, f"{value.__name__} is missing from the generated reference"
    for cls in classes:
        assert f"| `{cls.code}` |" in page, f"the errors reference lacks {cls.code}"
    assert "| `not_a_chest_xray` | 422 Unprocessable Entity |" in page
    assert "| `unauthorized` | 401 Unauthorized |" in page


def test_every_results_column_has_a_description(generator):
    assert set(RESULT_COLUMN_DESCRIPTIONS) == set(RESULT_COLUMNS), "descriptions and columns differ"
    page = generator.results_columns_markdown()
    for column in RESULT_COLUMNS:
        assert RESULT_COLUMN_DESCRIPTIONS[column].strip(), f"results.csv column {column} has no description"
        assert f"| `{column}` |" in page, f"the results.csv reference lacks {column}"


def test_every_http_operation_is_in_the_endpoints_reference(generator):
    rows = generator.endpoint_rows()
    page = generator.endpoints_markdown()
    assert {("POST", "/predict"), ("POST", "/jobs"), ("GET", "/version")} <= {
        (row["method"], row["path"]) for row in rows
    }
    for row in rows:
        assert row["summary"], f"{row['method']} {row['path']} has no summary"
        assert f"| `{row['method']}` | `{row['path']}` |" in page


def test_the_site_lists_every_generated_page(generator):
    nav = (REPO_ROOT / "mkdocs.yml").read_text()
    copied = generator.copied_files()
    for path in [*generator.PAGES, *copied]:
        if path.endswith(".md"):
            assert path in nav, f"mkdocs.yml's nav lacks {path}"
    for source in copied.values():
        assert (REPO_ROOT / source).is_file(), source
    assert "docs/hooks.py" in nav, "mkdocs.yml must load the hook that adds the generated pages"


def test_readme_links_into_pages_that_exist():
    import re

    readme = (REPO_ROOT / "README.md").read_text()
    targets = re.findall(r"\]\((docs/[^)#]+)", readme)
    assert targets, "the README links into no docs page"
    for target in targets:
        assert (REPO_ROOT / target).is_file(), f"README links to a missing {target}"


def test_the_architecture_page_names_every_module():
    page = (REPO_ROOT / "docs" / "architecture.md").read_text()
    modules = [
        path
        for package in ("pneumoscan", "service", "training", "cli")
        for path in (REPO_ROOT / package).rglob("*.py")
        if path.name not in ("__init__.py", "__main__.py")
    ]
    assert len(modules) > 100, "the check sees the modules"
    missing = [str(path.relative_to(REPO_ROOT)) for path in modules if not re.search(rf"\b{path.stem}\b", page)]
    assert missing == []


def test_the_security_page_names_every_scope_operation_audit_field_and_action():
    from pneumoscan.access.audit import AuditRecord
    from service.http.app import bundled_spec

    page = (REPO_ROOT / "docs" / "security.md").read_text()
    rows = {match.group(1): match.group(0) for match in re.finditer(r"^\| `?(\w+|any key)`? \|.*$", page, re.M)}
    for path, methods in bundled_spec()["paths"].items():
        for method, operation in methods.items():
            scope = operation.get("x-scope")
            if scope is None:
                continue
            row = rows["any key" if scope == "any" else scope]
            assert path in row and method.upper() in row, f"{method.upper()} {path} is not in the {scope} row"
            assert f"`{operation['x-audit-action']}`" in page, operation["x-audit-action"]
    for name in AuditRecord.model_fields:
        assert f"`{name}`" in page, f"the audit record's field {name} is not on the Security page"
