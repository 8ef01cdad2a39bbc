"""Stand-ins for the gateways' browser libraries, served by the gateway stand-ins so the demo
checkout's Stripe and Braintree widgets run in a real browser without the internet.

`STRIPE_JS` stands in for Stripe.js v3 (served by StripeStandIn at /v3/): `Stripe(key)`,
`elements().create("card")` with `mount` and `on("ready")`, and `createPaymentMethod`, which
posts the card to the stand-in's /v1/payment_methods with the publishable key, as Stripe.js
posts to api.stripe.com. `DROPIN_JS` stands in for Braintree's Drop-in (served by
BraintreeStandIn): `braintree.dropin.create({authorization, container})` and
`requestPaymentMethod()`, which posts the card to the stand-in's client API with the
tokenization key and resolves to `{nonce}`.

The one difference that matters: the real libraries draw the card fields inside their own
cross-origin iframes, while these draw a plain input on the merchant's page. The tests
therefore assert what Strongroom sees (only the PaymentMethod id or the nonce), not what the
merchant's page could read.
"""

from __future__ import annotations

STRIPE_JS = """
(function () {
  "use strict";
  var api = document.currentScript.src.replace(/\\/v3\\/.*$/, "");
  window.Stripe = function (key) {
    return {
      elements: function () {
        return {
          create: function () {
            var input = document.createElement("input");
            input.id = "standin-card-number";
            input.setAttribute("aria-label", "Card number");
            var ready = [];
            return {
              input: input,
              on: function (name, handler) {
                if (name === "ready") {
                  ready.push(handler);
                }
              },
              mount: function (target) {
                target.appendChild(input);
                setTimeout(function () {
                  ready.forEach(function (handler) { handler(); });
                }, 0);
              },
            };
          },
        };
      },
      createPaymentMethod: function (options) {
        var body = new URLSearchParams();
        body.set("key", key);
        body.set("type", options.type);
        body.set("card[number]", options.card.input.value.replace(/\\s+/g, ""));
        return fetch(api + "/v1/payment_methods", { method: "POST", body: body })
          .then(function (response) { return response.json(); })
          .then(function (data) {
            return data.error ? { error: data.error } : { paymentMethod: data };
          });
      },
    };
  };
})();
"""

DROPIN_JS = """
(function () {
  "use strict";
  var api = document.currentScript.src.replace(/\\/web\\/dropin\\/.*$/, "");
  window.braintree = {
    dropin: {
      create: function (options) {
        var input = document.createElement("input");
        input.id = "standin-card-number";
        input.setAttribute("aria-label", "Card number");
        document.querySelector(options.container).appendChild(input);
        return Promise.resolve({
          requestPaymentMethod: function () {
            var body = JSON.stringify({
              authorization: options.authorization,
              number: input.value.replace(/\\s+/g, ""),
            });
            return fetch(api + "/client_api/v1/payment_methods/credit_cards", {
              method: "POST",
              body: body,
            })
              .then(function (response) { return response.json(); })
              .then(function (data) {
                if (data.error) {
                  throw new Error(data.error.message);
                }
                return { nonce: data.nonce, type: "CreditCard" };
              });
          },
        });
      },
    },
  };
})();
"""
