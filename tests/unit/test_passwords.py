"""The password policy and argon2id storage (service_layer.passwords); no I/O."""

from __future__ import annotations

import pytest

from strongroom.domain.errors import InvalidRequest
from strongroom.service_layer.passwords import Argon2Parameters, Passwords

# Cheap parameters: these tests are about the rules, not the cost.
FAST = Argon2Parameters(time_cost=1, memory_kib=8, parallelism=1)
EMAIL = "ada.lovelace@example.com"
GOOD = "Gl4cier-kettle-Orbit-77"


@pytest.fixture(scope="module")
def passwords() -> Passwords:
    return Passwords(FAST)


def refusal(passwords: Passwords, password: str, email: str = EMAIL) -> str:
    with pytest.raises(InvalidRequest) as caught:
        passwords.check(password, email=email)
    assert caught.value.param == "password"
    return caught.value.message


def test_a_strong_passphrase_is_accepted(passwords: Passwords) -> None:
    passwords.check(GOOD, email=EMAIL)


@pytest.mark.parametrize(
    ("password", "says"),
    [
        ("Sh0rt-pass!", "at least 12 characters"),
        ("correct-horse-battery-staple", "letter and one digit"),
        ("1234567890123", "letter and one digit"),
        ("password1234", "most common"),  # in zxcvbn's 30,000, compared case-insensitively
        ("PASSWORD1234", "most common"),
        ("aaaaaaaaaaaa1", "too easy"),  # zxcvbn scores a repeat low
        ("adalovelace2026", "too easy"),  # the operator's own address
        ("x1" * 513, "at most 1024"),
    ],
)
def test_weak_passwords_are_refused_with_a_reason(
    passwords: Passwords, password: str, says: str
) -> None:
    assert says in refusal(passwords, password)


def test_a_long_password_is_used_whole(passwords: Passwords) -> None:
    """Never truncated: 200 characters, differing only in the last one, do not match."""
    long = "Gl4cier-kettle-" * 13 + "Z"
    passwords.check(long, email=EMAIL)
    stored = passwords.hash(long)
    assert passwords.verify(stored, long)
    assert not passwords.verify(stored, long[:-1] + "Y")
    assert not passwords.verify(stored, long[:72])  # bcrypt's limit, for one


def test_stored_as_argon2id_and_rehashed_when_parameters_change(passwords: Passwords) -> None:
    stored = passwords.hash(GOOD)
    assert stored.startswith("$argon2id$")
    assert GOOD not in stored
    assert not passwords.needs_rehash(stored)
    stronger = Passwords(Argon2Parameters(time_cost=2, memory_kib=16, parallelism=1))
    assert stronger.verify(stored, GOOD), "old hashes keep verifying"
    assert stronger.needs_rehash(stored)


def test_history_refuses_an_earlier_password(passwords: Passwords) -> None:
    earlier = [passwords.hash(p) for p in ("Old-pass-number-1", "Old-pass-number-2")]
    with pytest.raises(InvalidRequest, match="last 4"):
        passwords.check_history("Old-pass-number-2", earlier)
    passwords.check_history(GOOD, earlier)


def test_a_malformed_stored_hash_never_verifies(passwords: Passwords) -> None:
    assert not passwords.verify("not a hash", GOOD)
