"""Prefixed, opaque identifiers like Stripe's (`pi_…`, `re_…`, `cus_…`)."""

import secrets
import string

_ALPHABET = string.ascii_letters + string.digits


def new_id(prefix: str, length: int = 24) -> str:
    """A random identifier with a type prefix; 24 base62 characters carry ~142 bits."""
    return f"{prefix}_" + "".join(secrets.choice(_ALPHABET) for _ in range(length))
