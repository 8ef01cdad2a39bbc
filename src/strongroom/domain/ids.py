"""Prefixed, opaque identifiers like Stripe's (`pi_…`, `re_…`, `cus_…`), and the digest stored
in place of a bearer token."""

import hashlib
import secrets

_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def new_id(prefix: str, length: int = 24) -> str:
    """A random identifier with a type prefix; 24 base62 characters carry ~142 bits.

    One call to the OS's CSPRNG, base62-encoded: ids are minted on every write, so this is on
    the hot path."""
    n = int.from_bytes(secrets.token_bytes(length))  # 8 bits per character: ample headroom
    chars = []
    for _ in range(length):
        n, r = divmod(n, 62)
        chars.append(_ALPHABET[r])
    return f"{prefix}_" + "".join(chars)


def token_digest(token: str) -> str:
    """What is stored in place of a bearer token (a console session, an app token, an
    invitation link): its SHA-256 in hex. The tokens carry 256 random bits, so a fast hash
    suffices."""
    return hashlib.sha256(token.encode()).hexdigest()
