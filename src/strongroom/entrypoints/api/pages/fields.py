"""The sandbox's hosted card fields: the page a merchant's checkout embeds in an iframe from the
tokenization origin. The card number is typed here, posted to /v1/tokens on this same origin,
and only the token (with brand and last four) is handed to the parent page, by postMessage to
the one origin the parent declared. The parent's script cannot read these inputs: a browser
keeps a cross-origin frame's document out of its reach."""

from __future__ import annotations

import html

from strongroom.entrypoints.api.pages import csp_hash

__all__ = ["SCRIPT", "STYLE", "headers", "render"]

STYLE = """
body { margin: 0; font: 16px system-ui, sans-serif; color: #1a1a1a; background: transparent; }
form { display: grid; grid-template-columns: 1fr 1fr; gap: 8px; }
label { display: grid; gap: 4px; font-size: 13px; color: #555; }
label.number { grid-column: 1 / 3; }
input { font: inherit; padding: 8px; border: 1px solid #bbb; border-radius: 4px; }
input:focus { outline: 2px solid #4a64d8; border-color: #4a64d8; }
"""

# No card data ever leaves this script except in the request to /v1/tokens (same origin).
SCRIPT = """
(function () {
  "use strict";
  var config = document.body.dataset;
  var key = config.key;
  var parentOrigin = config.parentOrigin;
  var number = document.getElementById("card-number");
  var expiry = document.getElementById("card-expiry");
  var cvc = document.getElementById("card-cvc");
  var busy = false;

  function tell(message) {
    window.parent.postMessage(message, parentOrigin);
  }

  function readExpiry(text) {
    var match = /^\\s*(\\d{1,2})\\s*[\\/-]?\\s*(\\d{2}|\\d{4})\\s*$/.exec(text);
    return match ? { month: match[1], year: match[2] } : null;
  }

  function fail(message) {
    tell({ type: "error", message: message });
  }

  function tokenize() {
    if (busy) {
      return;
    }
    var exp = readExpiry(expiry.value);
    if (exp === null) {
      fail("Your card's expiration date is incomplete.");
      return;
    }
    var form = new URLSearchParams();
    form.set("card[number]", number.value.replace(/[\\s-]/g, ""));
    form.set("card[exp_month]", exp.month);
    form.set("card[exp_year]", exp.year);
    form.set("card[cvc]", cvc.value.trim());
    busy = true;
    fetch("/v1/tokens", {
      method: "POST",
      headers: { Authorization: "Bearer " + key },
      body: form,
      credentials: "omit",
      cache: "no-store",
    })
      .then(function (response) {
        return response.json().then(function (data) {
          if (response.ok && data && data.object === "token") {
            tell({
              type: "token",
              token: data.id,
              card: { brand: data.card.brand, last4: data.card.last4 },
            });
          } else {
            var error = (data && data.error) || {};
            fail(typeof error.message === "string" ? error.message : "The card was refused.");
          }
        });
      })
      .catch(function () {
        fail("The card could not be sent to the sandbox; try again.");
      })
      .finally(function () {
        busy = false;
      });
  }

  window.addEventListener("message", function (event) {
    if (event.origin !== parentOrigin || event.source !== window.parent) {
      return;
    }
    if (event.data && event.data.type === "tokenize") {
      tokenize();
    }
  });
  tell({ type: "ready" });
})();
"""

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Card details</title>
<style>{style}</style></head>
<body data-key="{key}" data-parent-origin="{parent_origin}">
<form id="card-fields" autocomplete="on" novalidate>
  <label class="number">Card number
    <input id="card-number" name="cardnumber" inputmode="numeric" autocomplete="cc-number"
      maxlength="23" spellcheck="false" placeholder="Card number"></label>
  <label>Expiry
    <input id="card-expiry" name="exp-date" inputmode="numeric" autocomplete="cc-exp"
      maxlength="9" spellcheck="false" placeholder="MM / YY"></label>
  <label>Security code
    <input id="card-cvc" name="cvc" inputmode="numeric" autocomplete="cc-csc"
      maxlength="4" spellcheck="false" placeholder="CVC"></label>
</form>
<script>{script}</script>
</body></html>"""

_SCRIPT_HASH = csp_hash(SCRIPT)
_STYLE_HASH = csp_hash(STYLE)


def render(*, key: str, parent_origin: str) -> str:
    """The fields page for a publishable key, to be framed by `parent_origin` only."""
    return _PAGE.format(
        style=STYLE,
        script=SCRIPT,
        key=html.escape(key, quote=True),
        parent_origin=html.escape(parent_origin, quote=True),
    )


def headers(parent_origin: str) -> dict[str, str]:
    """Only the declared parent may frame the fields; only the hashed script runs; it may talk
    to this origin alone. `parent_origin` must come from pages.parse_origin."""
    policy = "; ".join(
        (
            "default-src 'none'",
            f"script-src {_SCRIPT_HASH}",
            f"style-src {_STYLE_HASH}",
            "connect-src 'self'",
            f"frame-ancestors {parent_origin}",
            "base-uri 'none'",
            "form-action 'none'",
        )
    )
    return {
        "Content-Security-Policy": policy,
        "Cache-Control": "no-store",
        "Referrer-Policy": "no-referrer",
        "X-Content-Type-Options": "nosniff",
    }
