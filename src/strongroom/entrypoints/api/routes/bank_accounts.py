"""/v1/bank_accounts: customers' bank accounts, linked through the bank provider's Link page
and verified before they can be debited.

The flow: the merchant's server asks for a link token; the customer's browser opens the
provider's Link with it and hands back a short-lived public token; the merchant's server posts
that here. The answer shows the account's last four digits and where its verification stands;
the full numbers and the provider's access token never come out. An account that needs
micro-deposits is verified by posting the two amounts the customer sees on their statement.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter
from fastapi.responses import Response
from pydantic import BaseModel, Field

from strongroom.entrypoints.api.deps import (
    CallerDep,
    ContainerDep,
    IdempotencyKey,
    RespondDep,
    action,
)
from strongroom.entrypoints.api.rendering import bank_account_out, json_response
from strongroom.entrypoints.api.routes._docs import READ, WRITE, errors
from strongroom.entrypoints.api.schemas import NO_NUL, BankAccountOut, Body, ObjectId, PathId

router = APIRouter(prefix="/v1/bank_accounts", tags=["bank accounts"])

ProviderToken = Annotated[str, Field(min_length=1, max_length=255, pattern=NO_NUL)]


class LinkTokenCreate(Body):
    customer: ObjectId | None = Field(
        None, description="Whose account it will be (the provider sees only an opaque id)."
    )


class LinkTokenOut(BaseModel):
    object: Literal["bank_link_token"] = "bank_link_token"
    link_token: str
    expires_at: int


class BankAccountCreate(Body):
    public_token: ProviderToken = Field(
        description="What the provider's Link page gave the customer's browser. Sandbox: "
        "public-sandbox-instant, -automatic, -manual or -insufficient-funds."
    )
    account_id: ProviderToken | None = Field(
        None, description="The provider's id of the account the customer chose, if several."
    )
    customer: ObjectId | None = None


class BankAccountVerify(Body):
    amounts: list[Annotated[int, Field(ge=1, le=99)]] = Field(
        min_length=2,
        max_length=2,
        description="The two micro-deposits in cents, in either order.",
    )


class BankAccountList(BaseModel):
    object: Literal["list"] = "list"
    url: str = "/v1/bank_accounts"
    has_more: bool = False
    data: list[BankAccountOut]


@router.post(
    "/link_tokens",
    response_model=LinkTokenOut,
    responses=errors(*WRITE),
    openapi_extra=action("bank_accounts.write"),
)
async def create_link_token(
    caller: CallerDep, container: ContainerDep, body: LinkTokenCreate | None = None
) -> Response:
    # The provider sees the merchant and customer only as a pseudonym.
    who = (body.customer if body else None) or caller.merchant_id
    token = await container.bank_accounts.link_token(caller, container.audit.pseudonym(who))
    out = LinkTokenOut(link_token=token.link_token, expires_at=int(token.expiration.timestamp()))
    return json_response(out, secret=True)


@router.post(
    "",
    response_model=BankAccountOut,
    responses=errors(*WRITE),
    openapi_extra=action("bank_accounts.write"),
)
async def link_bank_account(
    body: BankAccountCreate,
    respond: RespondDep,
    caller: CallerDep,
    container: ContainerDep,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    return await respond(
        idempotency_key,
        body,
        lambda idem: container.bank_accounts.link(
            caller,
            body.public_token,
            account_id=body.account_id,
            customer_id=body.customer,
            idem=idem,
        ),
    )


@router.get(
    "",
    response_model=BankAccountList,
    responses=errors(*READ),
    openapi_extra=action("bank_accounts.read"),
)
async def list_bank_accounts(caller: CallerDep, container: ContainerDep) -> Response:
    accounts = await container.bank_accounts.list(caller)
    return json_response(BankAccountList(data=[bank_account_out(a) for a in accounts]))


@router.get(
    "/{bank_account_id}",
    response_model=BankAccountOut,
    responses=errors(*READ),
    openapi_extra=action("bank_accounts.read"),
)
async def get_bank_account(
    bank_account_id: PathId, caller: CallerDep, container: ContainerDep
) -> Response:
    account = await container.bank_accounts.get(caller, bank_account_id)
    return json_response(bank_account_out(account))


@router.post(
    "/{bank_account_id}/verify",
    response_model=BankAccountOut,
    responses=errors(*WRITE),
    openapi_extra=action("bank_accounts.write"),
)
async def verify_bank_account(
    bank_account_id: PathId, body: BankAccountVerify, caller: CallerDep, container: ContainerDep
) -> Response:
    first, second = body.amounts
    verified = await container.bank_accounts.verify(caller, bank_account_id, (first, second))
    return json_response(bank_account_out(verified.account))
