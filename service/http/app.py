"""The HTTP app: one FastAPI application assembling every router, mounted into the BentoML service.

Mounted so that one endpoint can take both a multipart upload and a raw ``image/*`` body, answer
with the project's error bodies, and appear in ``/docs.json``. The model calls and the model's
facts are injected (``app.state``), so tests run the same app against stand-ins.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute

from pneumoscan.errors import PneumoscanError
from service.http import apidocs
from service.http.apidocs import openapi_spec
from service.http.context import InferFn, ModelInfo, SubmitJob, SubmitQuery
from service.http.errors import BadRequest, UnsupportedMediaType, error_response, routing_error
from service.http.routes import clients, dicomweb, explain, jobs, model, outbox, predict, reviews, ui
from service.http.routes.explain import ExplainFn

ROUTERS = (
    apidocs.router,
    predict.router,
    explain.router,
    jobs.router,
    reviews.router,
    dicomweb.router,
    outbox.router,
    clients.router,
    model.router,
    ui.router,
)


def routes() -> list[BaseRoute]:
    """Every route of the app's routers, as declared (what the access middleware reads scopes from)."""
    return [route for router in ROUTERS for route in router.routes]


def create_app(
    get_infer: Callable[[], InferFn],
    get_explain: Callable[[], ExplainFn],
    get_info: Callable[[], ModelInfo],
    submit_job: SubmitJob | None = None,
    submit_query: SubmitQuery | None = None,
) -> FastAPI:
    """The app; the three callables reach the running BentoML service (or a test's stand-ins), and
    ``submit_job`` the job queue (``POST /jobs``), which the app never imports itself."""
    app = FastAPI(
        title="pneumoscan",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,  # service.http.apidocs serves pneumoscan's own at /docs.json, in place of BentoML's
    )
    app.state.get_infer, app.state.get_explain, app.state.get_info = get_infer, get_explain, get_info
    app.state.submit_job, app.state.submit_query = submit_job, submit_query
    for router in ROUTERS:
        app.include_router(router)

    @app.exception_handler(PneumoscanError)
    async def pneumoscan_error(request: Request, exc: PneumoscanError) -> Response:
        return error_response(exc, getattr(request.state, "request_id", None), request.headers.get("accept", ""))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        # Starlette's own refusals (no such route, a wrong method, a malformed multipart body) in
        # the same shape as every other error.
        routed = routing_error(exc.status_code, request.method)
        if routed is not None:
            return error_response(
                routed,
                getattr(request.state, "request_id", None),
                request.headers.get("accept", ""),
                headers=exc.headers,
            )
        code = "bad_request" if exc.status_code < 500 else "internal_error"
        return JSONResponse({"error": code, "detail": str(exc.detail)}, status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        accept = request.headers.get("accept", "")
        if (wrong_type := _not_json(request, exc)) is not None:
            return error_response(wrong_type, None, accept)
        # "body.folder: String should have at least 1 character", one clause per problem.
        detail = "; ".join(f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}" for error in exc.errors())
        return error_response(BadRequest(detail), None, accept)

    return app


def _not_json(request: Request, exc: RequestValidationError) -> UnsupportedMediaType | None:
    """415 for a JSON body sent under another Content-Type (``curl -d`` sends a form), which FastAPI
    would report as a body that is not an object; None when the body was sent as JSON."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if not content_type or content_type == "application/json" or content_type.endswith("+json"):
        return None
    if not any(error["loc"][:1] == ("body",) for error in exc.errors()):
        return None
    route = getattr(request.scope.get("route"), "path", "this path")
    return UnsupportedMediaType(
        f"{request.method[:16]} {route} takes a JSON body with Content-Type: application/json; this request "
        f"was sent as {content_type[:80]}. With curl: -H 'Content-Type: application/json' -d '{{...}}'."
    )


def bundled_spec() -> dict[str, Any]:
    """The specification ``GET /docs.json`` answers with the bundled model, built without a server
    (``docs/gen_reference.py``): the routers need no model to describe themselves."""
    from pneumoscan.model.predictor import load_metadata
    from pneumoscan.settings import BUNDLED_MODEL_DIR

    def unused() -> Any:
        raise RuntimeError("the specification is built without a model")

    return openapi_spec(create_app(unused, unused, unused), load_metadata(BUNDLED_MODEL_DIR).version)
