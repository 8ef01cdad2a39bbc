"""Operators' TOTP and recovery codes (service_layer.second_factors) on SQLite and PostgreSQL,
with a clock the tests move: enrolment, each code accepted once, drift of one step, recovery
codes that work once, the seed sealed at rest, and a failed second factor audited and emitted
as an event."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pyotp
import pytest
from sqlalchemy import select, text

from strongroom.adapters.db import tables as t
from strongroom.bootstrap import Container
from strongroom.domain.audit import Origin
from strongroom.domain.errors import AuthenticationError, IllegalTransition
from strongroom.service_layer.operators import Operator
from strongroom.service_layer.second_factors import SecondFactors
from tests.integration.operators_support import fast_operators
from tests.support import FakeClock

PASSWORD = "Gl4cier-kettle-Orbit-77"
START = datetime(2026, 3, 1, 9, 0, 0, tzinfo=UTC)  # on a 30 s boundary


@pytest.fixture
def factors(container: Container, clock: FakeClock) -> SecondFactors:
    clock.current = START
    operators = fast_operators(container, clock)
    return SecondFactors(
        container.uow, clock, container.envelope, operators, container.audit, code_key=b"k" * 32
    )


@pytest.fixture
async def operator(container: Container, factors: SecondFactors) -> Operator:
    merchant = await container.merchants.create_merchant("Two Factor Ltd")
    return await factors.operators.create(merchant.id, "ops@example.com", "admin", PASSWORD)


def code_at(secret: str, moment: datetime) -> str:
    return pyotp.TOTP(secret).at(moment)


async def enrolled(factors: SecondFactors, operator: Operator) -> tuple[str, list[str]]:
    enrolment = await factors.begin_totp(operator.id)
    codes = await factors.confirm_totp(operator.id, code_at(enrolment.secret, START))
    return enrolment.secret, codes


async def test_enrolment_gives_an_otpauth_uri_and_ten_recovery_codes(
    container: Container, factors: SecondFactors, operator: Operator
) -> None:
    enrolment = await factors.begin_totp(operator.id)
    uri = urlsplit(enrolment.uri)
    assert (uri.scheme, uri.netloc) == ("otpauth", "totp")
    query = parse_qs(uri.query)
    assert query["secret"] == [enrolment.secret]
    assert query["issuer"] == ["Strongroom"]
    assert len(enrolment.secret) == 32  # 160 bits

    with pytest.raises(AuthenticationError):
        await factors.confirm_totp(operator.id, "000000")
    codes = await factors.confirm_totp(operator.id, code_at(enrolment.secret, START))
    assert len(codes) == len(set(codes)) == 10
    with pytest.raises(IllegalTransition):
        await factors.begin_totp(operator.id)  # in force: no second enrolment

    async with container.engines.write.connect() as conn:
        raw = (await conn.execute(text("SELECT * FROM operators"))).one()
        stored_codes = (await conn.execute(select(t.operator_recovery_codes))).all()
    assert enrolment.secret not in str(tuple(raw)), "the seed is stored only sealed"
    assert raw.totp_seed
    assert not {c for c in codes} & {r.code_hash for r in stored_codes}


async def test_a_totp_code_is_accepted_once(
    factors: SecondFactors, operator: Operator, clock: FakeClock
) -> None:
    secret, _ = await enrolled(factors, operator)
    clock.advance(seconds=30)
    code = code_at(secret, clock.now())
    await factors.verify(operator.id, code)
    with pytest.raises(AuthenticationError):
        await factors.verify(operator.id, code)
    # Nor an older step's code, though still inside the drift window.
    with pytest.raises(AuthenticationError):
        await factors.verify(operator.id, code_at(secret, START))
    clock.advance(seconds=30)
    await factors.verify(operator.id, code_at(secret, clock.now()))


async def test_one_step_of_drift_either_way_and_no_more(
    factors: SecondFactors, operator: Operator, clock: FakeClock
) -> None:
    secret, _ = await enrolled(factors, operator)
    clock.advance(minutes=10)
    now = clock.now()
    await factors.verify(operator.id, code_at(secret, now.timestamp() + 30))  # phone ahead
    clock.advance(minutes=10)
    now = clock.now()
    with pytest.raises(AuthenticationError):
        await factors.verify(operator.id, code_at(secret, now.timestamp() - 60))
    await factors.verify(operator.id, code_at(secret, now.timestamp() - 30))  # phone behind


async def test_racing_uses_of_one_code_let_one_through(
    factors: SecondFactors, operator: Operator, clock: FakeClock
) -> None:
    secret, _ = await enrolled(factors, operator)
    clock.advance(seconds=30)
    code = code_at(secret, clock.now())
    results = await asyncio.gather(
        *(factors.verify(operator.id, code) for _ in range(5)), return_exceptions=True
    )
    assert sum(r is None for r in results) == 1
    assert all(isinstance(r, AuthenticationError) for r in results if r is not None)


async def test_a_recovery_code_works_once(factors: SecondFactors, operator: Operator) -> None:
    _, codes = await enrolled(factors, operator)
    await factors.verify(operator.id, codes[0].upper())  # typed in capitals: still the code
    with pytest.raises(AuthenticationError):
        await factors.verify(operator.id, codes[0])
    await factors.verify(operator.id, codes[1].replace("-", ""))
    assert await factors.recovery_codes_left(operator.id) == 8


async def test_a_failed_second_factor_is_audited_and_emitted(
    container: Container, factors: SecondFactors, operator: Operator
) -> None:
    await enrolled(factors, operator)
    with pytest.raises(AuthenticationError):
        await factors.verify(operator.id, "123456", origin=Origin(ip="203.0.113.9"))
    async with container.engines.write.connect() as conn:
        events = (
            await conn.execute(
                select(t.outbox.c.type, t.outbox.c.data).where(
                    t.outbox.c.type == "operator.second_factor_failed"
                )
            )
        ).all()
        audit = (
            await conn.execute(
                text("SELECT outcome FROM audit_events WHERE event_type = :t"),
                {"t": "console:operator:second_factor"},
            )
        ).all()
    [(_, data)] = events
    payload: Any = data
    assert payload["id"] == operator.id
    assert payload["ip"] == "203.0.113.9"
    assert [a.outcome for a in audit] == ["failure"]


async def test_nothing_passes_before_enrolment_is_confirmed(
    factors: SecondFactors, operator: Operator
) -> None:
    enrolment = await factors.begin_totp(operator.id)
    with pytest.raises(AuthenticationError):
        await factors.verify(operator.id, code_at(enrolment.secret, START))


async def test_five_wrong_answers_lock_the_account_and_end_its_sessions_and_tokens(
    container: Container, factors: SecondFactors, operator: Operator, clock: FakeClock
) -> None:
    secret, _ = await enrolled(factors, operator)
    session = await container.sessions.start(operator.id)
    tokens = await container.app_tokens.grant(operator.id)
    for _ in range(4):
        with pytest.raises(AuthenticationError):
            await factors.verify(operator.id, "000000")
    clock.advance(seconds=30)
    await factors.verify(operator.id, code_at(secret, clock.now()))  # a success resets the count
    for _ in range(5):
        with pytest.raises(AuthenticationError):
            await factors.verify(operator.id, "000000")
    locked = await factors.operators.get(operator.id)
    assert locked.locked_at(clock.now())
    with pytest.raises(AuthenticationError):
        await container.sessions.authenticate(session.token)
    with pytest.raises(AuthenticationError):
        await container.app_tokens.authenticate(tokens.access_token)
    with pytest.raises(AuthenticationError):
        await factors.operators.sign_in(operator.email, PASSWORD)


async def test_a_seed_replaced_during_confirmation_is_not_put_in_force(
    container: Container, factors: SecondFactors, operator: Operator
) -> None:
    """Another tab starts a new enrolment between this one's read and its write: the code was
    checked against the old seed, so nothing is confirmed."""
    first = await factors.begin_totp(operator.id)

    class Raced(SecondFactors):
        async def _totp_state(self, operator: Operator) -> Any:
            state = await super()._totp_state(operator)
            await factors.begin_totp(operator.id)  # the other tab
            return state

    raced = Raced(
        container.uow,
        factors.clock,
        container.envelope,
        factors.operators,
        container.audit,
        code_key=b"k" * 32,
    )
    with pytest.raises(IllegalTransition):
        await raced.confirm_totp(operator.id, code_at(first.secret, START))
    assert not await factors.enrolled(operator.id)
    assert await factors.recovery_codes_left(operator.id) == 0
