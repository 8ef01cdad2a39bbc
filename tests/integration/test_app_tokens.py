"""Tokens for apps acting for an operator (service_layer.app_tokens) on SQLite and PostgreSQL:
refresh token rotation with reuse detection (RFC 9700 section 4.14), lifetimes on a clock the
tests move, and only hashes at rest."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import select

from strongroom.adapters.db import tables as t
from strongroom.bootstrap import Container
from strongroom.domain.errors import AuthenticationError, InvalidRequest
from strongroom.service_layer.app_tokens import INVALID_GRANT, AppTokens
from strongroom.service_layer.operators import Operator
from tests.integration.operators_support import fast_operators
from tests.support import FakeClock


@pytest.fixture
async def operator(container: Container, clock: FakeClock) -> Operator:
    operators = fast_operators(container, clock)
    merchant = await container.merchants.create_merchant("Apps Ltd")
    return await operators.create(merchant.id, "app@example.com", "developer", "Gl4cier-kettle-77")


@pytest.fixture
def tokens(container: Container) -> AppTokens:
    return container.app_tokens


async def refused(tokens: AppTokens, refresh_token: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        await tokens.refresh(refresh_token)
    assert caught.value.code == INVALID_GRANT


async def test_a_refresh_gives_a_new_pair_and_the_old_refresh_token_is_spent(
    tokens: AppTokens, operator: Operator
) -> None:
    first = await tokens.grant(operator.id)
    assert await tokens.authenticate(first.access_token) == operator.id
    second = await tokens.refresh(first.refresh_token)
    assert second.family_id == first.family_id
    assert {second.access_token, second.refresh_token}.isdisjoint(
        {first.access_token, first.refresh_token}
    )
    assert await tokens.authenticate(second.access_token) == operator.id


async def test_reusing_a_refresh_token_revokes_the_whole_family(
    container: Container, tokens: AppTokens, operator: Operator
) -> None:
    first = await tokens.grant(operator.id)
    second = await tokens.refresh(first.refresh_token)  # the legitimate app
    await refused(tokens, first.refresh_token)  # an attacker's copy of the old one

    await refused(tokens, second.refresh_token)  # the newer token is revoked too
    for access in (first.access_token, second.access_token):
        with pytest.raises(AuthenticationError):
            await tokens.authenticate(access)
    other = await tokens.grant(operator.id)  # another family is untouched
    assert await tokens.authenticate(other.access_token) == operator.id

    async with container.engines.write.connect() as conn:
        events = (
            await conn.execute(
                select(t.audit_events.c.outcome).where(
                    t.audit_events.c.event_type == "api:operator_token:reuse"
                )
            )
        ).all()
    assert [e.outcome for e in events] == ["failure"]


async def test_racing_exchanges_of_one_refresh_token_count_as_reuse(
    tokens: AppTokens, operator: Operator
) -> None:
    first = await tokens.grant(operator.id)
    results = await asyncio.gather(
        tokens.refresh(first.refresh_token),
        tokens.refresh(first.refresh_token),
        return_exceptions=True,
    )
    failures = [r for r in results if isinstance(r, InvalidRequest)]
    assert len(failures) >= 1
    for r in results:  # whoever won holds a revoked family now
        if not isinstance(r, BaseException):
            await refused(tokens, r.refresh_token)


async def test_lifetimes(tokens: AppTokens, operator: Operator, clock: FakeClock) -> None:
    pair = await tokens.grant(operator.id)
    assert pair.expires_in == 600
    clock.advance(minutes=10)
    with pytest.raises(AuthenticationError):
        await tokens.authenticate(pair.access_token)
    fresh = await tokens.refresh(pair.refresh_token)
    clock.advance(days=14)
    await refused(tokens, fresh.refresh_token)


async def test_unknown_tokens_and_only_hashes_at_rest(
    container: Container, tokens: AppTokens, operator: Operator
) -> None:
    pair = await tokens.grant(operator.id)
    await refused(tokens, "not-a-token")
    await refused(tokens, pair.access_token)  # an access token is no refresh token
    with pytest.raises(AuthenticationError):
        await tokens.authenticate(pair.refresh_token)
    async with container.engines.write.connect() as conn:
        dump = str((await conn.execute(select(t.operator_tokens))).all())
    assert pair.access_token not in dump
    assert pair.refresh_token not in dump


async def test_a_family_ends_thirty_days_after_its_grant(
    tokens: AppTokens, operator: Operator, clock: FakeClock
) -> None:
    pair = await tokens.grant(operator.id)
    for _ in range(4):  # refreshed weekly, each refresh token well inside its 14 days
        clock.advance(days=7)
        pair = await tokens.refresh(pair.refresh_token)
    clock.advance(days=2, seconds=1)  # 30 days and a second after the grant
    await refused(tokens, pair.refresh_token)
