"""Sign-in abuse defences (service_layer.login_throttle with service_layer.operators), on SQLite
and PostgreSQL (the two long runs on PostgreSQL alone): per-address and per-network windows, an
address that sprays many accounts slowed then blocked, counters shared through Redis by two app
processes' services, a credential-stuffing run, and no account enumeration in the answer or its
timing."""

from __future__ import annotations

import asyncio
import random
import statistics
import time
from collections.abc import AsyncIterator

import pyotp
import pytest
from limits.aio.storage import Storage

from strongroom.adapters.ratelimit import storage_from_url
from strongroom.bootstrap import Container
from strongroom.domain.audit import Origin
from strongroom.domain.errors import AuthenticationError, RateLimited
from strongroom.service_layer.login_throttle import BLOCK_AFTER, SLOW_AFTER, LoginThrottle
from strongroom.service_layer.operators import Operators
from strongroom.service_layer.passwords import Passwords
from strongroom.service_layer.second_factors import SecondFactors
from tests.integration.operators_support import fast_operators
from tests.support import FakeClock, service_missing, unique_name

PASSWORD = "Gl4cier-kettle-Orbit-77"
REDIS = "redis://127.0.0.1:6379/0"


def operators_for(container: Container, clock: FakeClock, storage: Storage) -> Operators:
    return fast_operators(container, clock, LoginThrottle(storage))


@pytest.fixture
def memory() -> Storage:
    return storage_from_url("memory://")


@pytest.fixture
async def redis_prefix() -> AsyncIterator[str]:
    """A key prefix of this test's own in the Redis at 127.0.0.1:6379; its keys are removed."""
    prefix = unique_name("strongroom_test")
    storage = storage_from_url(REDIS, key_prefix=prefix)
    if not await storage.check():
        service_missing("Redis at 127.0.0.1:6379", "it does not answer")
    yield prefix
    await storage.reset()


async def attempt(operators: Operators, email: str, password: str, ip: str) -> str:
    try:
        await operators.sign_in(email, password, origin=Origin(ip=ip))
    except AuthenticationError:
        return "refused"
    except RateLimited:
        return "throttled"
    return "signed_in"


async def test_twenty_attempts_per_address_in_five_minutes(
    container: Container, clock: FakeClock, memory: Storage
) -> None:
    operators = operators_for(container, clock, memory)
    outcomes = [
        await attempt(operators, "u@x.example", PASSWORD, "198.51.100.7") for _ in range(21)
    ]
    assert outcomes[:20] == ["refused"] * 20
    with pytest.raises(RateLimited) as caught:
        await operators.sign_in("u0@x.example", PASSWORD, origin=Origin(ip="198.51.100.7"))
    assert 1 <= caught.value.retry_after <= 300


async def test_one_network_shares_a_window(
    container: Container, clock: FakeClock, memory: Storage
) -> None:
    operators = operators_for(container, clock, memory)
    for n in range(100):  # 100 addresses of one /24, one attempt each
        assert await attempt(operators, "a@x.example", PASSWORD, f"203.0.113.{n}") == "refused"
    assert await attempt(operators, "a@x.example", PASSWORD, "203.0.113.200") == "throttled"
    assert await attempt(operators, "a@x.example", PASSWORD, "203.0.114.1") == "refused"
    v6 = [
        await attempt(operators, "a@x.example", PASSWORD, f"2001:db8:0:ff{n:02x}::1")
        for n in range(3)
    ]
    assert v6 == ["refused"] * 3  # one /56, well under its window


async def test_an_address_spraying_accounts_is_slowed_then_blocked(
    container: Container, clock: FakeClock, memory: Storage
) -> None:
    throttle = LoginThrottle(memory)
    ip = "192.0.2.50"
    for n in range(SLOW_AFTER):
        await throttle.admit(ip)
        await throttle.failed(ip, f"victim{n}@x.example")
    await throttle.admit(ip)  # slowed: one attempt per 10 s …
    with pytest.raises(RateLimited) as slowed:
        await throttle.admit(ip)  # … so the next at once is refused
    assert slowed.value.retry_after <= 10
    for n in range(SLOW_AFTER, BLOCK_AFTER):
        await throttle.failed(ip, f"victim{n}@x.example")
    with pytest.raises(RateLimited) as blocked:
        await throttle.admit(ip)
    assert blocked.value.retry_after > 10 * 60, "blocked for the rest of the hour"
    # The same account again and again is the lockout's business, not spraying.
    other = "192.0.2.51"
    for _ in range(BLOCK_AFTER):
        await throttle.failed(other, "victim0@x.example")
    await throttle.admit(other)


async def test_two_processes_share_the_counters_through_redis(
    container: Container, clock: FakeClock, redis_prefix: str
) -> None:
    first = operators_for(container, clock, storage_from_url(REDIS, key_prefix=redis_prefix))
    second = operators_for(container, clock, storage_from_url(REDIS, key_prefix=redis_prefix))
    ip = "198.51.100.99"
    outcomes = [
        await attempt(first if n % 2 else second, "z@x.example", PASSWORD, ip) for n in range(21)
    ]
    assert outcomes.count("refused") == 20
    assert outcomes[-1] == "throttled"


# PostgreSQL only (the production store): the defence does not depend on the database, and
# the run is long enough to be worth doing once.
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_credential_stuffing_gets_no_session_and_a_clean_operator_signs_in(
    container: Container, clock: FakeClock, memory: Storage
) -> None:
    """5,000 attempts over 500 accounts from 200 addresses, with a leaked list in which 20
    pairs are right. Every operator has TOTP (the second factor is required), so a right
    password gets the attacker only to the challenge, where guessing fails; addresses that
    spray end up blocked; a real operator elsewhere signs in with password and TOTP."""
    rng = random.Random(2026)
    operators = operators_for(container, clock, memory)
    factors = SecondFactors(
        container.uow, clock, container.envelope, operators, container.audit, code_key=b"k" * 32
    )
    merchant = await container.merchants.create_merchant("Stuffed Ltd")
    emails = [f"op{n}@stuffed.example" for n in range(500)]
    real = [f"Real-passw0rd-{n:03d}-kettle" for n in range(500)]
    made = await asyncio.gather(
        *(
            operators.create(merchant.id, e, "viewer", p)
            for e, p in zip(emails[:250], real[:250], strict=True)
        )
    )
    made += await asyncio.gather(
        *(
            operators.create(merchant.id, e, "viewer", p)
            for e, p in zip(emails[250:], real[250:], strict=True)
        )
    )
    seeds = {}
    for op in made[:20] + made[-1:]:  # the leaked ones, and the clean operator
        enrolment = await factors.begin_totp(op.id)
        await factors.confirm_totp(op.id, pyotp.TOTP(enrolment.secret).at(clock.now()))
        seeds[op.id] = enrolment.secret

    leaked = {emails[n]: real[n] for n in range(20)}  # 20 right pairs among the list
    targets = emails[:-1]  # the clean operator's account is never attacked
    addresses = [f"10.{a // 250}.{a % 250}.{rng.randrange(1, 255)}" for a in range(200)]
    attacks = []
    for n in range(5000):
        email = rng.choice(targets) if n >= 20 else emails[n]
        password = (
            leaked.get(email, f"Guess-{rng.randrange(10**6)}-word")
            if n < 40
            else f"Guess-{rng.randrange(10**6)}-word"
        )
        attacks.append((email, password, addresses[n % 200]))

    outcomes: dict[str, int] = {"refused": 0, "throttled": 0, "signed_in": 0}
    completed_sessions = 0
    for email, password, ip in attacks:
        try:
            op = await operators.sign_in(email, password, origin=Origin(ip=ip))
        except AuthenticationError:
            outcomes["refused"] += 1
            continue
        except RateLimited:
            outcomes["throttled"] += 1
            continue
        outcomes["signed_in"] += 1
        try:  # the attacker has no authenticator: a guess
            await factors.verify(op.id, f"{rng.randrange(10**6):06d}", origin=Origin(ip=ip))
            completed_sessions += 1
        except AuthenticationError:
            pass
    assert completed_sessions == 0, "no session past the second factor for the attacker"
    right_pairs = sum(1 for email, password, _ in attacks if leaked.get(email) == password)
    assert right_pairs >= 20
    assert outcomes["signed_in"] <= right_pairs
    # Each address sprays: after 5 accounts it is slowed, after 20 blocked, so most attempts
    # never reach a password check.
    assert outcomes["throttled"] >= 3500, outcomes

    blocked = 0
    throttle = operators.throttle
    assert throttle is not None
    for ip in addresses:
        try:
            await throttle.admit(ip)
        except RateLimited:
            blocked += 1
    assert blocked == len(addresses), "every spraying address is refused now"

    clean = made[-1]
    clock.advance(seconds=30)
    signed_in = await operators.sign_in(clean.email, real[-1], origin=Origin(ip="172.16.5.9"))
    await factors.verify(signed_in.id, pyotp.TOTP(seeds[clean.id]).at(clock.now()))


# PostgreSQL only (the production store): the defence does not depend on the database, and
# the run is long enough to be worth doing once.
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_an_unknown_and_a_known_account_take_the_same_time(container: Container) -> None:
    """200 tries each with the production argon2 parameters (the tests' settings are cheap),
    from addresses that no window holds back: the medians differ by less than 10%."""
    operators = Operators(
        container.uow,
        container.clock,
        Passwords(),
        container.audit,
        throttle=LoginThrottle(storage_from_url("memory://")),
    )
    merchant = await container.merchants.create_merchant("Timing Ltd")
    known = await operators.create(merchant.id, "known@timing.example", "viewer", PASSWORD)

    async def timed(email: str, n: int) -> float:
        started = time.perf_counter()
        with pytest.raises(AuthenticationError):
            await operators.sign_in(
                email, "Wrong-passw0rd-xyz", origin=Origin(ip=f"10.{n // 200}.{n % 200}.1")
            )
        return time.perf_counter() - started

    known_times, unknown_times = [], []
    for n in range(200):  # interleaved, so drift in the machine's speed weighs on both
        known_times.append(await timed(known.email, 2 * n))
        unknown_times.append(await timed("nobody@timing.example", 2 * n + 1))
    a, b = statistics.median(known_times), statistics.median(unknown_times)
    assert abs(a - b) / max(a, b) < 0.10, (a, b)


async def test_attempts_without_an_address_share_a_budget_and_odd_ones_do_not_fail(
    memory: Storage,
) -> None:
    throttle = LoginThrottle(memory)
    for _ in range(20):
        await throttle.admit(None)
    with pytest.raises(RateLimited):
        await throttle.admit(None)
    await throttle.admit("testclient")  # not an IP address: its own budget, no network
