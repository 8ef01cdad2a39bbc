"""Operators and password sign-in (service_layer.operators) on SQLite and PostgreSQL, with a
clock the tests move: the PCI DSS 8.3.4 lockout, an owner's unlock, no enumeration in the
answer, password change with history, and the CLI that makes the first owner."""

from __future__ import annotations

import asyncio
import itertools
import json
from datetime import timedelta

import pytest
from sqlalchemy import select, text

from strongroom.adapters.db import tables as t
from strongroom.bootstrap import Container
from strongroom.domain.errors import (
    AuthenticationError,
    InvalidRequest,
    PermissionDenied,
    ResourceMissing,
)
from strongroom.service_layer.operators import SIGN_IN_REFUSED, Operator, Operators
from strongroom.service_layer.passwords import Argon2Parameters, Passwords
from tests.integration.operators_support import FAST, fast_operators
from tests.integration.test_cli import cli
from tests.support import FakeClock

PASSWORD = "Gl4cier-kettle-Orbit-77"
WRONG = "Wrong-but-long-enough-1"


@pytest.fixture
def operators(container: Container, clock: FakeClock) -> Operators:
    """The container's service with cheap argon2 parameters: these tests count attempts."""
    return fast_operators(container, clock)


@pytest.fixture
async def owner(container: Container, operators: Operators) -> Operator:
    merchant = await container.merchants.create_merchant("Operated Ltd")
    return await operators.create(merchant.id, "Owner@Example.com", "owner", PASSWORD)


async def _audit(container: Container, tag: str) -> list[tuple[str, str, str | None]]:
    async with container.engines.write.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT outcome, actor_type, details FROM audit_events WHERE event_type = :t "
                "ORDER BY occurred_at, id"
            ),
            {"t": tag},
        )
        return [tuple(r) for r in rows]


def _details(raw: object) -> dict[str, object]:
    parsed = json.loads(raw) if isinstance(raw, str) else raw
    return parsed if isinstance(parsed, dict) else {}


async def test_the_right_password_signs_in(operators: Operators, owner: Operator) -> None:
    signed_in = await operators.sign_in("  OWNER@example.com ", PASSWORD)
    assert signed_in.id == owner.id
    assert owner.email == "owner@example.com"


async def test_ten_failures_lock_for_thirty_minutes(
    container: Container, operators: Operators, owner: Operator, clock: FakeClock
) -> None:
    for _ in range(10):
        with pytest.raises(AuthenticationError, match=SIGN_IN_REFUSED):
            await operators.sign_in(owner.email, WRONG)
    locked_at = clock.now()

    # The 11th attempt, with the right password: refused, and so at 29:59.
    with pytest.raises(AuthenticationError, match=SIGN_IN_REFUSED):
        await operators.sign_in(owner.email, PASSWORD)
    clock.advance(minutes=29, seconds=59)
    with pytest.raises(AuthenticationError, match=SIGN_IN_REFUSED):
        await operators.sign_in(owner.email, PASSWORD)

    clock.current = locked_at
    clock.advance(minutes=30)
    assert (await operators.sign_in(owner.email, PASSWORD)).failed_sign_ins == 0

    failures = await _audit(container, "console:operator:sign_in")
    reasons = [_details(d).get("reason") for *_, d in failures]
    assert reasons.count("wrong_password") == 10
    assert reasons.count("locked") == 2
    assert len(await _audit(container, "console:operator:lock")) == 1


async def test_a_failure_after_the_lock_runs_out_starts_a_new_count(
    operators: Operators, owner: Operator, clock: FakeClock
) -> None:
    for _ in range(10):
        with pytest.raises(AuthenticationError):
            await operators.sign_in(owner.email, WRONG)
    clock.advance(minutes=30)
    with pytest.raises(AuthenticationError):
        await operators.sign_in(owner.email, WRONG)
    assert (await operators.get(owner.id)).failed_sign_ins == 1
    assert (await operators.sign_in(owner.email, PASSWORD)).locked_until is None


async def test_racing_failures_are_all_counted(operators: Operators, owner: Operator) -> None:
    async def attempt() -> None:
        with pytest.raises(AuthenticationError):
            await operators.sign_in(owner.email, WRONG)

    await asyncio.gather(*(attempt() for _ in range(10)))
    locked = await operators.get(owner.id)
    assert locked.failed_sign_ins == 10
    assert locked.locked_until is not None


async def test_an_owner_unlocks_at_once_and_nobody_else_can(
    container: Container, operators: Operators, owner: Operator
) -> None:
    clerk = await operators.create(owner.merchant_id, "clerk@example.com", "support", PASSWORD)
    elsewhere = await container.merchants.create_merchant("Elsewhere")
    stranger = await operators.create(elsewhere.id, "boss@elsewhere.com", "owner", PASSWORD)
    for _ in range(10):
        with pytest.raises(AuthenticationError):
            await operators.sign_in(clerk.email, WRONG)

    with pytest.raises(PermissionDenied):
        await operators.unlock(clerk.id, clerk.id)
    with pytest.raises(ResourceMissing):  # another merchant's operator: as if unknown
        await operators.unlock(stranger.id, clerk.id)
    await operators.unlock(owner.id, clerk.id)
    assert (await operators.sign_in(clerk.email, PASSWORD)).id == clerk.id
    [(outcome, actor, _)] = await _audit(container, "console:operator:unlock")
    assert (outcome, actor) == ("success", "user")


async def test_unknown_locked_and_wrong_get_the_same_answer(
    operators: Operators, owner: Operator
) -> None:
    answers = []
    for email, password in (("nobody@example.com", PASSWORD), (owner.email, WRONG)):
        with pytest.raises(AuthenticationError) as caught:
            await operators.sign_in(email, password)
        answers.append((type(caught.value), caught.value.message, caught.value.code))
    assert answers[0] == answers[1]


async def test_password_change_needs_the_current_one_and_refuses_the_last_four(
    container: Container, operators: Operators, owner: Operator
) -> None:
    with pytest.raises(AuthenticationError):
        await operators.change_password(owner.id, WRONG, "Brand-new-Passw0rd-a")
    with pytest.raises(InvalidRequest, match="at least 12"):
        await operators.change_password(owner.id, PASSWORD, "short1")

    history = [PASSWORD, "Second-Passw0rd-bb", "Third-Passw0rd-ccc", "Fourth-Passw0rd-dd"]
    for current, new in itertools.pairwise(history):
        await operators.change_password(owner.id, current, new)
    for reused in history:  # the current one and the three before it
        with pytest.raises(InvalidRequest, match="last 4"):
            await operators.change_password(owner.id, history[-1], reused)
    await operators.change_password(owner.id, history[-1], "Fifth-Passw0rd-eeee")
    # PASSWORD is now five back: allowed again.
    await operators.change_password(owner.id, "Fifth-Passw0rd-eeee", PASSWORD)
    assert (await operators.sign_in(owner.email, PASSWORD)).id == owner.id

    async with container.engines.write.connect() as conn:
        kept = (await conn.execute(select(t.operator_password_history))).all()
        stored = (await conn.execute(select(t.operators.c.password_hash))).scalar_one()
    assert len(kept) == 3, "only what the rule compares is kept"
    assert stored.startswith("$argon2id$")
    assert all(PASSWORD not in row.password_hash for row in kept)


async def test_sign_in_rehashes_with_new_parameters(
    container: Container, operators: Operators, owner: Operator, clock: FakeClock
) -> None:
    stronger = Operators(
        container.uow,
        clock,
        Passwords(Argon2Parameters(time_cost=2, memory_kib=16, parallelism=1)),
        container.audit,
    )
    await stronger.sign_in(owner.email, PASSWORD)
    async with container.engines.write.connect() as conn:
        stored = (await conn.execute(select(t.operators.c.password_hash))).scalar_one()
    assert "t=2" in stored
    assert (await stronger.sign_in(owner.email, PASSWORD)).id == owner.id


async def test_create_refuses_bad_input_and_writes_nothing(
    container: Container, operators: Operators, owner: Operator
) -> None:
    for email, role, password, param in (
        ("not-an-address", "owner", PASSWORD, "email"),
        ("new@example.com", "emperor", PASSWORD, "role"),
        ("new@example.com", "admin", "password1234", "password"),
        ("OWNER@example.com", "admin", PASSWORD, "email"),  # taken, whatever the case
    ):
        with pytest.raises(InvalidRequest) as caught:
            await operators.create(owner.merchant_id, email, role, password)
        assert caught.value.param == param
    async with container.engines.write.connect() as conn:
        assert len((await conn.execute(select(t.operators))).all()) == 1


# One store: the command's parsing and output do not depend on it; the service layer under it
# runs on both stores in the other tests, and each run starts processes.
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_the_cli_creates_the_first_owner(container: Container, database_url: str) -> None:
    merchant = await container.merchants.create_merchant("Cli Operators")
    args = ("operators", "create", "--merchant", merchant.id, "--email", "first@example.com")
    made = cli(database_url, *args, "--json", stdin=f"{PASSWORD}\n{PASSWORD}\n")
    assert made.returncode == 0, made.stderr
    assert json.loads(made.stdout)["role"] == "owner"
    assert PASSWORD not in made.stdout + made.stderr
    signed_in = await container.operators.sign_in("first@example.com", PASSWORD)
    assert signed_in.merchant_id == merchant.id

    weak = cli(database_url, *args[:-1], "second@example.com", stdin="password1234\npassword1234\n")
    assert weak.returncode != 0
    assert "most common" in weak.stderr


async def test_wrong_current_passwords_count_towards_the_lock(
    operators: Operators, owner: Operator
) -> None:
    for _ in range(10):
        with pytest.raises(AuthenticationError):
            await operators.change_password(owner.id, WRONG, "Brand-new-Passw0rd-a")
    with pytest.raises(AuthenticationError):
        await operators.sign_in(owner.email, PASSWORD)
    with pytest.raises(AuthenticationError):
        await operators.change_password(owner.id, PASSWORD, "Brand-new-Passw0rd-a")


async def test_a_sign_in_that_races_a_lock_is_refused(
    container: Container, clock: FakeClock, owner: Operator
) -> None:
    """Racing failures lock the account while this sign-in's (right) password is being
    checked: the success must not clear the lock."""

    class Racing(Passwords):
        async def verify_async(self, stored: str | None, password: str) -> bool:
            right = await super().verify_async(stored, password)
            async with container.engines.write.begin() as conn:
                await conn.execute(
                    t.operators.update().values(locked_until=clock.now() + timedelta(minutes=30))
                )
            return right

    racing = Operators(container.uow, clock, Racing(FAST), container.audit)
    with pytest.raises(AuthenticationError):
        await racing.sign_in(owner.email, PASSWORD)
    assert (await racing.get(owner.id)).locked_at(clock.now())


async def test_a_password_or_role_change_ends_that_operators_app_tokens(
    container: Container, operators: Operators, owner: Operator
) -> None:
    clerk = await operators.create(owner.merchant_id, "c@example.com", "support", PASSWORD)
    tokens = container.app_tokens

    owners, clerks = await tokens.grant(owner.id), await tokens.grant(clerk.id)
    await operators.change_password(owner.id, PASSWORD, "Brand-new-Passw0rd-a")
    with pytest.raises(AuthenticationError):
        await tokens.authenticate(owners.access_token)
    assert await tokens.authenticate(clerks.access_token) == clerk.id

    await operators.change_role(owner.id, clerk.id, "viewer")
    with pytest.raises(AuthenticationError):
        await tokens.authenticate(clerks.access_token)
