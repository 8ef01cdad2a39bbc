"""Operators' console sessions (service_layer.sessions) on SQLite and PostgreSQL, with a clock
the tests move: idle and absolute limits, rotation that kills the old token, a password change
that ends every session, listing and revoking, and CSRF tokens."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import select

from strongroom.adapters.db import tables as t
from strongroom.bootstrap import Container
from strongroom.domain.errors import AuthenticationError, ResourceMissing
from strongroom.service_layer.operators import Operator
from strongroom.service_layer.sessions import Sessions
from tests.integration.operators_support import fast_operators
from tests.support import FakeClock


@pytest.fixture
async def operator(container: Container, clock: FakeClock) -> Operator:
    operators = fast_operators(container, clock)
    merchant = await container.merchants.create_merchant("Sessions Ltd")
    return await operators.create(merchant.id, "s@example.com", "admin", "Gl4cier-kettle-Orbit-77")


@pytest.fixture
def sessions(container: Container) -> Sessions:
    return container.sessions


async def test_a_token_is_256_bits_and_stored_only_hashed(
    container: Container, sessions: Sessions, operator: Operator
) -> None:
    issued = await sessions.start(operator.id)
    assert len(issued.token) >= 43  # 32 bytes, base64url
    assert not issued.session.complete
    async with container.engines.write.connect() as conn:
        row = (await conn.execute(select(t.operator_sessions))).one()
    assert issued.token not in str(tuple(row))
    assert (await sessions.authenticate(issued.token)).id == issued.session.id


async def test_idle_for_15_minutes_ends_it_and_use_restarts_the_idle_clock(
    sessions: Sessions, operator: Operator, clock: FakeClock
) -> None:
    issued = await sessions.start(operator.id)
    clock.advance(minutes=14, seconds=59)
    await sessions.authenticate(issued.token)  # used: the idle clock starts again
    clock.advance(minutes=14, seconds=59)
    await sessions.authenticate(issued.token)
    clock.advance(minutes=15, seconds=1)
    with pytest.raises(AuthenticationError):
        await sessions.authenticate(issued.token)


async def test_twelve_hours_end_it_however_busy(
    sessions: Sessions, operator: Operator, clock: FakeClock
) -> None:
    issued = await sessions.start(operator.id)
    issued = await sessions.rotate(issued.token, second_factor=True)
    for _ in range(12 * 6 - 1):  # every 10 minutes, for 11 h 50 min
        clock.advance(minutes=10)
        await sessions.authenticate(issued.token)
    issued = await sessions.rotate(issued.token)  # a rotation keeps the sign-in's limit
    clock.advance(minutes=10)
    with pytest.raises(AuthenticationError):
        await sessions.authenticate(issued.token)


async def test_rotation_after_the_second_factor_kills_the_old_token(
    sessions: Sessions, operator: Operator
) -> None:
    first = await sessions.start(operator.id)
    second = await sessions.rotate(first.token, second_factor=True)
    assert second.token != first.token
    assert second.session.complete
    with pytest.raises(AuthenticationError):
        await sessions.authenticate(first.token)
    assert (await sessions.authenticate(second.token)).complete


async def test_racing_rotations_leave_one_session(sessions: Sessions, operator: Operator) -> None:
    first = await sessions.start(operator.id)
    results = await asyncio.gather(
        *(sessions.rotate(first.token) for _ in range(4)), return_exceptions=True
    )
    winners = [r for r in results if not isinstance(r, BaseException)]
    assert len(winners) == 1
    assert len(await sessions.list(operator.id)) == 1


async def test_a_password_change_ends_every_session_and_restart_keeps_the_sign_ins_limits(
    container: Container, sessions: Sessions, operator: Operator, clock: FakeClock
) -> None:
    laptop = await sessions.start(operator.id)
    laptop = await sessions.rotate(laptop.token, second_factor=True)
    phone = await sessions.start(operator.id)
    clock.advance(minutes=6)
    current = await sessions.authenticate(laptop.token)
    await fast_operators(container, clock).change_password(
        operator.id, "Gl4cier-kettle-Orbit-77", "Brand-new-Passw0rd-a"
    )
    fresh = await sessions.restart(current)
    for old in (laptop, phone):
        with pytest.raises(AuthenticationError):
            await sessions.authenticate(old.token)
    kept = await sessions.authenticate(fresh.token)
    assert kept.created_at == current.created_at, "the 12 hours still count from sign-in"
    assert kept.second_factor_at == current.second_factor_at
    assert not kept.stepped_up(clock.now()), "a password change is no second factor"
    assert [s.id for s in await sessions.list(operator.id)] == [fresh.session.id]


async def test_an_operator_lists_and_revokes_only_their_own_sessions(
    container: Container, sessions: Sessions, operator: Operator, clock: FakeClock
) -> None:
    laptop = await sessions.start(operator.id)
    clock.advance(seconds=1)
    phone = await sessions.start(operator.id)
    listed = await sessions.list(operator.id)
    assert [s.id for s in listed] == [phone.session.id, laptop.session.id]

    with pytest.raises(ResourceMissing):
        await sessions.revoke("op_someone_else", laptop.session.id)
    await sessions.revoke(operator.id, laptop.session.id)
    with pytest.raises(AuthenticationError):
        await sessions.authenticate(laptop.token)
    await sessions.authenticate(phone.token)
    with pytest.raises(ResourceMissing):
        await sessions.revoke(operator.id, laptop.session.id)  # already ended


async def test_csrf_tokens_belong_to_one_session_token(
    sessions: Sessions, operator: Operator
) -> None:
    first = await sessions.start(operator.id)
    csrf = sessions.csrf_token(first.token)
    assert sessions.csrf_ok(first.token, csrf)
    assert not sessions.csrf_ok(first.token, None)
    assert not sessions.csrf_ok(first.token, csrf[:-1] + ("A" if csrf[-1] != "A" else "B"))
    second = await sessions.rotate(first.token)
    assert not sessions.csrf_ok(second.token, csrf), "a rotation changes the CSRF token"
