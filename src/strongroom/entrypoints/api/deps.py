"""Dependencies shared by the routes, as reusable Annotated aliases."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Annotated

from fastapi import Depends, Header, Request, Security
from fastapi.responses import Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel

from strongroom.bootstrap import Container
from strongroom.domain.audit import Origin
from strongroom.domain.errors import AuthenticationError, PermissionDenied, StrongroomError
from strongroom.entrypoints.api.errors import request_id_of
from strongroom.entrypoints.api.rendering import render
from strongroom.service_layer.commands import Caller
from strongroom.service_layer.idempotency import (
    IdempotentRequest,
    StoredResponse,
    fingerprint,
)
from strongroom.service_layer.merchants import KeyKind
from strongroom.service_layer.payments import Replayed

_bearer = HTTPBearer(auto_error=False, description="A secret key: `sk_test_…` or `sk_live_…`.")


async def get_container(request: Request) -> Container:
    container: Container = request.app.state.container
    return container


ContainerDep = Annotated[Container, Depends(get_container)]


async def get_caller(
    request: Request,
    container: ContainerDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
) -> Caller:
    if credentials is None:
        raise AuthenticationError(
            "You did not provide an API key. Send it as 'Authorization: Bearer sk_test_…'."
        )
    origin = Origin(
        ip=request.client.host if request.client else None, request_id=request_id_of(request)
    )
    auth = await container.merchants.authenticate(credentials.credentials, origin)
    if auth.kind is not KeyKind.SECRET:
        raise PermissionDenied("Publishable keys may only tokenize; use a secret key here.")
    return replace(auth.caller, key_id=auth.key_id, origin=origin)


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
