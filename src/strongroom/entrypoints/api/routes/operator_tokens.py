"""Apps acting for an operator: POST /oauth/token exchanges a refresh token for a new pair
(refresh token rotation, RFC 9700 section 4.14; the first pair is made in the console, after a
recent second factor), and GET /v1/operator says whom an access token acts for. Kept out of the
OpenAPI document until operators' access to the rest of the API arrives with authorization."""

from __future__ import annotations

from typing import Literal
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel

from strongroom.domain.audit import Origin
from strongroom.domain.errors import AuthenticationError, InvalidRequest
from strongroom.entrypoints.api.deps import ContainerDep
from strongroom.entrypoints.api.errors import request_id_of
from strongroom.entrypoints.api.rendering import json_response

router = APIRouter(include_in_schema=False)


class TokenOut(BaseModel):
    access_token: str
    token_type: Literal["Bearer"] = "Bearer"  # noqa: S105 - the scheme's name
    expires_in: int
    refresh_token: str


class OperatorOut(BaseModel):
    id: str
    object: Literal["operator"] = "operator"
    email: str
    role: str
    merchant: str


@router.post("/oauth/token")
async def token(request: Request, container: ContainerDep) -> Response:
    try:
        form = parse_qs((await request.body()).decode("utf-8"), max_num_fields=8)
    except (UnicodeDecodeError, ValueError):
        form = {}
    grant = form.get("grant_type", [""])[0]
    if grant != "refresh_token":
        raise InvalidRequest(
            "grant_type must be refresh_token.", param="grant_type", code="unsupported_grant_type"
        )
    refresh_token = form.get("refresh_token", [""])[0]
    origin = Origin(
        ip=request.client.host if request.client else None, request_id=request_id_of(request)
    )
    pair = await container.app_tokens.refresh(refresh_token, origin=origin)
    out = TokenOut(
        access_token=pair.access_token, expires_in=pair.expires_in, refresh_token=pair.refresh_token
    )
    return json_response(out, secret=True)


@router.get("/v1/operator")
async def whoami(request: Request, container: ContainerDep) -> Response:
    scheme, _, credentials = (request.headers.get("authorization") or "").partition(" ")
    if scheme.lower() != "bearer" or not credentials:
        raise AuthenticationError("Send an operator access token as a Bearer token.")
    operator = await container.operators.get(await container.app_tokens.authenticate(credentials))
    out = OperatorOut(
        id=operator.id,
        email=operator.email,
        role=operator.role.value,
        merchant=operator.merchant_id,
    )
    return json_response(out)
