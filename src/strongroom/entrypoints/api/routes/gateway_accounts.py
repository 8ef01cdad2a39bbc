"""/v1/gateway_accounts, /v1/gateway_routing and /v1/gateways/status: a merchant's own Stripe,
Braintree or sandbox accounts, which of them a payment goes to, and how each is doing.

Credentials go in and never come out: an account shows its provider, its publishable key (which
browsers see anyway) and the URL its gateway sends webhooks to. The sandbox's webhook signing
secret is made here and shown once, in the answer to create.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter
from fastapi.responses import Response
from pydantic import BaseModel, Field

from strongroom.domain.routing import Routing
from strongroom.entrypoints.api.deps import CallerDep, ContainerDep, action
from strongroom.entrypoints.api.rendering import json_response
from strongroom.entrypoints.api.routes._docs import READ, WRITE, errors
from strongroom.entrypoints.api.schemas import NO_NUL, Body, PathId
from strongroom.service_layer.gateway_accounts import GatewayAccount
from strongroom.service_layer.gateways import BUILTIN

router = APIRouter(tags=["gateways"])

Provider = Annotated[
    Literal["stripe", "braintree", "sandbox"],
    Field(description="Which gateway this account is at."),
]


class GatewayAccountCreate(Body):
    provider: Provider
    credentials: dict[Annotated[str, Field(max_length=64, pattern=NO_NUL)], Any] = Field(
        default_factory=dict,
        max_length=16,
        description="stripe: secret_key, publishable_key, webhook_secrets. braintree: "
        "merchant_id, public_key, private_key, environment, merchant_accounts, "
        "tokenization_key. sandbox: none.",
    )


class GatewayAccountOut(BaseModel):
    id: str
    object: Literal["gateway_account"] = "gateway_account"
    provider: str
    livemode: bool
    publishable_key: str | None
    webhook_url: str = Field(description="Where to point the gateway's webhooks.")
    created: int


class GatewayAccountCreated(GatewayAccountOut):
    webhook_secret: str | None = Field(
        None, description="The sandbox's webhook signing secret, shown only here."
    )


class GatewayAccountList(BaseModel):
    object: Literal["list"] = "list"
    url: str = "/v1/gateway_accounts"
    has_more: bool = False
    data: list[GatewayAccountOut]


class GatewayAccountDeleted(BaseModel):
    id: str
    object: Literal["gateway_account"] = "gateway_account"
    deleted: Literal[True] = True


class RoutingRule(Body):
    gateways: list[Annotated[str, Field(max_length=40, pattern=NO_NUL)]] = Field(max_length=10)
    currency: list[Annotated[str, Field(max_length=3)]] | None = Field(None, max_length=200)
    card_country: list[Annotated[str, Field(max_length=2)]] | None = Field(None, max_length=300)
    card_brand: list[Annotated[str, Field(max_length=32)]] | None = Field(None, max_length=20)
    amount_gte: int | None = None
    amount_lte: int | None = None


class RoutingIn(Body):
    rules: list[RoutingRule] = Field(default_factory=list, max_length=50)
    default: list[Annotated[str, Field(max_length=40, pattern=NO_NUL)]] = Field(
        default_factory=list, max_length=10
    )


class RoutingOut(BaseModel):
    object: Literal["gateway_routing"] = "gateway_routing"
    rules: list[dict[str, Any]]
    default: list[str]


class BreakerOut(BaseModel):
    gateway_account: str | None = Field(description="null: the built-in sandbox.")
    provider: str
    state: str = Field(description="closed, open or half-open.")
    consecutive_failures: int


class GatewaysStatus(BaseModel):
    object: Literal["gateways_status"] = "gateways_status"
    data: list[BreakerOut]


def _out(account: GatewayAccount, public_url: str) -> dict[str, Any]:
    return {
        "id": account.id,
        "provider": account.provider.value,
        "livemode": account.livemode,
        "publishable_key": account.publishable_key,
        "webhook_url": account.webhook_url(public_url),
        "created": int(account.created_at.timestamp()),
    }


def _routing(routing: Routing) -> RoutingOut:
    doc = routing.to_json()
    return RoutingOut(rules=doc["rules"], default=doc["default"])


@router.post(
    "/v1/gateway_accounts",
    response_model=GatewayAccountCreated,
    responses=errors(*WRITE),
    openapi_extra=action("gateway_accounts.write"),
)
async def create_gateway_account(
    body: GatewayAccountCreate, caller: CallerDep, container: ContainerDep
) -> Response:
    created = await container.gateway_accounts.create(caller, body.provider, body.credentials)
    out = GatewayAccountCreated(
        **_out(created.account, container.settings.public_url),
        webhook_secret=created.webhook_secret,
    )
    return json_response(out, secret=True)


@router.get(
    "/v1/gateway_accounts",
    response_model=GatewayAccountList,
    responses=errors(*READ),
    openapi_extra=action("gateway_accounts.read"),
)
async def list_gateway_accounts(caller: CallerDep, container: ContainerDep) -> Response:
    accounts = await container.gateway_accounts.list(caller)
    url = container.settings.public_url
    return json_response(
        GatewayAccountList(data=[GatewayAccountOut(**_out(a, url)) for a in accounts])
    )


@router.get(
    "/v1/gateway_accounts/{account_id}",
    response_model=GatewayAccountOut,
    responses=errors(*READ),
    openapi_extra=action("gateway_accounts.read"),
)
async def get_gateway_account(
    account_id: PathId, caller: CallerDep, container: ContainerDep
) -> Response:
    account = await container.gateway_accounts.get(caller, account_id)
    return json_response(GatewayAccountOut(**_out(account, container.settings.public_url)))


@router.delete(
    "/v1/gateway_accounts/{account_id}",
    response_model=GatewayAccountDeleted,
    responses=errors(*WRITE),
    openapi_extra=action("gateway_accounts.write"),
)
async def delete_gateway_account(
    account_id: PathId, caller: CallerDep, container: ContainerDep
) -> Response:
    await container.gateway_accounts.delete(caller, account_id)
    return json_response(GatewayAccountDeleted(id=account_id))


@router.get(
    "/v1/gateway_routing",
    response_model=RoutingOut,
    responses=errors(*READ),
    openapi_extra=action("gateway_routing.read"),
)
async def get_gateway_routing(caller: CallerDep, container: ContainerDep) -> Response:
    return json_response(_routing(await container.gateway_accounts.get_routing(caller)))


@router.post(
    "/v1/gateway_routing",
    response_model=RoutingOut,
    responses=errors(*WRITE),
    openapi_extra=action("gateway_routing.write"),
)
async def set_gateway_routing(
    body: RoutingIn, caller: CallerDep, container: ContainerDep
) -> Response:
    doc = body.model_dump(exclude_none=True)
    return json_response(_routing(await container.gateway_accounts.set_routing(caller, doc)))


@router.get(
    "/v1/gateways/status",
    response_model=GatewaysStatus,
    responses=errors(*READ),
    openapi_extra=action("gateway_accounts.read"),
)
async def gateways_status(caller: CallerDep, container: ContainerDep) -> Response:
    """Each of the caller's gateway accounts (and the built-in sandbox) with its circuit
    breaker, as the answering process sees it."""
    accounts = await container.gateway_accounts.list(caller)
    keys = {BUILTIN: container.gateways.builtin.name}
    keys.update((a.id, a.provider.value) for a in accounts)
    data = [
        BreakerOut(
            gateway_account=None if v.key == BUILTIN else v.key,
            provider=v.provider,
            state=v.state,
            consecutive_failures=v.failures,
        )
        for v in container.gateways.status(keys)
    ]
    return json_response(GatewaysStatus(data=data))
