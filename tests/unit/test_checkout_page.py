"""The demo checkout page's widgets: each gateway library's script tag and the
Content-Security-Policy the page sends with it."""

from __future__ import annotations

import pytest

from strongroom.entrypoints.api.pages.checkout import CheckoutView, headers, render
from strongroom.settings import Settings

DEFAULTS = Settings.model_fields


def view(widget: str, library_url: str | None, gateway_key: str | None = None) -> CheckoutView:
    return CheckoutView(
        key="pk_test_page",
        amount=2000,
        currency="usd",
        page_origin="https://shop.example",
        fields_origin="https://fields.example",
        widget=widget,
        gateway_key=gateway_key,
        library_url=library_url,
    )


def csp(page: CheckoutView) -> dict[str, list[str]]:
    policy = headers(page)["Content-Security-Policy"]
    return {name: rest for name, *rest in (d.split(" ") for d in policy.split("; "))}


def test_the_official_stripe_js_is_allowed_with_the_stripe_origins_it_needs() -> None:
    page = view("stripe", DEFAULTS["stripe_js_url"].default, "pk_test_merchant")
    html = render(page)
    assert '<script src="https://js.stripe.com/v3/"></script>' in html
    assert 'data-key="pk_test_merchant"' in html
    policy = csp(page)
    assert "https://js.stripe.com" in policy["script-src"]
    assert {"https://js.stripe.com", "https://hooks.stripe.com"} <= set(policy["frame-src"])
    assert {"'self'", "https://api.stripe.com"} <= set(policy["connect-src"])
    assert "https://fields.example" not in headers(page)["Content-Security-Policy"]


def test_braintree_drop_in_is_allowed_with_its_asset_and_api_origins() -> None:
    page = view("braintree", DEFAULTS["braintree_dropin_url"].default, "sandbox_key")
    policy = csp(page)
    assert {"https://js.braintreegateway.com", "https://assets.braintreegateway.com"} <= set(
        policy["script-src"]
    )
    assert "https://api.braintreegateway.com" in policy["connect-src"]
    assert "https://assets.braintreegateway.com" in policy["style-src"]


def test_a_library_served_elsewhere_gets_its_own_origin_only() -> None:
    page = view("stripe", "http://127.0.0.1:4567/v3/", "pk_test_x")
    policy = csp(page)
    for directive in ("script-src", "frame-src", "connect-src"):
        assert "http://127.0.0.1:4567" in policy[directive]
    assert "https://api.stripe.com" not in headers(page)["Content-Security-Policy"]


def test_the_gateway_key_is_escaped_into_the_page() -> None:
    html = render(view("stripe", "https://js.stripe.com/v3/", '"><script>alert(1)</script>'))
    assert "<script>alert(1)</script>" not in html


def test_the_sandbox_fields_need_no_library() -> None:
    page = view("sandbox", None)
    assert "<script src=" not in render(page)
    assert csp(page)["frame-src"] == ["https://fields.example"]


@pytest.mark.parametrize("url", ["javascript:alert(1)", "https://x.example/a b", 'https://x/"'])
def test_library_urls_must_be_plain_http_urls(url: str) -> None:
    with pytest.raises(ValueError, match="stripe_js_url"):
        Settings(stripe_js_url=url)
