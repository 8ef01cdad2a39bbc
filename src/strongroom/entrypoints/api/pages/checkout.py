"""The demo checkout page: an amount, a payment widget and a Pay button.

The page's own script never touches card data. It asks its widget for a token, sends the token
to /demo/checkout/pay, and shows the outcome; when the payment needs 3-D Secure it sends the
browser to the challenge, remembering the PaymentIntent in its own URL, and confirms again once
the customer comes back.

The widget is chosen by name from WIDGETS: "sandbox" (the sandbox's hosted fields in a
cross-origin iframe), "stripe" (Stripe Elements: a PaymentMethod id) or "braintree" (Braintree's
Drop-in: a nonce). Each is the markup to place in the form (for Stripe and Braintree, their
library's script tag first), a script that sets `window.checkoutWidget` (`ready`, and
`tokenize()` resolving to `{token}` or `{error}`, firing `checkout-widget-ready` on document
once ready), and the sources its CSP must allow. The gateway's own library draws the card
fields in its own frames, so card data goes from the customer to the gateway alone."""

from __future__ import annotations

import html
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import urlencode

from strongroom.domain.money import exponent
from strongroom.entrypoints.api.pages import csp_hash, origin_of

__all__ = ["STYLE", "WIDGETS", "CheckoutView", "Widget", "display_amount", "headers", "render"]

# The query parameter the page keeps a PaymentIntent in while the customer authenticates.
INTENT_PARAM = "payment_intent"


@dataclass(frozen=True)
class CheckoutView:
    """What the page shows and where its parts live."""

    key: str  # the publishable test key
    amount: int  # minor units
    currency: str  # lower case
    page_origin: str  # this page's origin (public_url)
    fields_origin: str  # the hosted fields' origin (tokenization_url, else public_url)
    widget: str  # a key of WIDGETS
    # Stripe and Braintree: the gateway account's publishable key (Stripe) or tokenization key
    # (Braintree), and the URL of the gateway's browser library.
    gateway_key: str | None = None
    library_url: str | None = None

    @property
    def display(self) -> str:
        return display_amount(self.amount, self.currency)


@dataclass(frozen=True)
class Widget:
    markup: Callable[[CheckoutView], str]
    script: str
    # CSP directive → sources it adds, beyond the page's own ('self' for fetch, hashes).
    sources: Callable[[CheckoutView], Mapping[str, tuple[str, ...]]]


def display_amount(amount: int, currency: str) -> str:
    """'20.00 USD' for (2000, 'usd'): integer arithmetic, with the currency's exponent."""
    places = exponent(currency)
    code = currency.upper()
    if places == 0:
        return f"{amount} {code}"
    major, minor = divmod(amount, 10**places)
    return f"{major}.{minor:0{places}d} {code}"


# --- the sandbox's hosted fields --------------------------------------------------------------
def _sandbox_markup(view: CheckoutView) -> str:
    query = urlencode({"key": view.key, "origin": view.page_origin})
    src = f"{view.fields_origin}/sandbox/fields?{query}"
    return (
        f'<iframe id="card-frame" title="Card details" src="{html.escape(src, quote=True)}" '
        f'data-origin="{html.escape(view.fields_origin, quote=True)}"></iframe>'
    )


# Talks to the fields by postMessage, with the fields' origin as target and as the only
# accepted sender. What comes back is a token, or an error message to show.
_SANDBOX_SCRIPT = """
(function () {
  "use strict";
  var frame = document.getElementById("card-frame");
  var origin = frame.dataset.origin;
  var pending = null;
  var widget = { ready: false, tokenize: tokenize };

  function tokenize() {
    return new Promise(function (resolve) {
      if (pending !== null) {
        pending({ error: "Another payment is already in progress." });
      }
      pending = resolve;
      frame.contentWindow.postMessage({ type: "tokenize" }, origin);
    });
  }

  window.addEventListener("message", function (event) {
    if (event.origin !== origin || event.source !== frame.contentWindow) {
      return;
    }
    var data = event.data || {};
    if (data.type === "ready") {
      widget.ready = true;
      document.dispatchEvent(new Event("checkout-widget-ready"));
      return;
    }
    if (pending === null) {
      return;
    }
    var resolve = pending;
    pending = null;
    if (data.type === "token" && typeof data.token === "string") {
      resolve({ token: data.token });
    } else {
      resolve({
        error: typeof data.message === "string" ? data.message : "The card was refused.",
      });
    }
  });
  window.checkoutWidget = widget;
})();
"""


# --- Stripe Elements and Braintree Drop-in ------------------------------------------------------
def _library_markup(element: str) -> Callable[[CheckoutView], str]:
    """The gateway library's script tag, then the element its widget draws into, carrying the
    gateway's browser key."""

    def markup(view: CheckoutView) -> str:
        assert view.library_url is not None
        assert view.gateway_key is not None
        return (
            f'<script src="{html.escape(view.library_url, quote=True)}"></script>'
            f'<div id="{element}" data-key="{html.escape(view.gateway_key, quote=True)}"></div>'
        )

    return markup


# What the official libraries reach beyond their own origin, from each gateway's CSP guidance.
# A library served from elsewhere (a local stand-in in the tests) gets its own origin only.
_OFFICIAL_SOURCES: dict[str, dict[str, tuple[str, ...]]] = {
    "https://js.stripe.com": {
        "frame-src": ("https://hooks.stripe.com",),
        "connect-src": ("https://api.stripe.com",),
    },
    "https://js.braintreegateway.com": {
        "script-src": ("https://assets.braintreegateway.com",),
        "frame-src": ("https://assets.braintreegateway.com",),
        "connect-src": (
            "https://api.braintreegateway.com",
            "https://client-analytics.braintreegateway.com",
            "https://*.braintree-api.com",
        ),
        "style-src": ("https://assets.braintreegateway.com",),
        "img-src": ("https://assets.braintreegateway.com", "data:"),
    },
}


def _library_sources(view: CheckoutView) -> Mapping[str, tuple[str, ...]]:
    assert view.library_url is not None
    origin = origin_of(view.library_url)
    sources: dict[str, tuple[str, ...]] = {
        d: (origin,) for d in ("script-src", "frame-src", "connect-src")
    }
    for directive, extra in _OFFICIAL_SOURCES.get(origin, {}).items():
        sources[directive] = sources.get(directive, ()) + extra
    return sources


# Stripe.js v3: a card Element, and createPaymentMethod for its `pm_` id.
_STRIPE_SCRIPT = """
(function () {
  "use strict";
  var mount = document.getElementById("stripe-card");
  var widget = { ready: false, tokenize: unavailable };

  function unavailable() {
    return Promise.resolve({ error: "The card form could not be loaded." });
  }

  if (typeof window.Stripe === "function") {
    var stripe = window.Stripe(mount.dataset.key);
    var card = stripe.elements().create("card");
    card.on("ready", function () {
      widget.ready = true;
      document.dispatchEvent(new Event("checkout-widget-ready"));
    });
    card.mount(mount);
    widget.tokenize = function () {
      return stripe.createPaymentMethod({ type: "card", card: card }).then(
        function (answer) {
          if (answer.error) {
            return { error: answer.error.message || "The card was refused." };
          }
          return { token: answer.paymentMethod.id };
        },
        function () {
          return { error: "The card could not be checked. Try again." };
        }
      );
    };
  }
  window.checkoutWidget = widget;
})();
"""

# Braintree's Drop-in: requestPaymentMethod for a nonce.
_BRAINTREE_SCRIPT = """
(function () {
  "use strict";
  var mount = document.getElementById("braintree-dropin");
  var widget = { ready: false, tokenize: unavailable };

  function unavailable() {
    return Promise.resolve({ error: "The card form could not be loaded." });
  }

  if (window.braintree && window.braintree.dropin) {
    window.braintree.dropin
      .create({ authorization: mount.dataset.key, container: "#braintree-dropin" })
      .then(function (dropin) {
        widget.tokenize = function () {
          return dropin.requestPaymentMethod().then(
            function (method) {
              return { token: method.nonce };
            },
            function (error) {
              return { error: (error && error.message) || "The card was refused." };
            }
          );
        };
        widget.ready = true;
        document.dispatchEvent(new Event("checkout-widget-ready"));
      });
  }
  window.checkoutWidget = widget;
})();
"""

WIDGETS: dict[str, Widget] = {
    "sandbox": Widget(
        markup=_sandbox_markup,
        script=_SANDBOX_SCRIPT,
        sources=lambda view: {"frame-src": (view.fields_origin,)},
    ),
    "stripe": Widget(
        markup=_library_markup("stripe-card"),
        script=_STRIPE_SCRIPT,
        sources=_library_sources,
    ),
    "braintree": Widget(
        markup=_library_markup("braintree-dropin"),
        script=_BRAINTREE_SCRIPT,
        sources=_library_sources,
    ),
}

# --- the page ---------------------------------------------------------------------------------
STYLE = """
body { font: 16px system-ui, sans-serif; color: #1a1a1a; background: #f4f5f7; margin: 0; }
main { max-width: 420px; margin: 48px auto; padding: 24px; background: #fff;
  border-radius: 8px; box-shadow: 0 1px 4px rgba(0, 0, 0, 0.12); }
h1 { font-size: 20px; margin: 0 0 16px; }
iframe { width: 100%; height: 140px; border: 0; }
button { width: 100%; padding: 12px; font: inherit; color: #fff; background: #4a64d8;
  border: 0; border-radius: 4px; cursor: pointer; }
button:disabled { background: #9aa6dd; cursor: default; }
#result[data-state="succeeded"] { color: #17803d; }
#result[data-state="failed"] { color: #b3261e; }
.note { font-size: 13px; color: #666; }
"""

_SCRIPT = """
(function () {
  "use strict";
  var INTENT = "{intent_param}";
  var root = document.getElementById("checkout");
  var form = document.getElementById("payment-form");
  var pay = document.getElementById("pay");
  var result = document.getElementById("result");
  var more = document.getElementById("continue");
  var moreLink = document.getElementById("continue-link");
  var widget = window.checkoutWidget;
  var order = {
    key: root.dataset.key,
    amount: Number(root.dataset.amount),
    currency: root.dataset.currency,
  };

  function show(text, state) {
    result.textContent = text;
    result.dataset.state = state;
  }

  function intentInUrl() {
    return new URL(window.location.href).searchParams.get(INTENT);
  }

  function remember(intentId) {
    var here = new URL(window.location.href);
    if (intentId) {
      here.searchParams.set(INTENT, intentId);
    } else {
      here.searchParams.delete(INTENT);
    }
    history.replaceState(null, "", here.href);
  }

  function webUrl(text) {
    try {
      var url = new URL(text);
      return url.protocol === "https:" || url.protocol === "http:" ? url.href : null;
    } catch (error) {
      return null;
    }
  }

  function post(path, body) {
    return fetch(path, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
      credentials: "same-origin",
      cache: "no-store",
    }).then(function (response) {
      return response.json().then(
        function (data) {
          return { ok: response.ok, data: data };
        },
        function () {
          return { ok: false, data: null };
        }
      );
    });
  }

  function settle(outcome, returning) {
    var data = outcome.data || {};
    if (outcome.ok && data.status === "succeeded") {
      remember(null);
      pay.disabled = true;
      show("Payment succeeded", "succeeded");
      return;
    }
    if (outcome.ok && data.status === "requires_action") {
      var action = (data.next_action || {}).redirect_to_url || {};
      var url = webUrl(action.url);
      if (url !== null && !returning) {
        remember(data.id);
        show("Redirecting to 3-D Secure authentication…", "pending");
        window.location.assign(url);
        return;
      }
      if (url !== null) {
        moreLink.href = url;
        more.hidden = false;
        show("Authentication is not complete yet.", "pending");
        return;
      }
    }
    remember(null);
    pay.disabled = !widget.ready;
    var error = data.error || {};
    show(
      typeof error.message === "string" ? error.message : "The payment could not be completed.",
      "failed"
    );
  }

  function broken() {
    settle({ ok: false, data: null }, false);
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    pay.disabled = true;
    more.hidden = true;
    show("Processing…", "pending");
    widget
      .tokenize()
      .then(function (answer) {
        if (answer.error) {
          pay.disabled = false;
          show(answer.error, "failed");
          return null;
        }
        return post("/demo/checkout/pay", {
          key: order.key,
          token: answer.token,
          amount: order.amount,
          currency: order.currency,
        }).then(function (outcome) {
          settle(outcome, false);
        });
      })
      .catch(broken);
  });

  // Back from the challenge (a fresh load, or the page restored from the back-forward cache):
  // confirm the remembered PaymentIntent again.
  function resume() {
    var intentId = intentInUrl();
    if (!intentId) {
      return;
    }
    pay.disabled = true;
    show("Confirming your payment…", "pending");
    post("/demo/checkout/confirm", { key: order.key, payment_intent: intentId })
      .then(function (outcome) {
        settle(outcome, true);
      })
      .catch(broken);
  }

  function enable() {
    if (!intentInUrl() && result.dataset.state !== "succeeded") {
      pay.disabled = false;
    }
  }

  document.addEventListener("checkout-widget-ready", enable);
  if (widget.ready) {
    enable();
  }
  window.addEventListener("pageshow", resume);
})();
""".replace("{intent_param}", INTENT_PARAM)

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Demo checkout</title>
<style>{style}</style></head>
<body>
<main id="checkout" data-key="{key}" data-amount="{amount}" data-currency="{currency}"
  data-widget="{widget}">
  <h1>Demo checkout</h1>
  <p>Total: <strong id="amount">{display}</strong></p>
  <form id="payment-form" novalidate>
    {widget_markup}
    <button type="submit" id="pay" disabled>Pay {display}</button>
  </form>
  <p id="result" role="status" aria-live="polite"></p>
  <p id="continue" hidden><a id="continue-link">Continue authentication</a></p>
  <p class="note">Test mode: pay with a test card; no real card is charged.</p>
</main>
<script>{widget_script}</script>
<script>{script}</script>
</body></html>"""


def render(view: CheckoutView) -> str:
    widget = WIDGETS[view.widget]
    return _PAGE.format(
        style=STYLE,
        key=html.escape(view.key, quote=True),
        amount=view.amount,
        currency=html.escape(view.currency, quote=True),
        widget=html.escape(view.widget, quote=True),
        display=html.escape(view.display),
        widget_markup=widget.markup(view),
        widget_script=widget.script,
        script=_SCRIPT,
    )


def headers(view: CheckoutView) -> dict[str, str]:
    """Only this page's scripts run (by hash); it fetches from its own origin and frames only
    what its widget needs; nobody frames it."""
    widget = WIDGETS[view.widget]
    directives: dict[str, list[str]] = {
        "default-src": ["'none'"],
        "script-src": [csp_hash(widget.script), csp_hash(_SCRIPT)],
        "style-src": [csp_hash(STYLE)],
        "connect-src": ["'self'"],
        "img-src": ["'self'"],
        "frame-ancestors": ["'none'"],
        "base-uri": ["'none'"],
        "form-action": ["'none'"],
    }
    for directive, sources in widget.sources(view).items():
        directives.setdefault(directive, []).extend(sources)
    return {
        "Content-Security-Policy": "; ".join(
            f"{name} {' '.join(sources)}" for name, sources in directives.items()
        ),
        "Cache-Control": "no-store",
        "Referrer-Policy": "no-referrer",
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
    }
