"""The operators' console, running the merchant's account: invitations and the owner's
operators page, API keys, tokens for apps, gateway accounts, exports and refunds. Creating
credentials, changing gateway keys, exports and refunds above the merchant's threshold are
sensitive acts: they need a second factor within the last 5 minutes (the page asks again and
comes back). Not part of /v1.
"""

from __future__ import annotations

import json

from fastapi import APIRouter, Request
from fastapi.responses import Response

from strongroom.adapters.reporting.port import ReportName, ReportQuery
from strongroom.bootstrap import Container
from strongroom.domain.audit import Actor, ActorType, AuditTag
from strongroom.domain.authorization import mask_email
from strongroom.domain.errors import InvalidRequest, PermissionDenied, StrongroomError
from strongroom.entrypoints.api.deps import ContainerDep, action
from strongroom.entrypoints.api.pages import console as pages
from strongroom.entrypoints.api.pages.checkout import display_amount
from strongroom.entrypoints.api.routes import _console as web
from strongroom.service_layer import commands as c
from strongroom.service_layer.merchants import KeyKind
from strongroom.service_layer.reporting import to_csv
from strongroom.service_layer.sessions import Session

router = APIRouter(prefix="/console", include_in_schema=False)


# --- invitations and the owner's operators page ----------------------------------------------
@router.get("/invitations/{token}")
async def invitation_page(token: str, container: ContainerDep) -> Response:
    try:
        invitation = await container.invitations.pending(token[:100])
    except InvalidRequest as exc:
        return web.html("Invitation", pages.error(exc.message), 404)
    body = pages.accept_invitation(invitation.email, invitation.role.value)
    return web.html("Invitation", body)


@router.post("/invitations/{token}")
async def accept_invitation(token: str, request: Request, container: ContainerDep) -> Response:
    try:
        form = await web.read_form(request, container)
        await container.invitations.accept(
            token[:100], form.get("password", ""), origin=web.origin(request)
        )
    except web.Refused as exc:
        return web.refusal(exc)
    except InvalidRequest as exc:
        if exc.code == "invitation_invalid":
            return web.html("Invitation", pages.error(exc.message), 404)
        invitation = await container.invitations.pending(token[:100])
        body = pages.accept_invitation(invitation.email, invitation.role.value, exc.message)
        return web.html("Invitation", body, 400)
    return web.redirect("/console/sign-in")


async def _operators_page(
    container: Container, session: Session, token: str, message: str | None = None
) -> str:
    me = await container.operators.get(session.operator_id)
    everyone = await container.operators.list(me.merchant_id)
    csrf = container.sessions.csrf_token(token)
    return pages.operators(everyone, me.id, csrf, container.clock.now(), message)


@router.get("/operators", openapi_extra=action("operators.read"))
async def operators_page(request: Request, container: ContainerDep) -> Response:
    try:
        session, token = await web.allowed_session(request, container, "operators.read")
    except web.Refused as exc:
        return web.refusal(exc)
    return web.html("Operators", await _operators_page(container, session, token))


@router.post("/operators/invite", openapi_extra=action("operators.write"))
async def invite(request: Request, container: ContainerDep) -> Response:
    try:
        form, session, token = await web.posted(request, container, action="operators.write")
        await container.invitations.invite(
            session.operator_id,
            form.get("email", ""),
            form.get("role", ""),
            origin=web.origin(request),
        )
    except web.Refused as exc:
        return web.refusal(exc)
    except InvalidRequest as exc:
        return web.html(
            "Operators", await _operators_page(container, session, token, exc.message), 400
        )
    return web.redirect("/console/operators")


@router.post("/operators/{operator_id}/{change}", openapi_extra=action("operators.write"))
async def manage(
    operator_id: str, change: str, request: Request, container: ContainerDep
) -> Response:
    try:
        form, session, token = await web.posted(request, container, action="operators.write")
        target = operator_id[:40]
        if change == "unlock":
            await container.operators.unlock(
                session.operator_id, target, origin=web.origin(request)
            )
        elif change == "role":
            await container.operators.change_role(
                session.operator_id,
                target,
                form.get("role", ""),
                origin=web.origin(request),
            )
        else:
            return web.html("Operators", pages.error("No such action."), 404)
    except web.Refused as exc:
        return web.refusal(exc)
    except (InvalidRequest, PermissionDenied) as exc:
        page = await _operators_page(container, session, token, exc.message)
        return web.html("Operators", page, 400)
    return web.redirect("/console/operators")


# --- tokens for apps (a sensitive act: needs a second factor within 5 minutes) ----------------
@router.get("/app-tokens")
async def app_tokens_page(request: Request, container: ContainerDep) -> Response:
    try:
        _, token = await web.live_session(request, container)
    except web.Refused as exc:
        return web.refusal(exc)
    return web.html("Tokens for apps", pages.app_tokens(container.sessions.csrf_token(token)))


@router.post("/app-tokens")
async def create_app_tokens(request: Request, container: ContainerDep) -> Response:
    try:
        _, session, token = await web.posted(request, container)
    except web.Refused as exc:
        return web.refusal(exc)
    if (ask := web.unless_stepped_up(container, session, token, "/console/app-tokens")) is not None:
        return ask
    pair = await container.app_tokens.grant(session.operator_id, origin=web.origin(request))
    return web.html("Tokens for apps", pages.app_tokens_made(pair.access_token, pair.refresh_token))


# --- API keys (owners only; a sensitive act: needs a second factor within 5 minutes) ---------
@router.get("/api-keys", openapi_extra=action("api_keys.write"))
async def api_keys_page(request: Request, container: ContainerDep) -> Response:
    try:
        _, token = await web.allowed_session(request, container, "api_keys.write")
    except web.Refused as exc:
        return web.refusal(exc)
    return web.html("API keys", pages.api_keys(container.sessions.csrf_token(token)))


@router.post("/api-keys", openapi_extra=action("api_keys.write"))
async def create_api_key(request: Request, container: ContainerDep) -> Response:
    try:
        form, session, token = await web.posted(request, container, action="api_keys.write")
    except web.Refused as exc:
        return web.refusal(exc)
    if (ask := web.unless_stepped_up(container, session, token, "/console/api-keys")) is not None:
        return ask
    kind, mode = form.get("kind"), form.get("mode")
    if kind not in ("secret", "publishable") or mode not in ("test", "live"):
        csrf = container.sessions.csrf_token(token)
        return web.html("API keys", pages.api_keys(csrf, "Choose a kind and a mode."), 400)
    operator = await container.operators.get(session.operator_id)
    issued = await container.merchants.create_key(
        operator.merchant_id,
        KeyKind.SECRET if kind == "secret" else KeyKind.PUBLISHABLE,
        livemode=mode == "live",
        actor=Actor(ActorType.USER, operator.id),
        origin=web.origin(request),
    )
    return web.html("API keys", pages.api_key_made(issued.id, issued.secret))


# --- gateway credentials, exports and refunds: sensitive acts with step-up --------------------
@router.get("/gateways", openapi_extra=action("gateway_accounts.read"))
async def gateways_page(request: Request, container: ContainerDep) -> Response:
    try:
        session, token = await web.allowed_session(request, container, "gateway_accounts.read")
    except web.Refused as exc:
        return web.refusal(exc)
    return web.html("Gateway accounts", await _gateways_body(container, session, token))


async def _gateways_body(
    container: Container, session: Session, token: str, message: str | None = None
) -> str:
    operator = await container.operators.get(session.operator_id)
    caller = c.Caller(merchant_id=operator.merchant_id, livemode=False)
    url = container.settings.public_url
    accounts = [
        (a.id, a.provider.value, a.webhook_url(url))
        for a in await container.gateway_accounts.list(caller)
    ]
    return pages.gateways(accounts, container.sessions.csrf_token(token), message)


@router.post("/gateways", openapi_extra=action("gateway_accounts.write"))
async def add_gateway(request: Request, container: ContainerDep) -> Response:
    try:
        form, session, token = await web.posted(request, container, action="gateway_accounts.write")
    except web.Refused as exc:
        return web.refusal(exc)
    if (ask := web.unless_stepped_up(container, session, token, "/console/gateways")) is not None:
        return ask
    try:
        credentials = json.loads(form.get("credentials") or "{}")
        if not isinstance(credentials, dict):
            raise InvalidRequest("The credentials must be a JSON object.", param="credentials")
        caller = await web.operator_caller(container, session, request)
        await container.gateway_accounts.create(caller, form.get("provider", ""), credentials)
    except ValueError:
        body = await _gateways_body(container, session, token, "The credentials are not JSON.")
        return web.html("Gateway accounts", body, 400)
    except InvalidRequest as exc:
        body = await _gateways_body(container, session, token, exc.message)
        return web.html("Gateway accounts", body, 400)
    return web.redirect("/console/gateways")


@router.post("/gateways/{account_id}/remove", openapi_extra=action("gateway_accounts.write"))
async def remove_gateway(account_id: str, request: Request, container: ContainerDep) -> Response:
    try:
        _, session, token = await web.posted(request, container, action="gateway_accounts.write")
    except web.Refused as exc:
        return web.refusal(exc)
    if (ask := web.unless_stepped_up(container, session, token, "/console/gateways")) is not None:
        return ask
    try:
        caller = await web.operator_caller(container, session, request)
        await container.gateway_accounts.delete(caller, account_id[:40])
    except InvalidRequest as exc:
        body = await _gateways_body(container, session, token, exc.message)
        return web.html("Gateway accounts", body, 400)
    return web.redirect("/console/gateways")


@router.get("/exports", openapi_extra=action("reports.export"))
async def exports_page(request: Request, container: ContainerDep) -> Response:
    try:
        _, token = await web.allowed_session(request, container, "reports.export")
    except web.Refused as exc:
        return web.refusal(exc)
    names = [n.value for n in ReportName]
    return web.html("Exports", pages.exports(names, container.sessions.csrf_token(token)))


@router.post("/exports", openapi_extra=action("reports.export"))
async def export(request: Request, container: ContainerDep) -> Response:
    try:
        form, session, token = await web.posted(request, container, action="reports.export")
    except web.Refused as exc:
        return web.refusal(exc)
    if (ask := web.unless_stepped_up(container, session, token, "/console/exports")) is not None:
        return ask
    try:
        name = ReportName(form.get("report", ""))
    except ValueError:
        return web.html("Exports", pages.error("No such report."), 400)
    caller = await web.operator_caller(container, session, request)
    report = await container.reporting.report(
        name, ReportQuery(livemode=caller.livemode, merchant_id=caller.merchant_id), fresh=True
    )
    await container.audit.record_alone(
        container.audit.by_caller(caller, AuditTag.REPORT_EXPORT, resource=("report", name.value))
    )
    return Response(
        to_csv(name, report.rows),
        media_type="text/csv",
        headers=pages.headers() | {"Content-Disposition": f'attachment; filename="{name}.csv"'},
    )


@router.get("/payments", openapi_extra=action("payment_intents.read"))
async def payments_page(request: Request, container: ContainerDep) -> Response:
    try:
        session, token = await web.allowed_session(request, container, "payment_intents.read")
    except web.Refused as exc:
        return web.refusal(exc)
    return web.html("Payments", await _payments_body(container, session, token, request))


async def _payments_body(
    container: Container,
    session: Session,
    token: str,
    request: Request,
    message: str | None = None,
) -> str:
    caller = await container.authz.require(
        await web.operator_caller(container, session, request), "payment_intents.read"
    )
    masked = caller.decision is not None and caller.decision.mask
    recent, _ = await container.payments.list_payment_intents(caller, limit=20, starting_after=None)
    customers = await container.payments.customers_of(caller, recent)
    rows = []
    for pi in recent:
        customer = customers.get(pi.customer_id or "")
        email = customer.email if customer is not None else None
        rows.append(
            (
                pi.id,
                display_amount(pi.amount, pi.currency),
                pi.status.value,
                str(pi.amount_received - pi.amount_refunded),
                (mask_email(email) if masked else email) or "",
            )
        )
    threshold = await container.merchants.refund_step_up_amount(caller.merchant_id)
    csrf = container.sessions.csrf_token(token)
    return pages.payments(rows, threshold, csrf, owner=caller.role == "owner", message=message)


@router.post("/payments/threshold", openapi_extra=action("merchant.settings.write"))
async def set_threshold(request: Request, container: ContainerDep) -> Response:
    try:
        form, session, token = await web.posted(
            request, container, action="merchant.settings.write"
        )
    except web.Refused as exc:
        return web.refusal(exc)
    if (ask := web.unless_stepped_up(container, session, token, "/console/payments")) is not None:
        return ask
    operator = await container.operators.get(session.operator_id)
    try:
        await container.merchants.set_refund_step_up_amount(
            operator.merchant_id,
            _whole(form.get("amount", "")),
            actor=Actor(ActorType.USER, operator.id),
            origin=web.origin(request),
        )
    except InvalidRequest as exc:
        body = await _payments_body(container, session, token, request, exc.message)
        return web.html("Payments", body, 400)
    return web.redirect("/console/payments")


@router.post("/payments/{payment_intent}/refund", openapi_extra=action("refunds.create"))
async def refund(payment_intent: str, request: Request, container: ContainerDep) -> Response:
    """Who may refund, and how much without a recent second factor, is the policy's (the
    service asks it with the refund's amount); a refusal for want of a second factor asks
    for one and comes back."""
    try:
        form, session, token = await web.posted(request, container)
    except web.Refused as exc:
        return web.refusal(exc)
    try:
        amount = _whole(form.get("amount", ""))
        caller = await web.operator_caller(container, session, request)
        cmd = c.CreateRefund(payment_intent=payment_intent[:40], amount=amount)
        await container.payments.create_refund(caller, cmd, None)
    except PermissionDenied as exc:
        if exc.code == "second_factor_required" and (
            ask := web.unless_stepped_up(container, session, token, "/console/payments")
        ):
            return ask
        return web.html("Payments", pages.error(exc.message), 403)
    except StrongroomError as exc:
        body = await _payments_body(container, session, token, request, exc.message)
        return web.html("Payments", body, 400)
    return web.redirect("/console/payments")


def _whole(text: str) -> int:
    if not text.strip().isdigit():
        raise InvalidRequest("Enter a whole number of minor units.", param="amount")
    return int(text.strip())
