"""Who may call what, and the record of who did: every API request is authenticated, checked
against the scope its route declares, held to its client's rate, and audited, in one ASGI
middleware that answers before the request's body is read.

A route declares its scope and audit action with ``**scoped(Scope.JOBS, "job.results")``; the
same declaration gives the OpenAPI operation its security requirement, so the specification shows
what each operation needs. The route adds what it touched (``audited(request).add(...)``); the
record is written when the answer starts, and an answer whose record cannot be written is
replaced by 503 ``audit_unavailable``, its body never sent.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from fastapi import Request, Security
from fastapi.security import HTTPBearer
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pneumoscan.access.audit import AuditLog, AuditRecord, listed, outcome_of
from pneumoscan.access.clients import ALL_SCOPES, SCOPE_MEANINGS, SHARED_KEY_CLIENT, Client, KeysFile
from pneumoscan.access.clients import Scope as AccessScope
from pneumoscan.access.rate import RateLimiter, retry_after
from pneumoscan.errors import AuditUnavailable, PneumoscanError
from pneumoscan.result import Result
from pneumoscan.settings import Settings
from service.http.errors import Forbidden, RateLimited, Unauthorized, error_response

log = logging.getLogger("pneumoscan.service")

BEARER = HTTPBearer(
    scheme_name="apiKey",
    auto_error=False,
    description="A client's key (`pneumoscan keys add`), or PNEUMOSCAN_API_KEY (every scope).",
)
SCOPE_KEY, ACTION_KEY = "x-scope", "x-audit-action"
# Authenticated, but open to every scope (a client asking what it may do).
ANY_SCOPE = "any"


def scoped(scope: AccessScope | None, action: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Route-decorator arguments: the scope the operation needs (None: any authenticated client)
    and the action its audit records name; ``extra`` is the route's own ``openapi_extra``."""
    scopes = [scope.value] if scope is not None else []
    return {
        "dependencies": [Security(BEARER, scopes=scopes)],
        "openapi_extra": {**(extra or {}), SCOPE_KEY: scope.value if scope else ANY_SCOPE, ACTION_KEY: action},
    }


LISTS = ("files", "studies", "instances", "patients", "messages")


@dataclass
class AuditEntry:
    """What a request touched, filled in by its route and written when its answer starts."""

    client: str | None
    action: str
    scope: str | None
    job: str | None = None
    whole_job: bool = False
    files: list[str | None] = field(default_factory=list)
    studies: list[str | None] = field(default_factory=list)
    instances: list[str | None] = field(default_factory=list)
    patients: list[str | None] = field(default_factory=list)
    messages: list[str | None] = field(default_factory=list)

    def add(
        self,
        *,
        job: str | None = None,
        whole_job: bool = False,
        files: Iterable[str | None] = (),
        results: Iterable[Result] = (),
        studies: Iterable[str | None] = (),
        instances: Iterable[str | None] = (),
        patients: Iterable[str | None] = (),
        messages: Iterable[str] = (),
    ) -> None:
        self.job = job or self.job
        self.whole_job = self.whole_job or whole_job
        self.files.extend(files)
        self.studies.extend(studies)
        self.instances.extend(instances)
        self.patients.extend(patients)
        self.messages.extend(messages)
        for result in results:
            self.files.append(result.file)
            if result.dicom is not None:
                self.studies.append(result.dicom.study_instance_uid)
                self.instances.append(result.dicom.sop_instance_uid)
                if result.dicom.patient is not None:
                    self.patients.append(result.dicom.patient.patient_id)

    def record(self, scope: Scope, status: int) -> AuditRecord:
        values = {name: listed(getattr(self, name)) for name in LISTS}
        return AuditRecord(
            time=datetime.now(UTC),
            client=self.client,
            action=self.action,
            scope=self.scope,
            method=scope["method"],
            path=scope["path"],
            status=status,
            outcome=outcome_of(status),
            address=_address(scope) or None,
            request_id=scope.get("state", {}).get("request_id"),
            job=self.job,
            whole_job=self.whole_job,
            truncated=any(cut for _, cut in values.values()),
            **{name: kept for name, (kept, _) in values.items()},
        )


def audited(request: Request) -> AuditEntry:
    """The request's audit entry (a stand-in when the app runs without the middleware, in tests)."""
    entry = request.scope.setdefault("state", {}).get("audit")
    if entry is None:
        entry = request.scope["state"]["audit"] = AuditEntry(client=None, action="unaudited", scope=None)
    return entry


@dataclass(frozen=True)
class Operation:
    methods: frozenset[str]
    pattern: re.Pattern[str]
    scope: str
    action: str


def operations(routes: Iterable[BaseRoute]) -> list[Operation]:
    """Each declared route's methods, path pattern, scope and action (``scoped``)."""
    found = []
    for route in routes:
        extra = getattr(route, "openapi_extra", None) or {}
        if SCOPE_KEY in extra:
            methods = frozenset(getattr(route, "methods", None) or ())
            found.append(Operation(methods, route.path_regex, extra[SCOPE_KEY], extra[ACTION_KEY]))  # type: ignore[attr-defined]
    return found


def key_required(settings: Settings) -> bool:
    """True once PNEUMOSCAN_API_KEY is set or the keys file exists: the API then needs a key."""
    return settings.api_key is not None or settings.keys_path.exists()


@dataclass
class Access:
    """Who is authenticated and how: the keys file, the shared key, the rate limits and the trail."""

    keys: KeysFile
    shared_key: str | None = None
    audit: AuditLog | None = None
    default_rate: float = 0.0
    limiter: RateLimiter = field(default_factory=RateLimiter)

    def client(self, authorization: bytes | None) -> tuple[Client | None, bool]:
        """(the client the Authorization header names, whether a key is needed: once
        PNEUMOSCAN_API_KEY is set or the keys file exists); without a key needed, a stand-in with
        every scope. The keys file is looked at once (one ``stat``) per request."""
        if not (self.keys.present() or self.shared_key is not None):
            return Client(name="anonymous", scopes=ALL_SCOPES), False
        scheme, _, key = (authorization or b"").decode("latin-1").partition(" ")
        if scheme.lower() != "bearer" or not key:
            return None, True
        if self.shared_key is not None and hmac.compare_digest(key.encode(), self.shared_key.encode()):
            return Client(name=SHARED_KEY_CLIENT, scopes=ALL_SCOPES), True
        return self.keys.authenticate(key.strip(), refresh=False), True


def _header(scope: Scope, name: bytes) -> bytes | None:
    return next((value for key, value in scope["headers"] if key == name), None)


def _address(scope: Scope) -> str:
    client = scope.get("client")
    return client[0] if client else ""


# /metrics is BentoML's, outside the routers; with PNEUMOSCAN_PROTECT_METRICS it needs ``admin``.
METRICS = Operation(frozenset({"GET"}), re.compile(r"/metrics$"), AccessScope.ADMIN.value, "metrics")


class AccessMiddleware:
    """Authenticates (401), checks the scope (403), holds the rate (429) and audits each request
    to a declared operation, or to any path that is not ``open``."""

    def __init__(self, app: ASGIApp, access: Access, operations: list[Operation], is_open) -> None:
        self.app = app
        self.access = access
        self.operations = operations
        self.is_open = is_open

    def _operation(self, scope: Scope) -> Operation | None:
        return next(
            (each for each in self.operations if scope["method"] in each.methods and each.pattern.match(scope["path"])),
            None,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.is_open(scope["path"]):
            await self.app(scope, receive, send)
            return
        operation = self._operation(scope)
        needed = operation.scope if operation is not None else ANY_SCOPE
        action = operation.action if operation is not None else "unknown"
        authorization = _header(scope, b"authorization")
        client, required = self.access.client(authorization)
        entry = AuditEntry(
            client=client.name if client else None, action=action, scope=None if needed == ANY_SCOPE else needed
        )
        try:
            self._admit(client, needed, authorization, _address(scope) if not required else None)
            if self.access.audit is not None:
                self.access.audit.check()
        except PneumoscanError as refusal:
            await self._refuse(scope, receive, send, refusal, entry)
            return
        assert client is not None
        scope.setdefault("state", {}).update(audit=entry, client=client)
        await self.app(scope, receive, self._auditing_send(scope, receive, send, entry))

    def _admit(self, client: Client | None, needed: str, authorization: bytes | None, address: str | None) -> None:
        """Raise the refusal the request earns; ``address`` (the caller's, when no key is needed)
        holds the rate instead of the client's name."""
        if client is None:
            detail = "The API key is wrong or revoked." if authorization else None
            raise Unauthorized(detail or "Send a client's key as 'Authorization: Bearer <key>'.")
        if needed != ANY_SCOPE and not client.may(AccessScope(needed)):
            may = ", ".join(sorted(client.scopes)) or "nothing"
            raise Forbidden(
                f"The client {client.name!r} lacks the {needed!r} scope ({SCOPE_MEANINGS[AccessScope(needed)]}); "
                f"it may: {may}."
            )
        rate = client.rate_per_s if client.rate_per_s is not None else self.access.default_rate
        # Without keys there are no clients to tell apart: each address has its own bucket.
        wait = self.access.limiter.wait(address if address is not None else client.name, rate)
        if wait:
            raise RateLimited(
                f"The client {client.name!r} is over its rate of {rate:g} requests a second; retry shortly.",
                retry_after(wait),
            )

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, refusal: PneumoscanError, entry: AuditEntry):
        response = error_response(refusal, accept=(_header(scope, b"accept") or b"").decode("latin-1"))
        if self.access.audit is not None and not isinstance(refusal, AuditUnavailable):
            try:
                await asyncio.wrap_future(self.access.audit.submit(entry.record(scope, response.status_code)))
            except AuditUnavailable as exc:
                log.error("A refusal was not audited: %s", exc.detail)
        await response(scope, receive, send)

    def _auditing_send(self, scope: Scope, receive: Receive, send: Send, entry: AuditEntry) -> Send:
        replaced = False

        async def auditing_send(message: Message) -> None:
            nonlocal replaced
            if replaced:
                return  # the body of an answer that was not audited, never sent
            if message["type"] == "http.response.start" and self.access.audit is not None:
                try:
                    # Written and fsynced in the trail's own thread, with the records of the
                    # requests answered meanwhile (one fsync for the round), not on the event loop.
                    await asyncio.wrap_future(self.access.audit.submit(entry.record(scope, message["status"])))
                except AuditUnavailable as exc:
                    replaced = True
                    log.error("Answered 503: %s", exc.detail)
                    accept = (_header(scope, b"accept") or b"").decode("latin-1")
                    await error_response(exc, accept=accept)(scope, receive, send)
                    return
            await send(message)

        return auditing_send
