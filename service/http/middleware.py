"""Pure ASGI middleware for the HTTP service: body-size limit, in-flight limit, a
readiness probe that answers at once, and the error shape for the router's own refusals.

Each answers with the service's JSON error body before the request body is read.
"""

from __future__ import annotations

import asyncio
import logging
import re

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.http.errors import NotReady, Overloaded, UploadTooLarge, error_response, routing_error

log = logging.getLogger("pneumoscan.service")

OPEN_PATHS = frozenset({"/", "/docs.json", "/schema.json", "/livez", "/healthz", "/readyz", "/metrics", "/version"})
OPEN_PREFIXES = ("/static_content/", "/assets/")
# The web page's own files (service/http/routes/ui.py): its pages and its named static files, nothing
# below them. The API they call is not open.
UI_FILES = re.compile(r"/ui(/|/jobs|/jobs/[0-9a-f]{16}|/static/[A-Za-z0-9_-]+\.(js|css|svg|png))?")


def is_open(path: str) -> bool:
    """Health, metrics, documentation, the model's version and the web page's files stay reachable
    without a key and under load (``/metrics`` needs ``admin`` with PNEUMOSCAN_PROTECT_METRICS)."""
    return path in OPEN_PATHS or path.startswith(OPEN_PREFIXES) or UI_FILES.fullmatch(path) is not None


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return value
    return None


def _accept(scope: Scope) -> str:
    return (_header(scope, b"accept") or b"").decode("latin-1")


class BodyLimitMiddleware:
    """Refuses bodies over ``max_bytes`` (or, under a path prefix of ``limits``, that prefix's
    limit): by Content-Length up front, or while streaming."""

    def __init__(self, app: ASGIApp, max_bytes: int, limits: dict[str, int] | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.limits = limits or {}

    def _limit(self, path: str) -> int:
        return next((limit for prefix, limit in self.limits.items() if path.startswith(prefix)), self.max_bytes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self._limit(scope["path"])
        too_large = UploadTooLarge(f"The request body exceeds the {limit:,}-byte limit.")
        declared = _header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await error_response(too_large, accept=_accept(scope))(scope, receive, send)
            return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # Raised inside the route's body read; its exception handler answers 413.
                    raise too_large
            return message

        await self.app(scope, counting_receive, send)


class InFlightLimitMiddleware:
    """Answers 503 ``overloaded`` at once when ``limit`` requests are already in progress."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or is_open(scope["path"]):
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.limit:
            error = Overloaded(f"{self.in_flight} requests are in progress; retry shortly.")
            await error_response(error, accept=_accept(scope))(scope, receive, send)
            return
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1


class ReadinessMiddleware:
    """``/readyz`` answers 503 ``not_ready`` within ``seconds`` while the model service starts.

    BentoML's own probe raises when the model service does not answer yet, and its traffic
    timeout then holds the request until the timeout and ends it with a 500; a load balancer or
    orchestrator wants a quick "not yet" instead.
    """

    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != "/readyz":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = True
            await send(message)

        try:
            await asyncio.wait_for(self.app(scope, receive, tracking_send), self.seconds)
        except Exception as exc:
            if started:
                raise
            log.info("Not ready yet: the readiness probe got %s.", type(exc).__name__)
            detail = "The model service is still starting; retry shortly."
            await error_response(NotReady(detail), accept=_accept(scope))(scope, receive, send)


class RoutingErrorMiddleware:
    """404 and 405 from BentoML's own router in the service's error shape.

    BentoML mounts the app so that it sees only the paths it has routes for; a path that nothing
    serves, or a wrong method on one of BentoML's own routes (``/healthz``, ``/docs.json``, ...),
    gets Starlette's plain-text "Not Found" or "Method Not Allowed" from the outer app. Those are
    the only plain-text 404 and 405 answers here (the app's own are JSON already), so they are
    recognised by status and content type and replaced; their ``Allow`` header is kept.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        replaced = False

        async def shaping_send(message: Message) -> None:
            nonlocal replaced
            if message["type"] == "http.response.start":
                headers = {
                    key.decode("latin-1").lower(): value.decode("latin-1") for key, value in message.get("headers", [])
                }
                error = None
                if headers.get("content-type", "").startswith("text/plain"):
                    error = routing_error(message["status"], scope["method"])
                if error is not None:
                    replaced = True
                    kept = {"Allow": headers["allow"]} if "allow" in headers else None
                    await error_response(error, accept=_accept(scope), headers=kept)(scope, receive, send)
                    return
            elif replaced:
                return  # the plain-text body of the replaced answer
            await send(message)

        await self.app(scope, receive, shaping_send)
