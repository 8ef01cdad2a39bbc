"""Gateway routing: a merchant's rules pick which of its gateway accounts a payment tries, in
order. Pure: no I/O, so every rule is unit-tested directly.

A rule matches when every condition it names holds (an absent condition matches anything); the
first matching rule's accounts are tried in order, then the default order fills in the rest, so
a rule names its preferred gateway and the others remain fallbacks. With no rules at all a
merchant's payments go to its default order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from strongroom.domain.errors import InvalidRequest

MAX_RULES = 50
_CONDITIONS = ("currency", "card_country", "card_brand", "amount_gte", "amount_lte")


@dataclass(frozen=True)
class PaymentFacts:
    """What routing may look at. Card facts are None when the token does not tell them."""

    currency: str
    amount: int
    card_country: str | None = None
    card_brand: str | None = None


@dataclass(frozen=True)
class Rule:
    gateways: tuple[str, ...]  # gateway account ids, in order
    currency: frozenset[str] | None = None
    card_country: frozenset[str] | None = None
    card_brand: frozenset[str] | None = None
    amount_gte: int | None = None
    amount_lte: int | None = None

    def matches(self, facts: PaymentFacts) -> bool:
        return (
            _within(self.currency, facts.currency)
            and _within(self.card_country, facts.card_country)
            and _within(self.card_brand, facts.card_brand)
            and (self.amount_gte is None or facts.amount >= self.amount_gte)
            and (self.amount_lte is None or facts.amount <= self.amount_lte)
        )


@dataclass(frozen=True)
class Routing:
    rules: tuple[Rule, ...] = ()
    default: tuple[str, ...] = ()

    def order(self, facts: PaymentFacts) -> tuple[str, ...]:
        """The accounts to try, first choice first, each once."""
        chosen: list[str] = []
        for rule in self.rules:
            if rule.matches(facts):
                chosen.extend(rule.gateways)
                break
        chosen.extend(self.default)
        return tuple(dict.fromkeys(chosen))

    def accounts(self) -> set[str]:
        return {a for rule in self.rules for a in rule.gateways} | set(self.default)

    def to_json(self) -> dict[str, Any]:
        return {"rules": [_rule_json(r) for r in self.rules], "default": list(self.default)}


def _within(allowed: frozenset[str] | None, value: str | None) -> bool:
    return allowed is None or (value is not None and value in allowed)


def _rule_json(rule: Rule) -> dict[str, Any]:
    out: dict[str, Any] = {"gateways": list(rule.gateways)}
    for name in ("currency", "card_country", "card_brand"):
        values = getattr(rule, name)
        if values is not None:
            out[name] = sorted(values)
    for name in ("amount_gte", "amount_lte"):
        if getattr(rule, name) is not None:
            out[name] = getattr(rule, name)
    return out


def parse_routing(doc: Mapping[str, Any], known_accounts: set[str]) -> Routing:
    """The routing document a merchant sends, checked: every account named must be one of its
    own active accounts. Raises InvalidRequest naming the offending field."""
    rules_in = doc.get("rules", [])
    if not isinstance(rules_in, list) or len(rules_in) > MAX_RULES:
        raise InvalidRequest(f"rules must be a list of at most {MAX_RULES} rules.", param="rules")
    rules = tuple(_parse_rule(r, f"rules[{i}]", known_accounts) for i, r in enumerate(rules_in))
    default = _accounts(doc.get("default", []), "default", known_accounts, allow_empty=True)
    return Routing(rules=rules, default=default)


def _parse_rule(raw: Any, where: str, known: set[str]) -> Rule:
    if not isinstance(raw, Mapping):
        raise InvalidRequest("A rule is an object.", param=where)
    unknown = set(raw) - {"gateways", *_CONDITIONS}
    if unknown:
        raise InvalidRequest(f"Unknown rule field: {sorted(unknown)[0]}.", param=where)
    return Rule(
        gateways=_accounts(raw.get("gateways"), f"{where}.gateways", known, allow_empty=False),
        currency=_codes(raw.get("currency"), f"{where}.currency", 3, lower=True),
        card_country=_codes(raw.get("card_country"), f"{where}.card_country", 2, lower=False),
        card_brand=_codes(raw.get("card_brand"), f"{where}.card_brand", None, lower=True),
        amount_gte=_amount(raw.get("amount_gte"), f"{where}.amount_gte"),
        amount_lte=_amount(raw.get("amount_lte"), f"{where}.amount_lte"),
    )


def _accounts(raw: Any, where: str, known: set[str], *, allow_empty: bool) -> tuple[str, ...]:
    if not isinstance(raw, list) or not all(isinstance(a, str) for a in raw):
        raise InvalidRequest("A list of gateway account ids is expected.", param=where)
    if not raw and not allow_empty:
        raise InvalidRequest("Name at least one gateway account.", param=where)
    for account in raw:
        if account not in known:
            raise InvalidRequest(f"No such gateway_account: '{account[:40]}'", param=where)
    return tuple(dict.fromkeys(raw))


def _codes(raw: Any, where: str, length: int | None, *, lower: bool) -> frozenset[str] | None:
    if raw is None:
        return None
    if not isinstance(raw, Sequence) or isinstance(raw, str) or not raw:
        raise InvalidRequest("A non-empty list of codes is expected.", param=where)
    codes = set()
    for code in raw:
        if not isinstance(code, str) or not code.isalpha() or len(code) > 32:
            raise InvalidRequest("Codes are letters only.", param=where)
        if length is not None and len(code) != length:
            raise InvalidRequest(f"Codes here have {length} letters.", param=where)
        codes.add(code.lower() if lower else code.upper())
    return frozenset(codes)


def _amount(raw: Any, where: str) -> int | None:
    if raw is None:
        return None
    if not isinstance(raw, int) or isinstance(raw, bool) or raw < 0:
        raise InvalidRequest("An amount is a non-negative integer in minor units.", param=where)
    return raw


def routing_from_json(doc: Mapping[str, Any]) -> Routing:
    """A stored document, trusted (it was checked when stored)."""
    return Routing(
        rules=tuple(
            Rule(
                gateways=tuple(r["gateways"]),
                currency=_stored(r.get("currency")),
                card_country=_stored(r.get("card_country")),
                card_brand=_stored(r.get("card_brand")),
                amount_gte=r.get("amount_gte"),
                amount_lte=r.get("amount_lte"),
            )
            for r in doc.get("rules", [])
        ),
        default=tuple(doc.get("default", [])),
    )


def _stored(values: list[str] | None) -> frozenset[str] | None:
    return None if values is None else frozenset(values)
