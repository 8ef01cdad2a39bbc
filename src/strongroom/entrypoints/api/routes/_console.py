"""What the console's routes share: the session cookie, refusals as HTML pages, and the checks
every request makes (a live session, the console's Origin, the CSRF token, step-up).

The session lives in one cookie, `__Host-strongroom_session`: Secure, HttpOnly,
SameSite=Strict, Path=/ and no Domain (the `__Host-` prefix makes browsers insist on exactly
that). Every POST must come from the console's own origin (the Origin header), and every POST
made with a session must carry the session's CSRF token; otherwise 403.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qs

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from strongroom.bootstrap import Container
from strongroom.domain.audit import Origin
from strongroom.domain.errors import AuthenticationError, PermissionDenied
from strongroom.entrypoints.api.errors import request_id_of
from strongroom.entrypoints.api.pages import console as pages
from strongroom.entrypoints.api.pages import origin_of
from strongroom.service_layer.commands import Caller
from strongroom.service_layer.sessions import SESSION_EXPIRED, Session

COOKIE = "__Host-strongroom_session"
MAX_FIELD = 4096


class Refused(Exception):
    """A request the console answers with a page of its own (401, 403), not the page asked."""

    def __init__(self, status: int, title: str, body: str, *, ended: bool = False) -> None:
        super().__init__(title)
        self.status, self.title, self.body = status, title, body
        self.ended = ended  # the session is gone: the browser may forget its cookie


def html(title: str, body: str, status: int = 200, *, script: bool = False) -> HTMLResponse:
    return HTMLResponse(
        pages.page(title, body, script=script),
        status_code=status,
        headers=pages.headers(script=script),
    )


def refusal(exc: Refused) -> HTMLResponse:
    response = html(exc.title, exc.body, exc.status)
    if exc.ended:
        clear_cookie(response)
    return response


def redirect(path: str, token: str | None = None) -> Response:
    response = RedirectResponse(path, status_code=303, headers=pages.headers())
    if token is not None:
        set_cookie(response, token)
    return response


def set_cookie(response: Response, token: str) -> None:
    response.set_cookie(COOKIE, token, path="/", secure=True, httponly=True, samesite="strict")


def clear_cookie(response: Response) -> None:
    response.delete_cookie(COOKIE, path="/", secure=True, httponly=True, samesite="strict")


def origin(request: Request) -> Origin:
    return Origin(
        ip=request.client.host if request.client else None, request_id=request_id_of(request)
    )


async def read_form(request: Request, container: Container) -> dict[str, str]:
    """The POST's fields, once its Origin is the console's own."""
    if request.headers.get("origin") != origin_of(container.settings.public_url):
        raise Refused(403, "Refused", pages.error("This form must be sent from the console."))
    try:
        parsed = parse_qs((await request.body()).decode("utf-8"), max_num_fields=16)
    except (UnicodeDecodeError, ValueError):
        parsed = {}
    return {name: values[0][:MAX_FIELD] for name, values in parsed.items() if values}


async def live_session(
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
        raise Refused(401, "Signed out", body, ended=True) from None
    if complete and not session.complete:
        body = pages.error("Enter your second factor first.") + (
            '<p><a href="/console/second-factor">Continue</a></p>'
        )
        raise Refused(401, "Second factor needed", body)
    return session, token


async def posted(
    request: Request, container: Container, *, complete: bool = True, action: str | None = None
) -> tuple[dict[str, str], Session, str]:
    """A form POSTed with a session: its fields, the session and its token, once the Origin,
    the session (complete, and allowed `action` by the policy, when named) and the CSRF token
    all check out."""
    form = await read_form(request, container)
    if action is not None:
        session, token = await allowed_session(request, container, action)
    else:
        session, token = await live_session(request, container, complete=complete)
    if not container.sessions.csrf_ok(token, form.get("csrf_token")):
        raise Refused(403, "Refused", pages.error("The form has expired; reload the page."))
    return form, session, token


def unless_stepped_up(
    container: Container, session: Session, token: str, then: str
) -> Response | None:
    """The second-factor page (then back to `then`) when the session's second factor is more
    than 5 minutes old: what sensitive acts require."""
    if session.stepped_up(container.clock.now()):
        return None
    csrf = container.sessions.csrf_token(token)
    message = "Confirm it is you: enter your second factor again."
    return html("Second factor", pages.second_factor(csrf, message, then), 401)


async def operator_caller(
    container: Container, session: Session, request: Request, *, livemode: bool = False
) -> Caller:
    """The session's operator as the policy and the audit log see them."""
    operator = await container.operators.get(session.operator_id)
    return Caller(
        merchant_id=operator.merchant_id,
        livemode=livemode,
        origin=origin(request),
        operator_id=operator.id,
        role=operator.role.value,
        second_factor_at=session.second_factor_at,
    )


async def allowed_session(
    request: Request, container: Container, action: str
) -> tuple[Session, str]:
    """The request's live session, once the policy allows its operator `action` (else 403,
    audited, with the policy's reason)."""
    session, token = await live_session(request, container)
    caller = await operator_caller(container, session, request)
    try:
        await container.authz.require(caller, action)
    except PermissionDenied as exc:
        raise Refused(403, "Not allowed", pages.error(exc.message)) from None
    return session, token


def next_path(form: dict[str, str]) -> str | None:
    """Where to go after a step-up: only one of the console's own pages."""
    then = form.get("next", "")
    return then if re.fullmatch(r"/console(/[a-z-]+)*", then) else None
