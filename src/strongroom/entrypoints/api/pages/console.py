"""The operators' console pages: server-rendered HTML forms. The only script is WEBAUTHN_SCRIPT,
on the pages that use a security key, allowed by its hash; every other page's
Content-Security-Policy allows no script at all. The one stylesheet is inline and allowed by its
hash. Every form that changes state carries the session's CSRF token in a hidden field (the
script sends it as X-CSRF-Token)."""

from __future__ import annotations

import html
import io
from collections.abc import Sequence
from datetime import datetime

import segno

from strongroom.entrypoints.api.pages import csp_hash
from strongroom.service_layer.operators import Operator, Role
from strongroom.service_layer.sessions import Session

__all__ = ["STYLE", "headers", "page"]

STYLE = """
body { font: 16px system-ui, sans-serif; color: #1a1a1a; background: #f4f5f7; margin: 0; }
main { max-width: 480px; margin: 48px auto; padding: 24px; background: #fff;
  border-radius: 8px; box-shadow: 0 1px 4px rgba(0, 0, 0, 0.12); }
h1 { font-size: 20px; margin: 0 0 16px; }
form { display: grid; gap: 12px; margin: 0 0 16px; }
label { display: grid; gap: 4px; font-size: 14px; color: #444; }
input { font: inherit; padding: 8px; border: 1px solid #bbb; border-radius: 4px; }
button { padding: 10px; font: inherit; color: #fff; background: #4a64d8; border: 0;
  border-radius: 4px; cursor: pointer; }
.error { color: #b3261e; }
.codes { font-family: ui-monospace, monospace; font-size: 18px; }
table { width: 100%; border-collapse: collapse; font-size: 14px; }
td, th { text-align: left; padding: 4px; border-bottom: 1px solid #eee; }
"""

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · Strongroom</title><style>{style}</style></head>
<body><main><h1>{title}</h1>{body}</main></body></html>"""


# navigator.credentials with the JSON forms of the options and the credential (Chrome 129+,
# Firefox 119+, Safari 18+); the server's `webauthn` library reads that JSON as it is.
WEBAUTHN_SCRIPT = """
(function () {
  "use strict";
  var box = document.getElementById("webauthn");
  var button = document.getElementById("webauthn-start");
  var status = document.getElementById("webauthn-status");
  var mode = box.dataset.mode;
  var base = "/console/webauthn/" + mode;

  function post(path, body) {
    return fetch(path, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": box.dataset.csrf },
      body: JSON.stringify(body || {}),
    }).then(function (response) {
      return response.json().then(function (data) {
        if (!response.ok) {
          throw new Error((data.error && data.error.message) || "Refused.");
        }
        return data;
      });
    });
  }

  button.addEventListener("click", function () {
    status.textContent = "Waiting for your security key…";
    post(base + "/options")
      .then(function (options) {
        if (mode === "register") {
          var create = PublicKeyCredential.parseCreationOptionsFromJSON(options);
          return navigator.credentials.create({ publicKey: create });
        }
        var get = PublicKeyCredential.parseRequestOptionsFromJSON(options);
        return navigator.credentials.get({ publicKey: get });
      })
      .then(function (credential) {
        return post(base, credential.toJSON());
      })
      .then(function (answer) {
        status.textContent = answer.message || "Done.";
        if (answer.redirect) {
          window.location.assign(answer.redirect);
        }
      })
      .catch(function (error) {
        status.textContent = error.message || "The security key did not answer.";
      });
  });
})();
"""


def page(title: str, body: str, *, script: bool = False) -> str:
    """A whole page; `body` is markup the caller built with `esc`."""
    tail = f"<script>{WEBAUTHN_SCRIPT}</script>" if script else ""
    return _PAGE.format(title=esc(title), style=STYLE, body=body + tail)


def headers(*, script: bool = False) -> dict[str, str]:
    scripts = f"script-src {csp_hash(WEBAUTHN_SCRIPT)}; connect-src 'self'; " if script else ""
    return {
        "Content-Security-Policy": (
            f"default-src 'none'; {scripts}style-src {csp_hash(STYLE)}; form-action 'self'; "
            "frame-ancestors 'none'; base-uri 'none'"
        ),
        "Cache-Control": "no-store",
        # Not no-referrer: under it a browser sends `Origin: null` with the forms' POSTs, and
        # the console checks that header. Nothing leaves for another site either way.
        "Referrer-Policy": "same-origin",
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
    }


def esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def error(message: str | None) -> str:
    return f'<p class="error" role="alert">{esc(message)}</p>' if message else ""


def _csrf(token: str) -> str:
    return f'<input type="hidden" name="csrf_token" value="{esc(token)}">'


def sign_in(message: str | None = None) -> str:
    return error(message) + (
        '<form method="post" action="/console/sign-in">'
        '<label>Email <input name="email" type="email" autocomplete="username" required></label>'
        '<label>Password <input name="password" type="password" '
        'autocomplete="current-password" required></label>'
        '<button type="submit">Sign in</button></form>'
    )


def webauthn_box(mode: str, csrf: str, label: str) -> str:
    """The button WEBAUTHN_SCRIPT drives: mode `register` or `authenticate`."""
    return (
        f'<div id="webauthn" data-mode="{esc(mode)}" data-csrf="{esc(csrf)}">'
        f'<button type="button" id="webauthn-start">{esc(label)}</button>'
        '<p id="webauthn-status" role="status" aria-live="polite"></p></div>'
    )


def second_factor(
    csrf: str, message: str | None = None, then: str | None = None, *, keys: bool = False
) -> str:
    after = f'<input type="hidden" name="next" value="{esc(then)}">' if then else ""
    key = webauthn_box("authenticate", csrf, "Use a security key") if keys else ""
    return (
        error(message)
        + key
        + (
            '<form method="post" action="/console/second-factor">'
            f"{_csrf(csrf)}{after}"
            '<label>Code from your authenticator app, or a recovery code <input name="code" '
            'autocomplete="one-time-code" required></label>'
            '<button type="submit">Continue</button></form>'
        )
    )


def totp_enrolment(csrf: str, secret: str, uri: str, message: str | None = None) -> str:
    buffer = io.BytesIO()
    segno.make(uri, error="m").save(buffer, kind="svg", scale=4, xmldecl=False, nl=False)
    return error(message) + (
        "<p>Every operator signs in with a second factor. Scan this code with an "
        "authenticator app, or type the key in, then enter the code it shows.</p>"
        f'<div id="qr">{buffer.getvalue().decode()}</div>'
        f'<p>Key: <code id="totp-secret">{esc(secret)}</code></p>'
        '<form method="post" action="/console/totp">'
        f"{_csrf(csrf)}"
        '<label>Code <input name="code" autocomplete="one-time-code" required></label>'
        '<button type="submit">Turn on</button></form>'
    )


def recovery_codes(codes: Sequence[str]) -> str:
    items = "".join(f"<li>{esc(c)}</li>" for c in codes)
    return (
        "<p>Keep these recovery codes somewhere safe. Each works once, in place of a code "
        "from your app; they are not shown again.</p>"
        f'<ul class="codes" id="recovery-codes">{items}</ul>'
        '<p><a href="/console">Continue to the console</a></p>'
    )


def home(
    email: str, role: str, sessions: Sequence[Session], current: str, csrf: str, now: datetime
) -> str:
    rows = "".join(
        f"<tr><td>{'this one' if s.id == current else esc(s.ip or 'unknown')}</td>"
        f"<td>{esc(_ago(now, s.created_at))}</td><td>"
        + (
            ""
            if s.id == current
            else f'<form method="post" action="/console/sessions/{esc(s.id)}/revoke">'
            f'{_csrf(csrf)}<button type="submit">End</button></form>'
        )
        + "</td></tr>"
        for s in sessions
    )
    return (
        f'<p id="who">Signed in as {esc(email)} ({esc(role)}).</p>'
        f'<h2>Sessions</h2><table id="sessions"><tr><th>From</th><th>Signed in</th><th></th>'
        f"</tr>{rows}</table>"
        '<p><a href="/console/password">Change password</a></p>'
        + ('<p><a href="/console/operators">Operators</a></p>' if role == "owner" else "")
        + ('<p><a href="/console/api-keys">API keys</a></p>' if role == "owner" else "")
        + ('<p><a href="/console/gateways">Gateway accounts</a></p>' if role == "owner" else "")
        + '<p><a href="/console/payments">Payments</a></p>'
        '<p><a href="/console/exports">Exports</a></p>'
        + '<p><a href="/console/app-tokens">Tokens for apps</a></p>'
        '<p><a href="/console/security-keys">Security keys</a></p>'
        + f'<form method="post" action="/console/sign-out">{_csrf(csrf)}'
        '<button type="submit">Sign out</button></form>'
    )


def password(csrf: str, message: str | None = None) -> str:
    return error(message) + (
        '<form method="post" action="/console/password">'
        f"{_csrf(csrf)}"
        '<label>Current password <input name="current" type="password" '
        'autocomplete="current-password" required></label>'
        '<label>New password <input name="new" type="password" autocomplete="new-password" '
        "required></label>"
        '<button type="submit">Change password</button></form>'
    )


def signed_out_or_expired(message: str) -> str:
    return f'<p>{esc(message)}</p><p><a href="/console/sign-in">Sign in</a></p>'


def _ago(now: datetime, then: datetime) -> str:
    minutes = int((now - then).total_seconds() // 60)
    return "just now" if minutes < 1 else f"{minutes} min ago"


def _role_options(selected: str | None = None) -> str:
    return "".join(
        f'<option value="{r.value}"{" selected" if r.value == selected else ""}>{r.value}</option>'
        for r in Role
    )


def accept_invitation(email: str, role: str, message: str | None = None) -> str:
    return error(message) + (
        f"<p>You are invited as {esc(role)}. Choose a password for {esc(email)}: at least 12 "
        "characters with letters and digits; a passphrase is best.</p>"
        '<form method="post">'
        '<label>Password <input name="password" type="password" autocomplete="new-password" '
        "required></label>"
        '<button type="submit">Create my account</button></form>'
    )


def operators(
    everyone: Sequence[Operator], me: str, csrf: str, now: datetime, message: str | None = None
) -> str:
    rows = []
    for op in everyone:
        actions = ""
        if op.id != me:
            actions = (
                f'<form method="post" action="/console/operators/{esc(op.id)}/role">{_csrf(csrf)}'
                f'<select name="role" aria-label="Role of {esc(op.email)}">'
                f"{_role_options(op.role.value)}</select>"
                '<button type="submit">Change role</button></form>'
            )
            if op.locked_at(now):
                actions += (
                    f'<form method="post" action="/console/operators/{esc(op.id)}/unlock">'
                    f'{_csrf(csrf)}<button type="submit">Unlock</button></form>'
                )
        state = "locked" if op.locked_at(now) else "active"
        rows.append(
            f"<tr><td>{esc(op.email)}</td><td>{esc(op.role.value)}</td><td>{state}</td>"
            f"<td>{actions}</td></tr>"
        )
    return error(message) + (
        f'<table id="operators"><tr><th>Email</th><th>Role</th><th>State</th><th></th></tr>'
        f"{''.join(rows)}</table>"
        "<h2>Invite an operator</h2>"
        f'<form method="post" action="/console/operators/invite">{_csrf(csrf)}'
        '<label>Email <input name="email" type="email" required></label>'
        f'<label>Role <select name="role">{_role_options("viewer")}</select></label>'
        '<button type="submit">Send invitation</button></form>'
        '<p><a href="/console">Back</a></p>'
    )


def app_tokens(csrf: str) -> str:
    return (
        "<p>An app (a script, a CLI) can act for you with an access token that lasts 10 "
        "minutes and a refresh token it exchanges for new ones at <code>POST /oauth/token</code>."
        " Creating them needs your second factor within the last 5 minutes.</p>"
        f'<form method="post" action="/console/app-tokens">{_csrf(csrf)}'
        '<button type="submit">Create tokens</button></form>'
        '<p><a href="/console">Back</a></p>'
    )


def app_tokens_made(access_token: str, refresh_token: str) -> str:
    return (
        "<p>Copy these now; they are not shown again.</p>"
        f'<p>Access token: <code id="access-token">{esc(access_token)}</code></p>'
        f'<p>Refresh token: <code id="refresh-token">{esc(refresh_token)}</code></p>'
        '<p><a href="/console">Back</a></p>'
    )


def security_keys(count: int, csrf: str) -> str:
    return (
        f'<p id="key-count">Security keys: {count}.</p>'
        "<p>A security key (or your device's own authenticator) can stand in for the code "
        "from your app when you sign in.</p>"
        + webauthn_box("register", csrf, "Add a security key")
        + '<p><a href="/console">Back</a></p>'
    )


def api_keys(csrf: str, message: str | None = None) -> str:
    return error(message) + (
        "<p>A new API key for your servers. Creating one needs your second factor within the "
        "last 5 minutes; the key is shown once.</p>"
        f'<form method="post" action="/console/api-keys">{_csrf(csrf)}'
        '<label>Kind <select name="kind"><option value="secret">secret (sk_)</option>'
        '<option value="publishable">publishable (pk_)</option></select></label>'
        '<label>Mode <select name="mode"><option value="test">test</option>'
        '<option value="live">live</option></select></label>'
        '<button type="submit">Create key</button></form>'
        '<p><a href="/console">Back</a></p>'
    )


def api_key_made(key_id: str, secret: str) -> str:
    return (
        "<p>Copy this key now; it is not shown again.</p>"
        f'<p>{esc(key_id)}: <code id="api-key">{esc(secret)}</code></p>'
        '<p><a href="/console">Back</a></p>'
    )


def gateways(
    accounts: Sequence[tuple[str, str, str]], csrf: str, message: str | None = None
) -> str:
    """`accounts`: (id, provider, webhook URL) of each active account."""
    rows = "".join(
        f"<tr><td>{esc(i)}</td><td>{esc(p)}</td><td>{esc(u)}</td><td>"
        f'<form method="post" action="/console/gateways/{esc(i)}/remove">{_csrf(csrf)}'
        '<button type="submit">Remove</button></form></td></tr>'
        for i, p, u in accounts
    )
    return error(message) + (
        f'<table id="gateways"><tr><th>Account</th><th>Provider</th><th>Webhooks to</th>'
        f"<th></th></tr>{rows}</table>"
        "<h2>Connect an account</h2><p>Changing gateway credentials needs your second factor "
        "within the last 5 minutes. Credentials are sealed and never shown again.</p>"
        f'<form method="post" action="/console/gateways">{_csrf(csrf)}'
        '<label>Provider <select name="provider"><option>stripe</option><option>braintree'
        "</option><option>sandbox</option></select></label>"
        '<label>Credentials (JSON) <textarea name="credentials" rows="4"></textarea></label>'
        '<button type="submit">Connect</button></form><p><a href="/console">Back</a></p>'
    )


def exports(names: Sequence[str], csrf: str) -> str:
    options = "".join(f"<option>{esc(n)}</option>" for n in names)
    return (
        "<p>A report as a CSV file. Exports need your second factor within the last 5 "
        "minutes.</p>"
        f'<form method="post" action="/console/exports">{_csrf(csrf)}'
        f'<label>Report <select name="report">{options}</select></label>'
        '<button type="submit">Download CSV</button></form><p><a href="/console">Back</a></p>'
    )


def payments(
    rows: Sequence[tuple[str, str, str, str, str]],
    threshold: int,
    csrf: str,
    *,
    owner: bool,
    message: str | None = None,
) -> str:
    """`rows`: (id, amount shown, status, refundable minor units, customer's e-mail, masked
    for roles that see personal data masked) of recent test payments."""
    table = "".join(
        f"<tr><td>{esc(i)}</td><td>{esc(c)}</td><td>{esc(a)}</td><td>{esc(s)}</td><td>"
        + (
            f'<form method="post" action="/console/payments/{esc(i)}/refund">{_csrf(csrf)}'
            f'<input name="amount" inputmode="numeric" value="{esc(r)}" '
            f'aria-label="Refund amount for {esc(i)}">'
            '<button type="submit">Refund</button></form>'
            if r != "0"
            else ""
        )
        + "</td></tr>"
        for i, a, s, r, c in rows
    )
    setting = (
        f'<form method="post" action="/console/payments/threshold">{_csrf(csrf)}'
        f'<label>Refunds above (minor units) need a fresh second factor <input name="amount" '
        f'inputmode="numeric" value="{threshold}"></label><button type="submit">Save</button>'
        "</form>"
        if owner
        else f"<p>Refunds above {threshold} (minor units) need a fresh second factor.</p>"
    )
    return error(message) + (
        '<table id="payments"><tr><th>Payment</th><th>Customer</th><th>Amount</th>'
        f"<th>Status</th><th></th></tr>{table}</table>"
        f'{setting}<p><a href="/console">Back</a></p>'
    )
