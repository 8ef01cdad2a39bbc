"""Primary account numbers (card numbers): finding them in free text, and masking them.

Strongroom never accepts a card number, so this is used to refuse requests that carry one and
to keep them out of logs. Pure Python; it runs on every request and every log record, so text
without a long enough run of digits is rejected by one regular-expression search."""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "PanMatch",
    "brand_of",
    "contains_pan",
    "find_pans",
    "luhn_valid",
    "mask_pan",
    "redact_pans",
]

MIN_DIGITS = 13
MAX_DIGITS = 19

# Issuer identification number ranges and lengths, from the table in Wikipedia's "Payment card
# number" article (the card networks' own published ranges, as collected there). Maestro and
# the regional networks (RuPay, Mir, Verve, …) are left out: their ranges are wide and would
# catch ordinary numbers for little gain.
_ANY = tuple(range(16, 20))
_DINERS = tuple(range(14, 20))
_BRANDS: tuple[tuple[str, int, int, tuple[int, ...]], ...] = (
    # (brand, first prefix, last prefix, lengths); prefixes compare on as many leading digits
    # as the bounds have.
    ("visa", 4, 4, (13, 16, 19)),
    ("mastercard", 51, 55, (16,)),
    ("mastercard", 2221, 2720, (16,)),
    ("amex", 34, 34, (15,)),
    ("amex", 37, 37, (15,)),
    ("discover", 6011, 6011, _ANY),
    ("discover", 644, 649, _ANY),
    ("discover", 65, 65, _ANY),
    ("jcb", 3528, 3589, _ANY),
    ("diners", 36, 36, _DINERS),
    ("diners", 300, 305, _DINERS),
    ("diners", 3095, 3095, _DINERS),
    ("diners", 38, 39, _ANY),
    ("unionpay", 62, 62, _ANY),
    ("unionpay", 81, 81, _ANY),
)
_BRAND_TABLE = tuple((brand, lo, hi, len(str(lo)), lengths) for brand, lo, hi, lengths in _BRANDS)

# What may stand between two digit groups of a written card number: any Unicode whitespace
# (spaces of every width, no-break spaces, tabs, line breaks), a dash of any kind (hyphen-minus,
# the Unicode hyphens and dashes, minus signs, fullwidth forms), a dot, and the invisible
# characters that can be pasted in with a number (soft hyphen, zero-width spaces and joiners).
_SEPARATOR_CHARS = (
    r"\s\-.\u00ad\u2010-\u2015\u2043\u2212\ufe58\ufe63\uff0d"
    r"\u180e\u200b-\u200d\u2060\ufeff"
)
_SEP = f"[{_SEPARATOR_CHARS}]"
# At most this many separator characters between two groups ("4242  4242", "4242 - 4242").
_MAX_SEPARATORS = 3
# A maximal run of at least 13 digits whose digits may be separated by up to three separator
# characters. The lookbehinds stop a search from starting in the middle of a run (Python's
# lookbehinds are fixed-width: one for each separator length). Starting the pattern with a
# character class (not a lookbehind) lets the engine skip ahead to the next digit, and the
# possessive quantifiers never backtrack: together about three times faster on typical text.
_RUN = re.compile(
    "[0-9](?<![0-9][0-9])"
    + "".join(f"(?<![0-9]{_SEP}{{{n}}}[0-9])" for n in range(1, _MAX_SEPARATORS + 1))
    + f"(?:{_SEP}{{0,{_MAX_SEPARATORS}}}+[0-9]){{12,}}+"
)
_GROUP = re.compile("[0-9]+")
_MAX_GROUP = 6


@dataclass(frozen=True, slots=True)
class PanMatch:
    """A card number found at text[start:end]; `digits` has the separators removed."""

    start: int
    end: int
    digits: str
    brand: str

    @property
    def masked(self) -> str:
        return mask_pan(self.digits)


def luhn_valid(digits: str) -> bool:
    """True when the string of digits passes the Luhn (mod 10) check."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def brand_of(digits: str) -> str | None:
    """The card brand whose number range and length `digits` falls in, else None."""
    length = len(digits)
    for brand, lo, hi, width, lengths in _BRAND_TABLE:
        if length in lengths and lo <= int(digits[:width]) <= hi:
            return brand
    return None


def _glued(text: str, at: int) -> bool:
    """A letter or digit at `at`: the number is part of a longer token (a hex digest, a base62
    id), not a card number written on its own."""
    return 0 <= at < len(text) and (text[at].isascii() and text[at].isalnum())


def _in_run(text: str, run: re.Match[str]) -> list[PanMatch]:
    """Card numbers within one run of separated digit groups. A card number starts and ends on
    group boundaries (a run glued to more digits is not one), so `4242 4242 4242 4242 12/25`
    still yields the card. Written in groups, a card number's groups are short (4-4-4-4,
    4-6-5): longer groups are other things, such as the all-digit stretches of a UUID."""
    begin = run.start()
    starts: list[int] = []
    groups: list[str] = []
    for group in _GROUP.finditer(run.group()):
        starts.append(begin + group.start())
        groups.append(group.group())
    found: list[PanMatch] = []
    i = 0
    while i < len(groups):
        best: PanMatch | None = None
        digits = ""
        for j in range(i, len(groups)):
            if j > i and (len(groups[j]) > _MAX_GROUP or len(groups[i]) > _MAX_GROUP):
                break
            digits += groups[j]
            if len(digits) > MAX_DIGITS:
                break
            if len(digits) < MIN_DIGITS:
                continue
            end = starts[j] + len(groups[j])
            if _glued(text, starts[i] - 1) or _glued(text, end):
                continue
            brand = brand_of(digits)
            if brand is not None and luhn_valid(digits):
                best = PanMatch(starts[i], end, digits, brand)
        if best is not None:
            found.append(best)
            while i < len(groups) and starts[i] < best.end:
                i += 1
        else:
            i += 1
    return found


def find_pans(text: str) -> list[PanMatch]:
    """Every card number in `text`: 13 to 19 digits (between groups of at most six digits, up
    to three whitespace, dash, dot or zero-width characters), Luhn-valid, in a major brand's
    range, and not glued to more letters or digits. Matches do not overlap and come in order."""
    found: list[PanMatch] = []
    for run in _RUN.finditer(text):
        found.extend(_in_run(text, run))
    return found


def contains_pan(text: str) -> bool:
    """Whether `text` holds a card number (see find_pans)."""
    return any(_in_run(text, run) for run in _RUN.finditer(text))


def mask_pan(pan: str) -> str:
    """The card number with everything but (at most) the first six and last four digits
    replaced by '*'. Separators are dropped; so are any characters that are not digits."""
    digits = "".join(ch for ch in pan if ch.isascii() and ch.isdigit())
    if len(digits) < MIN_DIGITS:
        return "*" * len(digits)
    return digits[:6] + "*" * (len(digits) - 10) + digits[-4:]


def redact_pans(text: str) -> str:
    """`text` with each card number replaced by its mask."""
    found = find_pans(text)
    if not found:
        return text
    parts: list[str] = []
    at = 0
    for match in found:
        parts.append(text[at : match.start])
        parts.append(match.masked)
        at = match.end
    parts.append(text[at:])
    return "".join(parts)
