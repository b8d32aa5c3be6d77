"""``GET /outbox``, ``POST /outbox/retry`` and ``POST /outbox/drop``: what waits to be delivered to
the HL7, FHIR and DICOM destinations, what was set aside, and what an operator does about it (as
``pneumoscan outbox list|retry|drop``); the ``admin`` scope."""

from __future__ import annotations

from typing import Any, Literal

import anyio
from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from pneumoscan.access.clients import Scope
from pneumoscan.delivery.destinations import outboxes
from pneumoscan.delivery.outbox import Outbox
from pneumoscan.schemas import ErrorResponse
from pneumoscan.settings import get_settings
from service.http.access import audited, scoped
from service.http.errors import BadRequest

router = APIRouter()
Destination = Literal["hl7", "fhir", "dicom"]
ERRORS: dict[int | str, dict[str, Any]] = {status: {"model": ErrorResponse} for status in (400, 401, 403, 415)}


class OutboxMessage(BaseModel):
    destination: Destination
    id: str = Field(description="The message's id, as retry and drop take it.")
    state: Literal["pending", "failed"] = Field(description="Waiting to be sent, or set aside after its attempts.")
    attempts: int
    last_error: str | None = Field(description="The destination's last answer, or why it could not be reached.")
    next_attempt: str | None = Field(description="When a pending message is due (UTC).")
    queued: str | None = Field(description="When it was written (UTC).")
    path: str = Field(description="Its file on the server.")


class OutboxList(BaseModel):
    messages: list[OutboxMessage] = Field(description="Waiting and failed messages, oldest first per destination.")


class Selection(BaseModel):
    destination: Destination | None = Field(default=None, description="One outbox (default: all three).")
    ids: list[str] = Field(default=[], max_length=10_000, description="Message ids, as GET /outbox lists them.")


class RetryRequest(Selection):
    all: bool = Field(default=False, description="Every failed and waiting message (of the destination).")


class Counted(BaseModel):
    count: int = Field(description="Messages retried or dropped.")


def _chosen(destination: str | None) -> list[Outbox]:
    return [box for name, box in outboxes(get_settings()).items() if destination in (None, name)]


@router.get(
    "/outbox",
    response_model=OutboxList,
    responses=ERRORS,
    summary="Results waiting for, or refused by, the HL7, FHIR and DICOM destinations",
    **scoped(Scope.ADMIN, "outbox.list"),
)
async def list_outbox(destination: Destination | None = None, state: Literal["pending", "failed"] | None = None):
    def listing() -> OutboxList:
        messages = [
            OutboxMessage.model_validate(message.as_dict())
            for box in _chosen(destination)
            for message in box.messages()
            if state in (None, message.state)
        ]
        return OutboxList(messages=messages)

    return await anyio.to_thread.run_sync(listing)


@router.post(
    "/outbox/retry",
    response_model=Counted,
    responses=ERRORS,
    summary="Put failed messages back (attempts reset) and make waiting ones due now",
    **scoped(Scope.ADMIN, "outbox.retry"),
)
async def retry_outbox(selection: RetryRequest, request: Request) -> Counted:
    """The named messages, or with ``all`` every one; the sender picks them up in its next round."""
    if not selection.ids and not selection.all:
        raise BadRequest("Name the message ids to retry, or set all to true.")
    audited(request).add(messages=selection.ids)
    ids = None if selection.all else selection.ids
    count = await anyio.to_thread.run_sync(lambda: sum(box.retry(ids) for box in _chosen(selection.destination)))
    return Counted(count=count)


@router.post(
    "/outbox/drop",
    response_model=Counted,
    responses=ERRORS,
    summary="Delete messages for good (each recorded in its outbox's dropped.log)",
    **scoped(Scope.ADMIN, "outbox.drop"),
)
async def drop_outbox(selection: Selection, request: Request) -> Counted:
    if not selection.ids:
        raise BadRequest("Name the message ids to drop.")
    audited(request).add(messages=selection.ids)
    client = getattr(request.state, "client", None)
    reason = f"dropped over HTTP by the client {client.name!r}" if client else "dropped over HTTP"
    count = await anyio.to_thread.run_sync(
        lambda: sum(box.drop(selection.ids, reason) for box in _chosen(selection.destination))
    )
    return Counted(count=count)
