"""The API page: pneumoscan's OpenAPI specification at ``GET /docs.json`` and Swagger UI at ``GET /``.

Both replace BentoML's own (this app is mounted before them): its page loads a Google Tag Manager
script, and its specification names BentoML as the contact and has no version. The Swagger UI files
come from the ``fastapi-offline`` package, so the page loads nothing from another origin; its
Content-Security-Policy allows this origin only. ``docs/gen_reference.py`` builds the same
specification for the documentation site with ``openapi_spec``.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.utils import get_openapi
from starlette.responses import HTMLResponse, JSONResponse, Response

from pneumoscan import __version__
from service.http.errors import NotFound

TITLE = "pneumoscan"
SUMMARY = "Pneumonia screening on chest X-rays. Not a diagnostic device."
DESCRIPTION = (
    "Scores chest X-rays (JPEG, PNG, DICOM) for pneumonia with a Keras CNN trained on paediatric "
    "(age 1-5) anterior-posterior radiographs from one centre: a research and integration aid, not a "
    "substitute for a radiologist. Every input passes an input gate first: images unlike a chest X-ray "
    "are refused with `not_a_chest_xray`, colour ones with `colour_image`, blank ones with `blank_image`.\n\n"
    'Every error is JSON `{"error": "<code>", "detail": "<explanation>"}` (a FHIR OperationOutcome '
    "for clients that accept `application/fhir+json`). Once the operator has made client keys (`pneumoscan keys "
    "add`) or set `PNEUMOSCAN_API_KEY`, every operation but the health, version, metrics and documentation paths "
    "needs `Authorization: Bearer <key>` of a client holding the operation's scope (its `security` requirement "
    "and `x-scope`): 401 `unauthorized` without a valid key, 403 `forbidden` without the scope, 429 "
    "`rate_limited` over the client's rate. Each such request is audited; 503 `audit_unavailable` when its "
    "record cannot be written."
)
LICENSE = {"name": "Apache-2.0", "identifier": "Apache-2.0"}

# Served by BentoML itself, outside the routers; listed so that the specification has every path.
INFRA_PATHS: dict[str, str] = {
    "/livez": "200 while the process is up",
    "/healthz": "200 while the process is up (as /livez)",
    "/readyz": "200 once the model is loaded and warmed up; 503 not_ready until then",
    "/metrics": "Prometheus metrics (text exposition format); the admin scope with PNEUMOSCAN_PROTECT_METRICS",
}


def version_text(model_version: str | None) -> str:
    """``info.version``: the package's version and the model's, e.g. ``0.1.0 (model tuned-2026...)``."""
    return f"{__version__} (model {model_version or 'not loaded yet'})"


def openapi_spec(app: FastAPI, model_version: str | None) -> dict[str, Any]:
    """The specification of the app's routers and BentoML's health paths, with pneumoscan's own info."""
    spec = get_openapi(
        title=TITLE,
        version=version_text(model_version),
        summary=SUMMARY,
        description=DESCRIPTION,
        routes=app.routes,
        license_info=LICENSE,
    )
    spec["info"]["x-package-version"] = __version__
    spec["info"]["x-model-version"] = model_version
    for path, meaning in INFRA_PATHS.items():
        spec["paths"][path] = {
            "get": {"summary": meaning, "tags": ["infrastructure"], "responses": {"200": {"description": meaning}}}
        }
    return spec


SWAGGER_FILES = files("fastapi_offline") / "static"
ASSETS = {"swagger-ui-bundle.js": "text/javascript", "swagger-ui.css": "text/css", "favicon.png": "image/png"}
INITIALIZER = """window.addEventListener("load", function () {
  window.ui = SwaggerUIBundle({
    url: "docs.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    validatorUrl: null,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout"
  });
});
"""
PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>pneumoscan API</title>
  <link rel="stylesheet" href="assets/apidocs/swagger-ui.css">
  <link rel="icon" type="image/png" href="assets/apidocs/favicon.png">
</head>
<body>
  <div id="swagger-ui" data-testid="api-docs"></div>
  <script src="assets/apidocs/swagger-ui-bundle.js"></script>
  <script src="assets/apidocs/initializer.js"></script>
</body>
</html>
"""
# Swagger UI sets style attributes from JavaScript and draws its icons as data: URLs.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "font-src 'self' data:; connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}

router = APIRouter(include_in_schema=False)


@cache
def _read_asset(name: str) -> bytes:
    return (SWAGGER_FILES / name).read_bytes()


def _model_version(request: Request) -> str | None:
    try:
        return str(request.app.state.get_info().model_version)
    except (AttributeError, LookupError, RuntimeError):  # the service is still loading its model
        return None


@router.get("/docs.json")
async def specification(request: Request) -> JSONResponse:
    model_version = _model_version(request)
    cached = getattr(request.app.state, "openapi_spec", None)
    if cached is None or cached["info"]["x-model-version"] != model_version:
        cached = request.app.state.openapi_spec = openapi_spec(request.app, model_version)
    return JSONResponse(cached)


@router.get("/")
async def page() -> HTMLResponse:
    return HTMLResponse(PAGE, headers=HEADERS)


@router.get("/assets/apidocs/{name}")
async def asset(name: str) -> Response:
    if name == "initializer.js":
        return Response(INITIALIZER, media_type="text/javascript", headers=HEADERS)
    if name not in ASSETS:
        raise NotFound("The API page has no such file.")
    return Response(
        _read_asset(name), media_type=ASSETS[name], headers={**HEADERS, "Cache-Control": "public, max-age=3600"}
    )
