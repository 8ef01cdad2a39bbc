"""The operators' console: sign in with a password, then a second factor (enrolling TOTP first
if the operator has none), then the console's own pages. Not part of /v1.

The session lives in one cookie, `__Host-strongroom_session`: Secure, HttpOnly,
SameSite=Strict, Path=/ and no Domain (the `__Host-` prefix makes browsers insist on exactly
that). A new session token is issued after the second factor and after a password change, and
the old one stops working. Every POST must come from the console's own origin (the Origin
header), and every POST made with a session must carry the session's CSRF token; otherwise 403.
"""

from __future__ import annotations

import json
import re
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from strongroom.bootstrap import Container
from strongroom.domain.audit import Actor, ActorType, Origin
from strongroom.domain.errors import (
    AuthenticationError,
    IllegalTransition,
    InvalidRequest,
    PermissionDenied,
    RateLimited,
)
from strongroom.entrypoints.api.deps import ContainerDep
from strongroom.entrypoints.api.errors import request_id_of
from strongroom.entrypoints.api.pages import console as pages
from strongroom.entrypoints.api.pages import origin_of
from strongroom.service_layer.merchants import KeyKind
from strongroom.service_layer.sessions import SESSION_EXPIRED, Session

router = APIRouter(prefix="/console", include_in_schema=False)
COOKIE = "__Host-strongroom_session"
MAX_FIELD = 4096


class _Refused(Exception):
    def __init__(self, status: int, title: str, body: str, *, ended: bool = False) -> None:
        super().__init__(title)
        self.status, self.title, self.body = status, title, body
        self.ended = ended  # the session is gone: the browser may forget its cookie


def _html(title: str, body: str, status: int = 200, *, script: bool = False) -> HTMLResponse:
    return HTMLResponse(
        pages.page(title, body, script=script),
        status_code=status,
        headers=pages.headers(script=script),
    )


def _refusal(exc: _Refused) -> HTMLResponse:
    response = _html(exc.title, exc.body, exc.status)
    if exc.ended:
        _clear(response)
    return response


def _redirect(path: str, token: str | None = None) -> Response:
    response = RedirectResponse(path, status_code=303, headers=pages.headers())
    if token is not None:
        _set(response, token)
    return response


def _set(response: Response, token: str) -> None:
    response.set_cookie(COOKIE, token, path="/", secure=True, httponly=True, samesite="strict")


def _clear(response: Response) -> None:
    response.delete_cookie(COOKIE, path="/", secure=True, httponly=True, samesite="strict")


def _origin(request: Request) -> Origin:
    return Origin(
        ip=request.client.host if request.client else None, request_id=request_id_of(request)
    )


async def _form(request: Request, container: Container) -> dict[str, str]:
    """The POST's fields, once its Origin is the console's own."""
    if request.headers.get("origin") != origin_of(container.settings.public_url):
        raise _Refused(403, "Refused", pages.error("This form must be sent from the console."))
    try:
        parsed = parse_qs((await request.body()).decode("utf-8"), max_num_fields=16)
    except (UnicodeDecodeError, ValueError):
        parsed = {}
    return {name: values[0][:MAX_FIELD] for name, values in parsed.items() if values}


async def _session(
    request: Request, container: Container, *, complete: bool = True
) -> tuple[Session, str]:
    """The request's live session and its token: 401 when there is none; a session that has
    not passed its second factor reaches only the second-factor pages."""
    token = request.cookies.get(COOKIE)
    try:
        if not token:
            raise AuthenticationError(SESSION_EXPIRED)
        session = await container.sessions.authenticate(token)
    except AuthenticationError as exc:
        body = pages.signed_out_or_expired(exc.message)
        raise _Refused(401, "Signed out", body, ended=True) from None
    if complete and not session.complete:
        body = pages.error("Enter your second factor first.") + (
            '<p><a href="/console/second-factor">Continue</a></p>'
        )
        raise _Refused(401, "Second factor needed", body)
    return session, token


async def _posted(
    request: Request, container: Container, *, complete: bool = True, owner: bool = False
) -> tuple[dict[str, str], Session, str]:
    """A form POSTed with a session: its fields, the session and its token, once the Origin,
    the session (complete, and an owner's, when asked) and the CSRF token all check out."""
    form = await _form(request, container)
    if owner:
        session, token = await _owner(request, container)
    else:
        session, token = await _session(request, container, complete=complete)
    if not container.sessions.csrf_ok(token, form.get("csrf_token")):
        raise _Refused(403, "Refused", pages.error("The form has expired; reload the page."))
    return form, session, token


def _unless_stepped_up(
    container: Container, session: Session, token: str, then: str
) -> Response | None:
    """The second-factor page (then back to `then`) when the session's second factor is more
    than 5 minutes old: what sensitive acts require."""
    if session.stepped_up(container.clock.now()):
        return None
    csrf = container.sessions.csrf_token(token)
    message = "Confirm it is you: enter your second factor again."
    return _html("Second factor", pages.second_factor(csrf, message, then), 401)


# --- signing in ----------------------------------------------------------------------------------
@router.get("/sign-in")
async def sign_in_page() -> Response:
    return _html("Sign in", pages.sign_in())


@router.post("/sign-in")
async def sign_in(request: Request, container: ContainerDep) -> Response:
    try:
        form = await _form(request, container)
        operator = await container.operators.sign_in(
            form.get("email", ""), form.get("password", ""), origin=_origin(request)
        )
    except _Refused as exc:
        return _refusal(exc)
    except AuthenticationError as exc:
        return _html("Sign in", pages.sign_in(exc.message), 401)
    except RateLimited as exc:
        response = _html("Sign in", pages.sign_in(exc.message), 429)
        response.headers["Retry-After"] = str(exc.retry_after)
        return response
    issued = await container.sessions.start(operator.id, origin=_origin(request))
    enrolled = await container.second_factors.enrolled(operator.id)
    return _redirect("/console/second-factor" if enrolled else "/console/totp", issued.token)


@router.get("/second-factor")
async def second_factor_page(request: Request, container: ContainerDep) -> Response:
    try:
        session, token = await _session(request, container, complete=False)
    except _Refused as exc:
        return _refusal(exc)
    keys = await container.webauthn.credential_count(session.operator_id) > 0
    body = pages.second_factor(container.sessions.csrf_token(token), keys=keys)
    return _html("Second factor", body, script=keys)


@router.post("/second-factor")
async def second_factor(request: Request, container: ContainerDep) -> Response:
    try:
        form, session, token = await _posted(request, container, complete=False)
        await container.second_factors.verify(
            session.operator_id, form.get("code", ""), origin=_origin(request)
        )
    except _Refused as exc:
        return _refusal(exc)
    except AuthenticationError as exc:
        csrf = container.sessions.csrf_token(token)
        body = pages.second_factor(csrf, exc.message, _next(form))
        return _html("Second factor", body, 401)
    issued = await container.sessions.rotate(token, second_factor=True, origin=_origin(request))
    return _redirect(_next(form) or "/console", issued.token)


def _next(form: dict[str, str]) -> str | None:
    """Where to go after a step-up: only one of the console's own pages."""
    then = form.get("next", "")
    return then if re.fullmatch(r"/console(/[a-z-]+)*", then) else None


@router.get("/totp")
async def totp_page(request: Request, container: ContainerDep) -> Response:
    try:
        session, token = await _session(request, container, complete=False)
        enrolment = await container.second_factors.begin_totp(session.operator_id)
    except _Refused as exc:
        return _refusal(exc)
    except IllegalTransition:
        return _redirect("/console" if session.complete else "/console/second-factor")
    csrf = container.sessions.csrf_token(token)
    body = pages.totp_enrolment(csrf, enrolment.secret, enrolment.uri)
    return _html("Set up your second factor", body)


@router.post("/totp")
async def totp(request: Request, container: ContainerDep) -> Response:
    try:
        form, session, token = await _posted(request, container, complete=False)
        codes = await container.second_factors.confirm_totp(
            session.operator_id, form.get("code", ""), origin=_origin(request)
        )
    except _Refused as exc:
        return _refusal(exc)
    except (AuthenticationError, IllegalTransition) as exc:
        message = exc.message if isinstance(exc, AuthenticationError) else "Start again."
        return _html("Set up your second factor", pages.error(message), 400)
    issued = await container.sessions.rotate(token, second_factor=True, origin=_origin(request))
    response = _html("Recovery codes", pages.recovery_codes(codes))
    _set(response, issued.token)
    return response


# --- the console ---------------------------------------------------------------------------------
@router.get("")
async def home(request: Request, container: ContainerDep) -> Response:
    try:
        session, token = await _session(request, container)
    except _Refused as exc:
        return _refusal(exc)
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
    return _html("Console", body)


@router.post("/sessions/{session_id}/revoke")
async def revoke(session_id: str, request: Request, container: ContainerDep) -> Response:
    try:
        _, session, _ = await _posted(request, container)
        await container.sessions.revoke(
            session.operator_id, session_id[:40], origin=_origin(request)
        )
    except _Refused as exc:
        return _refusal(exc)
    except InvalidRequest:
        return _html("Sessions", pages.error("No such session."), 404)
    return _redirect("/console")


@router.post("/sign-out")
async def sign_out(request: Request, container: ContainerDep) -> Response:
    try:
        _, session, _ = await _posted(request, container, complete=False)
    except _Refused as exc:
        return _refusal(exc)
    await container.sessions.revoke(session.operator_id, session.id, origin=_origin(request))
    response = _redirect("/console/sign-in")
    _clear(response)
    return response


@router.get("/password")
async def password_page(request: Request, container: ContainerDep) -> Response:
    try:
        _, token = await _session(request, container)
    except _Refused as exc:
        return _refusal(exc)
    return _html("Change password", pages.password(container.sessions.csrf_token(token)))


@router.post("/password")
async def change_password(request: Request, container: ContainerDep) -> Response:
    try:
        form, session, token = await _posted(request, container)
        await container.operators.change_password(
            session.operator_id,
            form.get("current", ""),
            form.get("new", ""),
            origin=_origin(request),
        )
    except _Refused as exc:
        return _refusal(exc)
    except (AuthenticationError, InvalidRequest) as exc:
        csrf = container.sessions.csrf_token(token)
        return _html("Change password", pages.password(csrf, exc.message), 400)
    issued = await container.sessions.restart(session.operator_id, origin=_origin(request))
    return _redirect("/console", issued.token)


# --- invitations and the owner's operators page ----------------------------------------------
@router.get("/invitations/{token}")
async def invitation_page(token: str, container: ContainerDep) -> Response:
    try:
        invitation = await container.invitations.pending(token[:100])
    except InvalidRequest as exc:
        return _html("Invitation", pages.error(exc.message), 404)
    body = pages.accept_invitation(invitation.email, invitation.role.value)
    return _html("Invitation", body)


@router.post("/invitations/{token}")
async def accept_invitation(token: str, request: Request, container: ContainerDep) -> Response:
    try:
        form = await _form(request, container)
        await container.invitations.accept(
            token[:100], form.get("password", ""), origin=_origin(request)
        )
    except _Refused as exc:
        return _refusal(exc)
    except InvalidRequest as exc:
        if exc.code == "invitation_invalid":
            return _html("Invitation", pages.error(exc.message), 404)
        invitation = await container.invitations.pending(token[:100])
        body = pages.accept_invitation(invitation.email, invitation.role.value, exc.message)
        return _html("Invitation", body, 400)
    return _redirect("/console/sign-in")


async def _owner(request: Request, container: Container) -> tuple[Session, str]:
    session, token = await _session(request, container)
    operator = await container.operators.get(session.operator_id)
    if operator.role.value != "owner":
        raise _Refused(403, "Operators", pages.error("Only an owner manages operators."))
    return session, token


async def _operators_page(
    container: Container, session: Session, token: str, message: str | None = None
) -> str:
    me = await container.operators.get(session.operator_id)
    everyone = await container.operators.list(me.merchant_id)
    csrf = container.sessions.csrf_token(token)
    return pages.operators(everyone, me.id, csrf, container.clock.now(), message)


@router.get("/operators")
async def operators_page(request: Request, container: ContainerDep) -> Response:
    try:
        session, token = await _owner(request, container)
    except _Refused as exc:
        return _refusal(exc)
    return _html("Operators", await _operators_page(container, session, token))


@router.post("/operators/invite")
async def invite(request: Request, container: ContainerDep) -> Response:
    try:
        form, session, token = await _posted(request, container, owner=True)
        await container.invitations.invite(
            session.operator_id,
            form.get("email", ""),
            form.get("role", ""),
            origin=_origin(request),
        )
    except _Refused as exc:
        return _refusal(exc)
    except InvalidRequest as exc:
        return _html(
            "Operators", await _operators_page(container, session, token, exc.message), 400
        )
    return _redirect("/console/operators")


@router.post("/operators/{operator_id}/{action}")
async def manage(
    operator_id: str, action: str, request: Request, container: ContainerDep
) -> Response:
    try:
        form, session, token = await _posted(request, container, owner=True)
        target = operator_id[:40]
        if action == "unlock":
            await container.operators.unlock(session.operator_id, target, origin=_origin(request))
        elif action == "role":
            await container.operators.change_role(
                session.operator_id, target, form.get("role", ""), origin=_origin(request)
            )
        else:
            return _html("Operators", pages.error("No such action."), 404)
    except _Refused as exc:
        return _refusal(exc)
    except (InvalidRequest, PermissionDenied) as exc:
        page = await _operators_page(container, session, token, exc.message)
        return _html("Operators", page, 400)
    return _redirect("/console/operators")


# --- tokens for apps (a sensitive act: needs a second factor within 5 minutes) ----------------
@router.get("/app-tokens")
async def app_tokens_page(request: Request, container: ContainerDep) -> Response:
    try:
        _, token = await _session(request, container)
    except _Refused as exc:
        return _refusal(exc)
    return _html("Tokens for apps", pages.app_tokens(container.sessions.csrf_token(token)))


@router.post("/app-tokens")
async def create_app_tokens(request: Request, container: ContainerDep) -> Response:
    try:
        _, session, token = await _posted(request, container)
    except _Refused as exc:
        return _refusal(exc)
    if (ask := _unless_stepped_up(container, session, token, "/console/app-tokens")) is not None:
        return ask
    pair = await container.app_tokens.grant(session.operator_id, origin=_origin(request))
    return _html("Tokens for apps", pages.app_tokens_made(pair.access_token, pair.refresh_token))


# --- security keys (WebAuthn), driven by the page's script with JSON ---------------------------
async def _json_request(
    request: Request, container: Container, *, complete: bool
) -> tuple[Session, str, str]:
    """The session, its token and the raw JSON body of a script's POST: same Origin and the
    CSRF token in X-CSRF-Token, or 403."""
    if request.headers.get("origin") != origin_of(container.settings.public_url):
        raise _Refused(403, "Refused", "")
    session, token = await _session(request, container, complete=complete)
    if not container.sessions.csrf_ok(token, request.headers.get("x-csrf-token")):
        raise _Refused(403, "Refused", "")
    body = (await request.body()).decode("utf-8", errors="replace")
    return session, token, body


def _json(data: str, status: int = 200) -> Response:
    return Response(
        data, status_code=status, media_type="application/json", headers=pages.headers()
    )


def _json_refusal(exc: _Refused) -> Response:
    message = "Refused." if exc.status == 403 else "Sign in again."
    return _json(json.dumps({"error": {"message": message}}), exc.status)


@router.get("/security-keys")
async def security_keys_page(request: Request, container: ContainerDep) -> Response:
    try:
        session, token = await _session(request, container)
    except _Refused as exc:
        return _refusal(exc)
    count = await container.webauthn.credential_count(session.operator_id)
    body = pages.security_keys(count, container.sessions.csrf_token(token))
    return _html("Security keys", body, script=True)


@router.post("/webauthn/register/options")
async def register_options(request: Request, container: ContainerDep) -> Response:
    try:
        session, _, _ = await _json_request(request, container, complete=True)
    except _Refused as exc:
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
        await container.webauthn.register(session.id, operator, body, origin=_origin(request))
    except _Refused as exc:
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
    except _Refused as exc:
        return _json_refusal(exc)
    operator = await container.operators.get(session.operator_id)
    return _json(await container.webauthn.authentication_options(session.id, operator))


@router.post("/webauthn/authenticate")
async def authenticate(request: Request, container: ContainerDep) -> Response:
    try:
        session, token, body = await _json_request(request, container, complete=False)
        operator = await container.operators.get(session.operator_id)
        await container.webauthn.authenticate(session.id, operator, body, origin=_origin(request))
    except _Refused as exc:
        return _json_refusal(exc)
    except AuthenticationError as exc:
        return _json(json.dumps({"error": {"message": exc.message}}), 401)
    issued = await container.sessions.rotate(token, second_factor=True, origin=_origin(request))
    response = _json(json.dumps({"message": "Signed in.", "redirect": "/console"}))
    _set(response, issued.token)
    return response


# --- API keys (owners only; a sensitive act: needs a second factor within 5 minutes) ---------
@router.get("/api-keys")
async def api_keys_page(request: Request, container: ContainerDep) -> Response:
    try:
        _, token = await _owner(request, container)
    except _Refused as exc:
        return _refusal(exc)
    return _html("API keys", pages.api_keys(container.sessions.csrf_token(token)))


@router.post("/api-keys")
async def create_api_key(request: Request, container: ContainerDep) -> Response:
    try:
        form, session, token = await _posted(request, container, owner=True)
    except _Refused as exc:
        return _refusal(exc)
    if (ask := _unless_stepped_up(container, session, token, "/console/api-keys")) is not None:
        return ask
    kind, mode = form.get("kind"), form.get("mode")
    if kind not in ("secret", "publishable") or mode not in ("test", "live"):
        csrf = container.sessions.csrf_token(token)
        return _html("API keys", pages.api_keys(csrf, "Choose a kind and a mode."), 400)
    operator = await container.operators.get(session.operator_id)
    issued = await container.merchants.create_key(
        operator.merchant_id,
        KeyKind.SECRET if kind == "secret" else KeyKind.PUBLISHABLE,
        livemode=mode == "live",
        actor=Actor(ActorType.USER, operator.id),
        origin=_origin(request),
    )
    return _html("API keys", pages.api_key_made(issued.id, issued.secret))
