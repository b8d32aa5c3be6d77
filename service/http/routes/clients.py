"""``GET /client``: who the key authenticates and what it may do (the web page shows it)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from pneumoscan.access.clients import ALL_SCOPES, SCOPE_MEANINGS, Client, Scope
from pneumoscan.schemas import ErrorResponse
from service.http.access import scoped

router = APIRouter()


class ClientInfo(BaseModel):
    name: str = Field(description="The client's name (`api-key` for PNEUMOSCAN_API_KEY, `anonymous` without keys).")
    scopes: list[Scope] = Field(description="What it may do.")
    may: dict[Scope, bool] = Field(description="Each scope, and whether the client has it.")
    meanings: dict[Scope, str] = Field(description="What each scope allows.")


@router.get(
    "/client",
    response_model=ClientInfo,
    responses={401: {"model": ErrorResponse}},
    summary="The client this key belongs to, and its scopes",
    **scoped(None, "client"),
)
async def whoami(request: Request) -> ClientInfo:
    client: Client = getattr(request.state, "client", None) or Client(name="anonymous", scopes=ALL_SCOPES)
    return ClientInfo(
        name=client.name,
        scopes=sorted(client.scopes),
        may={scope: client.may(scope) for scope in Scope},
        meanings=SCOPE_MEANINGS,
    )
