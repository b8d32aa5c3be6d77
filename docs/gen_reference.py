"""Reference pages built from the code, so they cannot drift from it.

- ``reference/settings.md``: every field of ``pneumoscan.settings.Settings``;
- ``reference/errors.md``: every error code of the error tree (``pneumoscan/errors.py`` and the
  HTTP-only errors of ``service/http/errors.py``), its HTTP status from ``service.http.errors.status_for``;
- ``reference/results-csv.md``: every ``results.csv`` column, from ``pneumoscan.result``;
- ``reference/http-endpoints.md``: every operation of the HTTP routers, from their OpenAPI specification;
- ``reference/openapi.json``: that specification itself, as the service serves it at ``GET /docs.json``.

``docs/hooks.py``, the MkDocs hook, adds the pages to the site at build time: nothing is written into
``docs/``. This module imports without MkDocs, for the unit tests; ``python docs/gen_reference.py
OUT_DIR`` writes the pages to a folder to read them.
"""

from __future__ import annotations

import json
import re
import sys
import types
import typing
from collections.abc import Callable
from http import HTTPStatus
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # loaded by path (MkDocs, the tests), from any working directory
    sys.path.insert(0, str(REPO_ROOT))

from pneumoscan import errors  # noqa: E402
from pneumoscan.result import RESULT_COLUMN_DESCRIPTIONS, RESULT_COLUMNS  # noqa: E402
from pneumoscan.settings import PROJECT_ROOT, Settings  # noqa: E402
from service.http import errors as http_errors  # noqa: E402

ENV_PREFIX = "PNEUMOSCAN_"

# The errors that exist only over HTTP (service/http/errors.py) carry no docstring of their own; their
# meaning is stated here, next to the generator that needs it, and the unit test fails for a new one
# that is missing.
HTTP_ERROR_MEANINGS: dict[str, str] = {
    "bad_request": "malformed multipart or JSON, or a request the endpoint cannot take as sent",
    "missing_image": "no body, or no `image`/`images` field",
    "unsupported_media_type": "an upload not sent as an image, DICOM or multipart; a JSON body not as application/json",
    "upload_too_large": "a body over `PNEUMOSCAN_MAX_UPLOAD_BYTES`, refused before it is held in memory",
    "too_many_images": "more than `PNEUMOSCAN_MAX_BATCH_ITEMS` images in one `/predict_batch` request",
    "not_acceptable": "an `Accept` header that allows none of the types the endpoint answers",
    "unauthorized": "keys are in use (the keys file exists, or `PNEUMOSCAN_API_KEY` is set) and the "
    "`Authorization: Bearer` key is missing, wrong or revoked",
    "forbidden": "the client's key is good but lacks the scope the operation needs (docs/security.md)",
    "rate_limited": "the client is over its rate (`PNEUMOSCAN_RATE_LIMIT_PER_S` or its own); comes with `Retry-After`",
    "overloaded": "the batching queue cannot meet `PNEUMOSCAN_BATCH_MAX_LATENCY_MS`, or "
    "`PNEUMOSCAN_MAX_IN_FLIGHT` requests are already running; comes with `Retry-After: 1`",
    "not_ready": "the model (or the model service) is still starting",
    "timeout": "no result within `PNEUMOSCAN_REQUEST_TIMEOUT_S`",
    "explanation_unavailable": "`POST /explain` on a service running Keras' JAX backend (Grad-CAM needs TensorFlow)",
    "not_found": "a path the service does not have",
    "method_not_allowed": "a method the path does not take (the `Allow` header lists those it does)",
}

# Errors that never answer an HTTP request (the CLI and the worker report them); they fall through
# to status_for's 500. Any other error without a mapped status is a gap the unit test reports.
NOT_HTTP_CODES = {"error", "model_error", "data_error", "configuration_error"}


# --- settings -------------------------------------------------------------------------------------


def _type_name(annotation: object) -> str:
    """A field's type as a reader writes it: `int`, `Path or unset`, `refuse | flag`."""
    if typing.get_origin(annotation) is typing.Literal:
        return " \\| ".join(f"`{value}`" for value in typing.get_args(annotation))
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        parts = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        return " or ".join(_type_name(part) for part in parts)
    if getattr(annotation, "__name__", "") == "SecretStr":
        return "str (secret, never logged)"
    return getattr(annotation, "__name__", str(annotation))


def _default_text(value: object) -> str:
    if value is None:
        return "unset"
    if isinstance(value, Path):
        try:
            return f"`{value.relative_to(PROJECT_ROOT)}` (in the repository)"
        except ValueError:
            return f"`{value}`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if value == "":
        return "empty"
    return f"`{value}`"


def _constraints(field) -> str:
    words = []
    for item in field.metadata:
        for attribute, sign in (
            ("gt", ">"),
            ("ge", ">="),
            ("lt", "<"),
            ("le", "<="),
            ("min_length", "length >="),
            ("max_length", "length <="),
        ):
            bound = getattr(item, attribute, None)
            if bound is not None:
                words.append(f"{sign} {bound}")
        pattern = getattr(item, "pattern", None)
        if pattern:
            words.append(f"matches `{pattern}`")
    return ", ".join(words)


def env_names(name: str, field) -> list[str]:
    """The environment variables a setting is read from, the current name first."""
    alias = field.validation_alias
    choices = getattr(alias, "choices", None)
    if choices:
        return [str(choice) for choice in choices]
    return [f"{ENV_PREFIX}{name.upper()}"]


def settings_rows() -> list[dict[str, str]]:
    """One row per setting: variable, older names, type, default, constraints, description."""
    rows = []
    for name, field in Settings.model_fields.items():
        names = env_names(name, field)
        rows.append(
            {
                "variable": names[0],
                "older_names": ", ".join(names[1:]),
                "type": _type_name(field.annotation),
                "default": _default_text(field.default),
                "constraints": _constraints(field),
                "description": (field.description or "").strip(),
            }
        )
    return rows


def settings_markdown() -> str:
    lines = [
        "# Settings",
        "",
        "Every setting is an environment variable read by `pneumoscan.settings.Settings` (or a line of "
        "`.env` beside `docker-compose.yml` in the containers). This page is generated from that class.",
        "",
        "| variable | type | default | allowed | meaning |",
        "|---|---|---|---|---|",
    ]
    for row in settings_rows():
        meaning = row["description"]
        if row["older_names"]:
            meaning += f" (the older name `{row['older_names']}` is still read)"
        lines.append(
            f"| `{row['variable']}` | {row['type']} | {row['default']} | {row['constraints']} | {_cell(meaning)} |"
        )
    return "\n".join(lines) + "\n"


# --- errors ---------------------------------------------------------------------------------------


def _tree_meanings() -> dict[str, str]:
    """ClassName -> meaning, read from the tree drawn in ``pneumoscan/errors.py``'s docstring."""
    meanings: dict[str, str] = {}
    current = None
    for line in (errors.__doc__ or "").splitlines():
        match = re.match(r"^\s*[│├└─ ]*?([A-Z]\w+)\s{2,}(\S.*)$", line)
        if match:
            current = match[1]
            meanings[current] = match[2].strip()
            continue
        continuation = re.match(r"^\s*[│ ]*\s{4,}(\S.*)$", line)
        if current and continuation and not re.search(r"[├└]", line):
            meanings[current] += " " + continuation[1].strip()
        else:
            current = None
    return meanings


def error_classes() -> list[type[errors.PneumoscanError]]:
    """Every error class of the tree and of the HTTP adapter, base first, depth first."""
    found: list[type[errors.PneumoscanError]] = []
    pending = [errors.PneumoscanError]
    while pending:
        cls = pending.pop(0)
        if cls not in found and cls.__module__ in (errors.__name__, http_errors.__name__):
            found.append(cls)
        pending[:0] = sorted(cls.__subclasses__(), key=lambda sub: (sub.__module__, sub.__name__))
    return found


def error_rows() -> list[dict[str, object]]:
    """One row per error code: code, class, HTTP status (None when unmapped), meaning, where."""
    tree = _tree_meanings()
    rows = []
    for cls in error_classes():
        own_doc = cls.__dict__.get("__doc__")
        meaning = (
            (own_doc or "").strip().splitlines()[0]
            if own_doc
            else tree.get(cls.__name__) or HTTP_ERROR_MEANINGS.get(cls.code, "")
        )
        mapped = next(
            (http_errors.STATUS_BY_ERROR[base] for base in cls.__mro__ if base in http_errors.STATUS_BY_ERROR), None
        )
        status = http_errors.status_for(cls("")) if mapped is not None or cls.code in NOT_HTTP_CODES else None
        rows.append(
            {
                "code": cls.code,
                "class": f"{cls.__module__}.{cls.__qualname__}",
                "status": status,
                "meaning": meaning,
                "http_only": cls.__module__ == http_errors.__name__,
            }
        )
    return rows


def errors_markdown() -> str:
    lines = [
        "# Error codes",
        "",
        'Every error carries a stable code. Over HTTP it comes as JSON `{"error": "<code>", "detail": '
        '"<explanation>"}` (a FHIR `OperationOutcome` for clients that accept `application/fhir+json`) with '
        "the status below; in a batch job as an error row of `results.csv` (`status` `error`, the code in "
        "`error_code`). This page is generated from `pneumoscan/errors.py` and `service/http/errors.py`.",
        "",
        "| code | HTTP status | meaning | class |",
        "|---|---|---|---|",
    ]
    for row in error_rows():
        status = row["status"]
        status_text = f"{int(status)} {HTTPStatus(status).phrase}" if status is not None else "-"
        if row["code"] in NOT_HTTP_CODES:
            status_text += " (not an HTTP answer: the CLI and the worker report it)"
        where = " (HTTP only)" if row["http_only"] else ""
        lines.append(f"| `{row['code']}` | {status_text} | {_cell(str(row['meaning']))}{where} | `{row['class']}` |")
    lines += ["", "The tree, as `pneumoscan/errors.py` draws it:", "", "```", _tree_text(), "```", ""]
    return "\n".join(lines)


def _tree_text() -> str:
    doc = errors.__doc__ or ""
    start = doc.index("PneumoscanError")
    end = doc.index("\n\n", start)
    return "    " + doc[start:end].strip()


# --- results.csv ----------------------------------------------------------------------------------


def results_columns_markdown() -> str:
    lines = [
        "# `results.csv` columns",
        "",
        "A finished batch job's `results.csv` has one row per input file, in these columns and this order. "
        "This page is generated from `pneumoscan.result.RESULT_COLUMNS` and `RESULT_COLUMN_DESCRIPTIONS`.",
        "",
        "| # | column | holds |",
        "|---|---|---|",
    ]
    for number, column in enumerate(RESULT_COLUMNS, start=1):
        lines.append(f"| {number} | `{column}` | {_cell(RESULT_COLUMN_DESCRIPTIONS.get(column, ''))} |")
    return "\n".join(lines) + "\n"


# --- HTTP endpoints -------------------------------------------------------------------------------


def openapi_spec() -> dict:
    """The service's OpenAPI specification as ``GET /docs.json`` answers it with the bundled model."""
    from service.http.app import bundled_spec

    return bundled_spec()


def endpoint_rows() -> list[dict[str, str]]:
    """One row per operation: method, path, summary, the statuses it documents."""
    rows = []
    for path, operations in openapi_spec()["paths"].items():
        for method, operation in operations.items():
            rows.append(
                {
                    "method": method.upper(),
                    "path": path,
                    "summary": (operation.get("summary") or "").strip(),
                    "statuses": ", ".join(sorted(operation.get("responses", {}))),
                }
            )
    return rows


def endpoints_markdown() -> str:
    lines = [
        "# HTTP endpoints",
        "",
        "Every operation of the service, generated from its OpenAPI specification: the running service "
        "serves the same specification at `GET /docs.json` (with its model's version) and Swagger UI over it "
        "at `GET /`; [openapi.json](openapi.json) is this site's copy. The web page is served under `/ui/`. "
        "What each answers in detail, and its errors: [The HTTP API](../http-api.md).",
        "",
        "| method | path | what it does | documented statuses |",
        "|---|---|---|---|",
    ]
    for row in endpoint_rows():
        lines.append(f"| `{row['method']}` | `{row['path']}` | {_cell(row['summary'])} | {row['statuses']} |")
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")


PAGES: dict[str, Callable[[], str]] = {
    "reference/settings.md": settings_markdown,
    "reference/errors.md": errors_markdown,
    "reference/results-csv.md": results_columns_markdown,
    "reference/http-endpoints.md": endpoints_markdown,
    "reference/openapi.json": lambda: json.dumps(openapi_spec(), indent=2) + "\n",
}
MODEL_FOLDER = "models/pneumonia-cnn"


def copied_files() -> dict[str, str]:
    """Files of the repository shown in the site as they are: site path -> repository path. The
    bundled model's card comes with the plots and metadata beside it, so that its links resolve."""
    copied = {"model-card/index.md": f"{MODEL_FOLDER}/MODEL_CARD.md", "bench-report.png": "bench/report.png"}
    for path in sorted((REPO_ROOT / MODEL_FOLDER).iterdir()):
        if path.suffix in (".png", ".json"):
            copied[f"model-card/{path.name}"] = f"{MODEL_FOLDER}/{path.name}"
    return copied


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python docs/gen_reference.py OUT_DIR", file=sys.stderr)
        return 2
    out = Path(argv[0])
    for path, build in PAGES.items():
        target = out / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(build())
        print(target)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
