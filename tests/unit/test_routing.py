"""Routing rules pick a merchant's gateway accounts in order: the first matching rule's
accounts first, then the default order as fallback; every condition is checked."""

from __future__ import annotations

from typing import Any

import pytest

from strongroom.domain.errors import InvalidRequest
from strongroom.domain.routing import PaymentFacts, parse_routing, routing_from_json

ACCOUNTS = {"ga_stripe", "ga_braintree", "ga_sandbox"}
EU_TO_BRAINTREE: dict[str, Any] = {
    "rules": [
        {"card_country": ["fr", "DE", "NL"], "gateways": ["ga_braintree"]},
        {"currency": ["JPY"], "amount_gte": 100_000, "gateways": ["ga_sandbox", "ga_stripe"]},
        {"card_brand": ["amex"], "amount_lte": 500, "gateways": ["ga_sandbox"]},
    ],
    "default": ["ga_stripe", "ga_braintree"],
}


@pytest.mark.parametrize(
    ("facts", "expected"),
    [
        (PaymentFacts("eur", 1000, "FR", "visa"), ("ga_braintree", "ga_stripe")),
        (PaymentFacts("usd", 1000, "US", "visa"), ("ga_stripe", "ga_braintree")),
        # No card facts (a token that tells none): country rules cannot match.
        (PaymentFacts("eur", 1000), ("ga_stripe", "ga_braintree")),
        (PaymentFacts("jpy", 100_000), ("ga_sandbox", "ga_stripe", "ga_braintree")),
        (PaymentFacts("jpy", 99_999), ("ga_stripe", "ga_braintree")),
        (PaymentFacts("usd", 500, "US", "amex"), ("ga_sandbox", "ga_stripe", "ga_braintree")),
        (PaymentFacts("usd", 501, "US", "amex"), ("ga_stripe", "ga_braintree")),
        # The first matching rule wins, even when a later one would match too.
        (PaymentFacts("jpy", 100_000, "DE", "amex"), ("ga_braintree", "ga_stripe")),
    ],
)
def test_the_first_matching_rule_then_the_default_order(
    facts: PaymentFacts, expected: tuple[str, ...]
) -> None:
    routing = parse_routing(EU_TO_BRAINTREE, ACCOUNTS)
    assert routing.order(facts) == expected
    # What is stored reads back to the same decisions.
    assert routing_from_json(routing.to_json()).order(facts) == expected


def test_no_rules_means_no_accounts_to_try() -> None:
    assert parse_routing({}, ACCOUNTS).order(PaymentFacts("usd", 1)) == ()


@pytest.mark.parametrize(
    ("doc", "param"),
    [
        ({"default": ["ga_other_merchant"]}, "default"),
        ({"rules": [{"gateways": []}]}, "rules[0].gateways"),
        ({"rules": [{"gateways": ["ga_stripe"], "currency": ["euro"]}]}, "rules[0].currency"),
        ({"rules": [{"gateways": ["ga_stripe"], "card_country": "FR"}]}, "rules[0].card_country"),
        ({"rules": [{"gateways": ["ga_stripe"], "amount_gte": -1}]}, "rules[0].amount_gte"),
        ({"rules": [{"gateways": ["ga_stripe"], "amount_lte": True}]}, "rules[0].amount_lte"),
        ({"rules": [{"gateways": ["ga_stripe"], "country": ["FR"]}]}, "rules[0]"),
        ({"rules": "all to stripe"}, "rules"),
        ({"rules": [{"gateways": ["ga_stripe"]}] * 51}, "rules"),
    ],
)
def test_bad_rules_are_refused_naming_the_field(doc: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        parse_routing(doc, ACCOUNTS)
    assert refused.value.param == param
