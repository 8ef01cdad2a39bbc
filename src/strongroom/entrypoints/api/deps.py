"""Dependencies shared by the routes, as reusable Annotated aliases."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Annotated, Any

from fastapi import Depends, Header, Request, Security
from fastapi.responses import Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel

from strongroom.bootstrap import Container
from strongroom.domain.audit import Origin
from strongroom.domain.errors import AuthenticationError, StrongroomError
from strongroom.entrypoints.api.errors import request_id_of
from strongroom.entrypoints.api.rendering import render
from strongroom.service_layer.commands import Caller
from strongroom.service_layer.idempotency import (
    IdempotentRequest,
    Replayed,
    StoredResponse,
    fingerprint,
)
from strongroom.service_layer.merchants import KeyKind
from strongroom.service_layer.rate_limits import Throttled, Window, route_class

_bearer = HTTPBearer(auto_error=False, description="A secret key: `sk_test_…` or `sk_live_…`.")


async def get_container(request: Request) -> Container:
    container: Container = request.app.state.container
    return container


ContainerDep = Annotated[Container, Depends(get_container)]


ACTION = "x-strongroom-action"


def action(name: str) -> dict[str, Any]:
    """A route's `openapi_extra`: the policy action its callers need (the schema shows it).
    `get_caller` asks the policy for it; a route that names none is refused to everyone."""
    return {ACTION: name}


def route_action(request: Request) -> str:
    route = request.scope.get("route")
    extra = getattr(route, "openapi_extra", None) or {}
    return str(extra.get(ACTION, ""))


async def get_caller(
    request: Request,
    container: ContainerDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
) -> Caller:
    """The API key's caller, once the policy allows the route's action (see `action`). The
    key's requests count against its rate limit; a missing or refused key's, against the
    client address's (the rate-limit middleware leaves requests with credentials to here)."""
    origin = Origin(
        ip=request.client.host if request.client else None, request_id=request_id_of(request)
    )
    route = route_class(request.method, request.url.path)
    limits = container.rate_limits
    try:
        if credentials is None:
            raise AuthenticationError(
                "You did not provide an API key. Send it as 'Authorization: Bearer sk_test_…'."
            )
        auth = await container.merchants.authenticate(credentials.credentials, origin)
    except AuthenticationError:
        if limits is not None and "authorization" in request.headers:
            await _counted(request, limits.per_address(route, origin.ip))
        raise
    if limits is not None:
        await _counted(request, limits.per_key(route, auth.key_id, auth.rate_limits))
    caller = replace(
        auth.caller,
        key_id=auth.key_id,
        origin=origin,
        publishable=auth.kind is KeyKind.PUBLISHABLE,
    )
    return await container.authz.require(caller, route_action(request))


async def _counted(request: Request, hit: Awaitable[Window | None]) -> None:
    """A rate-limit window's state for the answer's RateLimit fields, refused or not."""
    try:
        window = await hit
    except Throttled as refused:
        request.state.rate_limit_windows.append(refused.window)
        raise
    if window is not None:
        request.state.rate_limit_windows.append(window)


CallerDep = Annotated[Caller, Depends(get_caller)]

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        description="Makes the POST safe to retry: the first response is replayed for 24 hours.",
    ),
]


@dataclass
class Responder:
    """Runs a POST under its Idempotency-Key (if any) and turns the outcome into a response."""

    request: Request
    container: Container
    caller: Caller

    async def __call__(
        self,
        key: str | None,
        params: BaseModel | None,
        call: Callable[[IdempotentRequest | None], Awaitable[object]],
    ) -> Response:
        request_id = request_id_of(self.request)
        idem = None
        if key is not None:
            idem = IdempotentRequest(
                merchant_id=self.caller.merchant_id,
                livemode=self.caller.livemode,
                key=key,
                method=self.request.method,
                path=self.request.url.path,
                fingerprint=fingerprint(
                    params.model_dump(mode="json", exclude_unset=True) if params else {}
                ),
                render=lambda outcome: render(outcome, request_id),
                lock_for=timedelta(seconds=self.container.settings.idempotency_lock_seconds),
            )
        try:
            outcome = await call(idem)
        except StrongroomError:
            if idem is not None and idem.response is not None:
                return _respond(idem.response)
            raise
        if isinstance(outcome, Replayed):
            assert idem is not None
            assert idem.replay is not None
            return _respond(idem.replay, replayed=True)
        if idem is not None and idem.response is not None:
            return _respond(idem.response)
        return _respond(render(outcome, request_id))


def _respond(stored: StoredResponse, *, replayed: bool = False) -> Response:
    headers = {"Idempotent-Replayed": "true"} if replayed else None
    return Response(
        stored.body, status_code=stored.status, media_type="application/json", headers=headers
    )


async def get_responder(request: Request, container: ContainerDep, caller: CallerDep) -> Responder:
    return Responder(request, container, caller)


RespondDep = Annotated[Responder, Depends(get_responder)]
