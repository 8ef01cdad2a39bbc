"""The demo checkout (/demo/checkout, on the main origin) and the sandbox's hosted card fields
(/sandbox/fields, on the tokenization origin) that it embeds. Not part of /v1.

The demo pays as the merchant owning the publishable test key in its URL: anyone may read
that key from the page, so the demo is test mode only, takes only tokens the hosted fields made
for that merchant, confirms only the PaymentIntents it created, and is switched off entirely
when STRONGROOM_ENV=production."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from strongroom.bootstrap import Container
from strongroom.domain.audit import Origin
from strongroom.domain.errors import InvalidRequest, ResourceMissing
from strongroom.domain.model import PaymentIntent, PIStatus
from strongroom.domain.money import check_amount, parse_currency
from strongroom.domain.routing import PaymentFacts
from strongroom.entrypoints.api.deps import ContainerDep
from strongroom.entrypoints.api.errors import request_id_of
from strongroom.entrypoints.api.pages import checkout as checkout_page
from strongroom.entrypoints.api.pages import fields as fields_page
from strongroom.entrypoints.api.pages import host_of, origin_of, parse_origin
from strongroom.entrypoints.api.rendering import json_response, payment_intent_out
from strongroom.entrypoints.api.routes.tokens import fields_origin
from strongroom.service_layer import commands as c
from strongroom.service_layer.payments import settled_outcome
from strongroom.service_layer.tokenization import Tokenization

# Marks the PaymentIntents the demo made: the only ones its confirm endpoint touches.
DEMO_METADATA = {"strongroom_demo": "checkout"}
DEFAULT_AMOUNT = 2000
DEFAULT_CURRENCY = "usd"


async def _demo_allowed(container: ContainerDep) -> Container:
    if container.settings.env == "production":
        raise HTTPException(status_code=404)  # as if the demo did not exist
    return container


DemoContainer = Annotated[Container, Depends(_demo_allowed)]

router = APIRouter(include_in_schema=False)


def _service(container: Container) -> Tokenization:
    return Tokenization(container.merchants, container.sandbox, container.clock)


def _origin(request: Request) -> Origin:
    return Origin(
        ip=request.client.host if request.client else None, request_id=request_id_of(request)
    )


async def _caller(request: Request, container: Container, key: str) -> c.Caller:
    return await _service(container).authenticate(key, _origin(request))


@dataclass(frozen=True)
class _Widget:
    name: str  # a key of pages.checkout.WIDGETS
    gateway_key: str | None = None
    library_url: str | None = None


# What each widget's tokenize() hands the page: a sandbox token, a Stripe PaymentMethod id, a
# Braintree nonce (Braintree's are UUIDs; its test nonces are words joined by hyphens).
_TOKENS = {
    "sandbox": re.compile(r"tok_[A-Za-z0-9]+"),
    "stripe": re.compile(r"pm_[A-Za-z0-9_]+"),
    "braintree": re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*"),
}


async def _widget_for(
    container: Container, caller: c.Caller, currency: str, amount: int
) -> _Widget:
    """The widget of the gateway a payment of this amount and currency is routed to first
    (widgets' tokens carry no card facts, so only currency and amount rules apply): Stripe
    Elements for a Stripe account, Braintree's Drop-in for a Braintree one, else the sandbox's
    hosted fields."""
    facts = PaymentFacts(currency=currency, amount=amount, card_country=None, card_brand=None)
    first = (await container.gateways.plan(caller.merchant_id, caller.livemode, facts))[0]
    settings = container.settings
    if first.account_id is not None and first.provider in ("stripe", "braintree"):
        account = await container.gateway_accounts.get(caller, first.account_id)
        if account.publishable_key:
            url = (
                settings.stripe_js_url
                if first.provider == "stripe"
                else settings.braintree_dropin_url
            )
            return _Widget(first.provider, account.publishable_key, url)
    return _Widget("sandbox")


def _html(body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Not available'
        f"</title></head><body><p>{body}</p></body></html>",
        status_code=status,
        headers={"Content-Security-Policy": "default-src 'none'", "X-Frame-Options": "DENY"},
    )


# --- the hosted fields ------------------------------------------------------------------------
@router.get("/sandbox/fields")
async def hosted_fields(
    request: Request,
    container: ContainerDep,
    key: Annotated[str, Query(max_length=255)],
    origin: Annotated[str, Query(max_length=300)],
) -> HTMLResponse:
    """The card fields, for one publishable test key, to be framed by one parent origin."""
    own = fields_origin(container.settings)
    if (request.headers.get("host") or "").lower() != host_of(own):
        # Served anywhere else, the fields could share an origin with the merchant's page.
        return _html("The card fields are served from the tokenization origin only.", 404)
    parent = parse_origin(origin)
    if parent is None:
        return _html(
            "origin must be the embedding page's origin, such as https://shop.example.", 400
        )
    if not key.startswith("pk_test_"):
        return _html("The sandbox tokenizes test cards only: use a pk_test_ key.", 400)
    return HTMLResponse(
        fields_page.render(key=key, parent_origin=parent), headers=fields_page.headers(parent)
    )


# --- the demo checkout ------------------------------------------------------------------------
@router.get("/demo/checkout")
async def demo_checkout(
    request: Request,
    container: DemoContainer,
    key: Annotated[str, Query(min_length=1, max_length=255)],
    amount: Annotated[int, Query(ge=1)] = DEFAULT_AMOUNT,
    currency: Annotated[str, Query(min_length=3, max_length=3)] = DEFAULT_CURRENCY,
) -> HTMLResponse:
    caller = await _caller(request, container, key)
    settings = container.settings
    amount = check_amount(amount, maximum=settings.max_amount)
    currency = parse_currency(currency)
    widget = await _widget_for(container, caller, currency, amount)
    view = checkout_page.CheckoutView(
        key=key,
        amount=amount,
        currency=currency,
        page_origin=origin_of(settings.public_url),
        fields_origin=fields_origin(settings),
        widget=widget.name,
        gateway_key=widget.gateway_key,
        library_url=widget.library_url,
    )
    return HTMLResponse(checkout_page.render(view), headers=checkout_page.headers(view))


class DemoPay(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key: str = Field(min_length=1, max_length=255)
    token: str = Field(min_length=5, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    amount: int
    currency: str = Field(min_length=3, max_length=3)


class DemoConfirm(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key: str = Field(min_length=1, max_length=255)
    payment_intent: str = Field(min_length=4, max_length=40, pattern=r"^pi_[A-Za-z0-9]+$")


def _intent(pi: PaymentIntent) -> Response:
    return json_response(payment_intent_out(pi))


@router.post("/demo/checkout/pay")
async def demo_pay(body: DemoPay, request: Request, container: DemoContainer) -> Response:
    """Create and confirm a PaymentIntent with what the page's widget made (a sandbox token for
    this merchant, a Stripe PaymentMethod, a Braintree nonce): the intent, or the decline in the
    one error shape (402)."""
    service = _service(container)
    caller = await service.authenticate(body.key, _origin(request))
    amount = check_amount(body.amount, maximum=container.settings.max_amount)
    currency = parse_currency(body.currency)
    widget = await _widget_for(container, caller, currency, amount)
    if not _TOKENS[widget.name].fullmatch(body.token):
        raise InvalidRequest(
            f"This checkout pays through {widget.name}; the token is not one of its.",
            param="token",
        )
    if widget.name == "sandbox":
        await service.owned_token(caller, body.token)
    cmd = c.CreatePaymentIntent(
        amount=amount,
        currency=currency,
        payment_method=body.token,
        confirm=True,
        metadata=dict(DEMO_METADATA),
    )
    pi = await container.payments.create_payment_intent(caller, cmd, None)
    assert isinstance(pi, PaymentIntent)  # no Idempotency-Key, so never a replay
    return _intent(pi)


@router.post("/demo/checkout/confirm")
async def demo_confirm(body: DemoConfirm, request: Request, container: DemoContainer) -> Response:
    """Back from 3-D Secure: confirm the demo's PaymentIntent again. One that has settled
    already is answered as it stands, so a reload asks nothing of the gateway."""
    caller = await _caller(request, container, body.key)
    pi = await container.payments.get_payment_intent(caller, body.payment_intent)
    if any(pi.metadata.get(k) != v for k, v in DEMO_METADATA.items()):
        raise ResourceMissing(f"No such payment_intent: '{body.payment_intent}'", param="id")
    if pi.status is PIStatus.REQUIRES_ACTION:
        confirmed = await container.payments.confirm(caller, c.ConfirmPaymentIntent(pi.id), None)
        assert isinstance(confirmed, PaymentIntent)
        return _intent(confirmed)
    settled = settled_outcome(pi)
    if isinstance(settled, PaymentIntent):
        return _intent(settled)
    raise settled
