"""Operators' passwords: what is accepted (PCI DSS v4 8.3.6, NIST SP 800-63B 5.1.1.2) and how it
is stored (argon2id, OWASP's parameters).

Accepted: 12 to 1,024 characters, used whole (never truncated), with at least one letter and
one digit; not among the 30,000 most common passwords (the list the `zxcvbn` package carries,
compared case-insensitively, no network look-up); not scored below 3 by zxcvbn, which also
penalises the operator's own email in the password; not one of the operator's last four.

Stored: argon2id via argon2-cffi, whose hashes carry their own parameters, so a hash made with
older parameters still verifies and `needs_rehash` tells the caller to store a new one at the
next successful sign-in.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from zxcvbn import zxcvbn  # type: ignore[import-untyped]
from zxcvbn.frequency_lists import FREQUENCY_LISTS  # type: ignore[import-untyped]

from strongroom.domain.errors import InvalidRequest

MIN_LENGTH = 12
MAX_LENGTH = 1024  # far above NIST's 64; only to bound the work one request can ask for
MIN_SCORE = 3
HISTORY = 4  # a new password may not be any of the last four
# zxcvbn examines at most this many characters (its own limit, which bounds its run time); the
# score of a longer password is that of its start, which only errs towards refusing.
_SCORED_PREFIX = 72
_LETTER = re.compile(r"[^\W\d_]")
_DIGIT = re.compile(r"\d")
_SEPARATORS = re.compile(r"[._+-]")


@dataclass(frozen=True)
class Argon2Parameters:
    """OWASP's first argon2id configuration: m=19 MiB, t=2, p=1."""

    time_cost: int = 2
    memory_kib: int = 19 * 1024
    parallelism: int = 1


class Passwords:
    def __init__(self, parameters: Argon2Parameters | None = None) -> None:
        p = parameters or Argon2Parameters()
        self._hasher = PasswordHasher(
            time_cost=p.time_cost, memory_cost=p.memory_kib, parallelism=p.parallelism
        )
        # Verified against when no operator matches, so an unknown email costs the same time.
        self._decoy = self._hasher.hash("strongroom decoy password 0")

    def check(self, password: str, *, email: str) -> None:
        """Raise InvalidRequest (param `password`, a reason the operator can act on) unless
        `password` meets the rules above other than history."""
        if len(password) < MIN_LENGTH:
            raise _refused(f"The password must be at least {MIN_LENGTH} characters long.")
        if len(password) > MAX_LENGTH:
            raise _refused(f"The password must be at most {MAX_LENGTH} characters long.")
        if not _LETTER.search(password) or not _DIGIT.search(password):
            raise _refused("The password must contain at least one letter and one digit.")
        if password.lower() in _common_passwords():
            raise _refused("This password is among the most common ones; choose another.")
        score = zxcvbn(password[:_SCORED_PREFIX], user_inputs=_personal(email))["score"]
        if score < MIN_SCORE:
            raise _refused("This password is too easy to guess; a longer passphrase is better.")

    def check_history(self, password: str, previous_hashes: Iterable[str]) -> None:
        for stored in previous_hashes:
            if self.verify(stored, password):
                raise _refused(
                    f"The password must differ from the last {HISTORY} passwords of this account."
                )

    def hash(self, password: str) -> str:
        return self._hasher.hash(password)

    def verify(self, stored: str, password: str) -> bool:
        try:
            return self._hasher.verify(stored, password)
        except (VerificationError, InvalidHashError):
            return False

    def verify_decoy(self, password: str) -> None:
        """Spend what a real verification spends, for an account that does not exist."""
        self.verify(self._decoy, password)

    def needs_rehash(self, stored: str) -> bool:
        return self._hasher.check_needs_rehash(stored)

    async def hash_async(self, password: str) -> str:
        """argon2 holds a core for tens of milliseconds: off the event loop."""
        return await asyncio.to_thread(self.hash, password)

    async def verify_async(self, stored: str | None, password: str) -> bool:
        if stored is None:
            await asyncio.to_thread(self.verify_decoy, password)
            return False
        return await asyncio.to_thread(self.verify, stored, password)


def _personal(email: str) -> list[str]:
    """What zxcvbn should treat as known words: the address, its local part, the local part's
    pieces and the pieces run together ("ada.lovelace" → "ada", "lovelace", "adalovelace")."""
    local = email.split("@", 1)[0]
    pieces = [p for p in _SEPARATORS.split(local) if p]
    return [email, local, *pieces, "".join(pieces)]


def _refused(message: str) -> InvalidRequest:
    return InvalidRequest(message, param="password", code="password_rejected")


@cache
def _common_passwords() -> frozenset[str]:
    return frozenset(word.lower() for word in FREQUENCY_LISTS["passwords"])
