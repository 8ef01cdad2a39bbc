"""The operators' console, signing in: a password, then a second factor (a TOTP code, a recovery
code or a security key; TOTP is set up first for an operator who has none), then the console's
own pages, sessions, sign-out, password change and security keys. Not part of /v1.

A new session token is issued after the second factor and after a password change, and the old
one stops working. The cookie and the checks every request makes are in routes/_console.py.
"""

from __future__ import annotations

import json

from fastapi import APIRouter, Request
from fastapi.responses import Response

from strongroom.bootstrap import Container
from strongroom.domain.errors import (
    AuthenticationError,
    IllegalTransition,
    InvalidRequest,
    RateLimited,
)
from strongroom.entrypoints.api.deps import ContainerDep
from strongroom.entrypoints.api.pages import console as pages
from strongroom.entrypoints.api.pages import origin_of
from strongroom.entrypoints.api.routes import _console as web
from strongroom.service_layer.sessions import Session

router = APIRouter(prefix="/console", include_in_schema=False)


# --- signing in ----------------------------------------------------------------------------------
@router.get("/sign-in")
async def sign_in_page() -> Response:
    return web.html("Sign in", pages.sign_in())


@router.post("/sign-in")
async def sign_in(request: Request, container: ContainerDep) -> Response:
    try:
        form = await web.read_form(request, container)
        operator = await container.operators.sign_in(
            form.get("email", ""), form.get("password", ""), origin=web.origin(request)
        )
    except web.Refused as exc:
        return web.refusal(exc)
    except AuthenticationError as exc:
        return web.html("Sign in", pages.sign_in(exc.message), 401)
    except RateLimited as exc:
        response = web.html("Sign in", pages.sign_in(exc.message), 429)
        response.headers["Retry-After"] = str(exc.retry_after)
        return response
    issued = await container.sessions.start(operator.id, origin=web.origin(request))
    enrolled = await container.second_factors.enrolled(operator.id)
    return web.redirect("/console/second-factor" if enrolled else "/console/totp", issued.token)


@router.get("/second-factor")
async def second_factor_page(request: Request, container: ContainerDep) -> Response:
    try:
        session, token = await web.live_session(request, container, complete=False)
    except web.Refused as exc:
        return web.refusal(exc)
    keys = await container.webauthn.credential_count(session.operator_id) > 0
    body = pages.second_factor(container.sessions.csrf_token(token), keys=keys)
    return web.html("Second factor", body, script=keys)


@router.post("/second-factor")
async def second_factor(request: Request, container: ContainerDep) -> Response:
    try:
        form, session, token = await web.posted(request, container, complete=False)
        await container.second_factors.verify(
            session.operator_id, form.get("code", ""), origin=web.origin(request)
        )
    except web.Refused as exc:
        return web.refusal(exc)
    except AuthenticationError as exc:
        csrf = container.sessions.csrf_token(token)
        body = pages.second_factor(csrf, exc.message, web.next_path(form))
        return web.html("Second factor", body, 401)
    issued = await container.sessions.rotate(token, second_factor=True, origin=web.origin(request))
    return web.redirect(web.next_path(form) or "/console", issued.token)


@router.get("/totp")
async def totp_page(request: Request, container: ContainerDep) -> Response:
    try:
        session, token = await web.live_session(request, container, complete=False)
        enrolment = await container.second_factors.begin_totp(session.operator_id)
    except web.Refused as exc:
        return web.refusal(exc)
    except IllegalTransition:
        return web.redirect("/console" if session.complete else "/console/second-factor")
    csrf = container.sessions.csrf_token(token)
    body = pages.totp_enrolment(csrf, enrolment.secret, enrolment.uri)
    return web.html("Set up your second factor", body)


@router.post("/totp")
async def totp(request: Request, container: ContainerDep) -> Response:
    try:
        form, session, token = await web.posted(request, container, complete=False)
        codes = await container.second_factors.confirm_totp(
            session.operator_id, form.get("code", ""), origin=web.origin(request)
        )
    except web.Refused as exc:
        return web.refusal(exc)
    except (AuthenticationError, IllegalTransition) as exc:
        message = exc.message if isinstance(exc, AuthenticationError) else "Start again."
        return web.html("Set up your second factor", pages.error(message), 400)
    issued = await container.sessions.rotate(token, second_factor=True, origin=web.origin(request))
    response = web.html("Recovery codes", pages.recovery_codes(codes))
    web.set_cookie(response, issued.token)
    return response


# --- the console ---------------------------------------------------------------------------------
@router.get("")
async def home(request: Request, container: ContainerDep) -> Response:
    try:
        session, token = await web.live_session(request, container)
    except web.Refused as exc:
        return web.refusal(exc)
    operator = await container.operators.get(session.operator_id)
    sessions = await container.sessions.list(operator.id)
    body = pages.home(
        operator.email,
        operator.role.value,
        sessions,
        session.id,
        container.sessions.csrf_token(token),
        container.clock.now(),
    )
    return web.html("Console", body)


@router.post("/sessions/{session_id}/revoke")
async def revoke(session_id: str, request: Request, container: ContainerDep) -> Response:
    try:
        _, session, _ = await web.posted(request, container)
        await container.sessions.revoke(
            session.operator_id, session_id[:40], origin=web.origin(request)
        )
    except web.Refused as exc:
        return web.refusal(exc)
    except InvalidRequest:
        return web.html("Sessions", pages.error("No such session."), 404)
    return web.redirect("/console")


@router.post("/sign-out")
async def sign_out(request: Request, container: ContainerDep) -> Response:
    try:
        _, session, _ = await web.posted(request, container, complete=False)
    except web.Refused as exc:
        return web.refusal(exc)
    await container.sessions.revoke(session.operator_id, session.id, origin=web.origin(request))
    response = web.redirect("/console/sign-in")
    web.clear_cookie(response)
    return response


@router.get("/password")
async def password_page(request: Request, container: ContainerDep) -> Response:
    try:
        _, token = await web.live_session(request, container)
    except web.Refused as exc:
        return web.refusal(exc)
    return web.html("Change password", pages.password(container.sessions.csrf_token(token)))


@router.post("/password")
async def change_password(request: Request, container: ContainerDep) -> Response:
    try:
        form, session, token = await web.posted(request, container)
        await container.operators.change_password(
            session.operator_id,
            form.get("current", ""),
            form.get("new", ""),
            origin=web.origin(request),
        )
    except web.Refused as exc:
        return web.refusal(exc)
    except (AuthenticationError, InvalidRequest) as exc:
        csrf = container.sessions.csrf_token(token)
        return web.html("Change password", pages.password(csrf, exc.message), 400)
    issued = await container.sessions.restart(session, origin=web.origin(request))
    return web.redirect("/console", issued.token)


# --- security keys (WebAuthn), driven by the page's script with JSON ---------------------------
async def _json_request(
    request: Request, container: Container, *, complete: bool
) -> tuple[Session, str, str]:
    """The session, its token and the raw JSON body of a script's POST: same Origin and the
    CSRF token in X-CSRF-Token, or 403."""
    if request.headers.get("origin") != origin_of(container.settings.public_url):
        raise web.Refused(403, "Refused", "")
    session, token = await web.live_session(request, container, complete=complete)
    if not container.sessions.csrf_ok(token, request.headers.get("x-csrf-token")):
        raise web.Refused(403, "Refused", "")
    body = (await request.body()).decode("utf-8", errors="replace")
    return session, token, body


def _json(data: str, status: int = 200) -> Response:
    return Response(
        data, status_code=status, media_type="application/json", headers=pages.headers()
    )


def _json_refusal(exc: web.Refused) -> Response:
    message = "Refused." if exc.status == 403 else "Sign in again."
    return _json(json.dumps({"error": {"message": message}}), exc.status)


@router.get("/security-keys")
async def security_keys_page(request: Request, container: ContainerDep) -> Response:
    try:
        session, token = await web.live_session(request, container)
    except web.Refused as exc:
        return web.refusal(exc)
    count = await container.webauthn.credential_count(session.operator_id)
    body = pages.security_keys(count, container.sessions.csrf_token(token))
    return web.html("Security keys", body, script=True)


@router.post("/webauthn/register/options")
async def register_options(request: Request, container: ContainerDep) -> Response:
    try:
        session, _, _ = await _json_request(request, container, complete=True)
    except web.Refused as exc:
        return _json_refusal(exc)
    if not session.stepped_up(container.clock.now()):
        message = "Sign in again with your second factor to add a key."
        return _json(json.dumps({"error": {"message": message}}), 401)
    operator = await container.operators.get(session.operator_id)
    return _json(await container.webauthn.registration_options(session.id, operator))


@router.post("/webauthn/register")
async def register(request: Request, container: ContainerDep) -> Response:
    try:
        session, _, body = await _json_request(request, container, complete=True)
        operator = await container.operators.get(session.operator_id)
        await container.webauthn.register(session.id, operator, body, origin=web.origin(request))
    except web.Refused as exc:
        return _json_refusal(exc)
    except AuthenticationError as exc:
        return _json(json.dumps({"error": {"message": exc.message}}), 400)
    return _json(
        json.dumps({"message": "Security key added.", "redirect": "/console/security-keys"})
    )


@router.post("/webauthn/authenticate/options")
async def authenticate_options(request: Request, container: ContainerDep) -> Response:
    try:
        session, _, _ = await _json_request(request, container, complete=False)
    except web.Refused as exc:
        return _json_refusal(exc)
    operator = await container.operators.get(session.operator_id)
    return _json(await container.webauthn.authentication_options(session.id, operator))


@router.post("/webauthn/authenticate")
async def authenticate(request: Request, container: ContainerDep) -> Response:
    try:
        session, token, body = await _json_request(request, container, complete=False)
        operator = await container.operators.get(session.operator_id)
        await container.webauthn.authenticate(
            session.id, operator, body, origin=web.origin(request)
        )
    except web.Refused as exc:
        return _json_refusal(exc)
    except AuthenticationError as exc:
        return _json(json.dumps({"error": {"message": exc.message}}), 401)
    issued = await container.sessions.rotate(token, second_factor=True, origin=web.origin(request))
    response = _json(json.dumps({"message": "Signed in.", "redirect": "/console"}))
    web.set_cookie(response, issued.token)
    return response
