"""POST /v1/tokens: the sandbox's tokenization endpoint, the one route a card number may reach
(the PAN guard exempts its body, and only its body). In real life this endpoint is the
gateway's; here the sandbox's hosted fields post to it from the tokenization origin.

The card comes as a form or as JSON (`card[number]`, `card[exp_month]`, `card[exp_year]`,
`card[cvc]`, or JSON's nested `card` object), with a publishable test key in the Authorization
header or a `key` field, as Stripe.js sends it. The answer is a Stripe-like token object. A
browser may call it only from the tokenization origin: no CORS headers are sent, and a request
whose Origin is any other is refused. Not in the OpenAPI document: it is the sandbox's API, not
Strongroom's. Nothing here logs, and no error repeats what was sent."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any, Literal
from urllib.parse import parse_qsl

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel

from strongroom.adapters.gateways.sandbox import CardToken
from strongroom.domain.audit import Origin
from strongroom.domain.errors import InvalidRequest, PermissionDenied
from strongroom.entrypoints.api.deps import ContainerDep, action, route_action
from strongroom.entrypoints.api.errors import request_id_of
from strongroom.entrypoints.api.pages import origin_of, parse_origin
from strongroom.entrypoints.api.pan_guard import TOKENIZATION_PATH
from strongroom.service_layer.tokenization import CardInput, Tokenization
from strongroom.settings import Settings

router = APIRouter(prefix=TOKENIZATION_PATH, include_in_schema=False)

CARD_FIELDS = ("number", "exp_month", "exp_year", "cvc")
_KNOWN = frozenset({"key", *(f"card[{name}]" for name in CARD_FIELDS)})
_FORM = "application/x-www-form-urlencoded"


class CardOut(BaseModel):
    object: Literal["card"] = "card"
    brand: str
    last4: str
    country: str | None
    exp_month: int
    exp_year: int


class TokenOut(BaseModel):
    id: str
    object: Literal["token"] = "token"
    type: Literal["card"] = "card"
    card: CardOut
    livemode: Literal[False] = False
    created: int


def token_out(token: CardToken) -> TokenOut:
    return TokenOut(
        id=token.id,
        card=CardOut(
            brand=token.brand,
            last4=token.last4,
            country=token.country,
            exp_month=token.exp_month,
            exp_year=token.exp_year,
        ),
        created=int(token.created_at.timestamp()),
    )


def fields_origin(settings: Settings) -> str:
    """The hosted fields' origin: tokenization_url's, else public_url's."""
    return origin_of(settings.tokenization_url or settings.public_url)


@router.post("", openapi_extra=action("tokens.create"))
async def create_token(request: Request, container: ContainerDep) -> Response:
    browser_origin = request.headers.get("origin")
    if browser_origin is not None and parse_origin(browser_origin) != fields_origin(
        container.settings
    ):
        # Only the hosted fields' own page may post a card from a browser; a merchant page
        # that did would hold the number itself.
        raise PermissionDenied(
            "Cards are tokenized only by the sandbox's hosted fields, from their own origin.",
            code="origin_not_allowed",
        )
    fields = _fields(await request.body(), request.headers.get("content-type", ""))
    service = Tokenization(container.merchants, container.sandbox, container.clock)
    caller = await service.authenticate(
        _bearer(request.headers.get("authorization")) or fields.get("key"),
        Origin(
            ip=request.client.host if request.client else None,
            request_id=request_id_of(request),
        ),
    )
    caller = await container.authz.require(replace(caller, publishable=True), route_action(request))
    card = CardInput(**{name: _required(fields, name) for name in CARD_FIELDS})
    token = await service.tokenize(caller, card)
    return Response(
        token_out(token).model_dump_json(),
        media_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


def _bearer(header: str | None) -> str | None:
    if header is None:
        return None
    scheme, _, credentials = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return credentials.strip() or None


def _required(fields: dict[str, str], name: str) -> str:
    param = f"card[{name}]"
    value = fields.get(param)
    if value is None or not value.strip():
        raise InvalidRequest(
            f"Missing required param: {param}.", code="parameter_missing", param=param
        )
    return value


def _fields(body: bytes, content_type: str) -> dict[str, str]:
    """The request's parameters as flat names (`card[number]`, `key`). Unknown ones are
    ignored: naming them back could repeat a card number."""
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type == _FORM:
        try:
            return dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
        except UnicodeDecodeError:
            raise InvalidRequest("The form is not valid UTF-8.", code="parse_error") from None
    if media_type in ("application/json", ""):
        return _json_fields(body)
    raise InvalidRequest(
        "Send the card as a form (application/x-www-form-urlencoded) or as JSON.",
        code="parse_error",
    )


def _json_fields(body: bytes) -> dict[str, str]:
    try:
        document = json.loads(body) if body else None
    except (ValueError, RecursionError):
        raise InvalidRequest("Invalid JSON in the request body.", code="parse_error") from None
    if not isinstance(document, dict):
        raise InvalidRequest("The request body must be a JSON object.", code="parse_error")
    flat: dict[str, Any] = {k: v for k, v in document.items() if k != "card"}
    card = document.get("card")
    if isinstance(card, dict):
        flat |= {f"card[{k}]": v for k, v in card.items()}
    elif card is not None:
        raise InvalidRequest("card must be an object.", param="card")
    fields: dict[str, str] = {}
    for name, value in flat.items():
        if isinstance(value, str):
            fields[name] = value
        elif isinstance(value, int) and not isinstance(value, bool):
            fields[name] = str(value)
        elif name in _KNOWN:
            raise InvalidRequest(f"Invalid {name}: it must be a string.", param=name)
    return fields
