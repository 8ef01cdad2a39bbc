"""The audit log on SQLite and PostgreSQL: events written with the changes they record, the
sequencer's signed tree heads, and RFC 9162 proofs from the API checked by the verifier in
tests/rfc9162.py (written from the RFC alone)."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import select, text

from strongroom.adapters.db import tables as t
from strongroom.adapters.gateways.sandbox import Fault
from strongroom.bootstrap import Container
from strongroom.domain.audit import AuditTag, tree_head_message
from strongroom.entrypoints import worker
from strongroom.service_layer.audit_sequencer import Sequencer
from strongroom.service_layer.merchants import KeyKind
from tests import rfc9162
from tests.support import FakeClock

PAY = {"amount": 2000, "currency": "usd", "payment_method": "tok_visa", "confirm": True}


async def audit_rows(container: Container) -> list[Any]:
    async with container.engines.read.connect() as conn:
        rows = await conn.execute(select(t.audit_events).order_by(t.audit_events.c.seq))
        return list(rows)


async def test_payments_and_refunds_are_recorded_with_who_where_and_what(
    container: Container, client: httpx.AsyncClient
) -> None:
    paid = await client.post("/v1/payment_intents", json=PAY)
    assert paid.status_code == 200
    pi = paid.json()["id"]
    refund = await client.post("/v1/refunds", json={"payment_intent": pi, "amount": 500})
    assert refund.status_code == 200

    rows = await audit_rows(container)
    by_type = {r.event_type: r for r in rows}
    created = by_type[AuditTag.PAYMENT_INTENT_CREATE]
    assert created.resource_type == "payment_intent"
    assert created.resource_id == pi
    assert created.actor_type == "api_key"
    assert created.actor_id.startswith("key_")
    assert created.outcome == "success"
    assert created.request_id == paid.headers["request-id"]
    assert created.ip == "127.0.0.1"
    assert created.details["amount"] == 2000
    assert created.details["confirm"] is True
    assert created.details["status"] == "succeeded"  # recorded once the gateway answered
    assert created.livemode is False
    refunded = by_type[AuditTag.REFUND_CREATE]
    assert refunded.resource_id == refund.json()["id"]
    assert refunded.details["payment_intent"] == pi
    assert refunded.details["amount"] == 500


async def test_a_refused_change_leaves_no_event(
    container: Container, client: httpx.AsyncClient
) -> None:
    before = len(await audit_rows(container))
    missing = await client.post("/v1/payment_intents", json={**PAY, "customer": "cus_nope"})
    assert missing.json()["error"]["code"] == "resource_missing"
    assert len(await audit_rows(container)) == before


async def test_failed_authentication_is_recorded_without_the_key(
    container: Container, client: httpx.AsyncClient, secret_key: str
) -> None:
    bogus = "sk_test_" + "A" * 43
    refused = await client.get("/v1/payment_intents", headers={"Authorization": f"Bearer {bogus}"})
    assert refused.status_code == 401
    again = await client.get("/v1/payment_intents", headers={"Authorization": f"Bearer {bogus}"})
    assert again.status_code == 401
    failures = [r for r in await audit_rows(container) if r.outcome == "failure"]
    assert len(failures) == 2
    first, second = failures
    assert first.event_type == AuditTag.API_KEY_AUTHENTICATE
    assert first.actor_type == "anonymous"
    assert first.merchant_id is None
    assert first.subject == second.subject  # repeats correlate through the pseudonym...
    assert bogus not in repr(first._mapping)  # ...never the key itself
    assert first.subject == container.audit.pseudonym(bogus)


async def test_key_creation_and_revocation_are_recorded(container: Container) -> None:
    merchant = await container.merchants.create_merchant("Keys Co")
    key = await container.merchants.create_key(merchant.id, KeyKind.SECRET, livemode=True)
    await container.merchants.revoke_key(key.id)
    rows = [r for r in await audit_rows(container) if r.merchant_id == merchant.id]
    assert [(r.event_type, r.resource_id) for r in rows] == [
        (AuditTag.API_KEY_CREATE, key.id),
        (AuditTag.API_KEY_REVOKE, key.id),
    ]
    assert rows[0].details == {"kind": "secret"}
    assert [r.livemode for r in rows] == [True, True]
    assert all(key.secret not in repr(r._mapping) for r in rows)


async def test_payment_events_can_be_turned_off_but_refunds_cannot(
    container: Container, client: httpx.AsyncClient
) -> None:
    container.payments.audit.payment_events = False
    pi = (await client.post("/v1/payment_intents", json=PAY)).json()["id"]
    await client.post("/v1/refunds", json={"payment_intent": pi})
    types = [r.event_type for r in await audit_rows(container)]
    assert AuditTag.PAYMENT_INTENT_CREATE not in types
    assert AuditTag.REFUND_CREATE in types


async def sequence(container: Container) -> int:
    return await container.sequencer.run_once()


async def test_merchants_list_only_their_own_events_and_reads_are_recorded(
    container: Container, client: httpx.AsyncClient
) -> None:
    other = await container.merchants.create_merchant("Other")
    other_key = await container.merchants.create_key(other.id, KeyKind.SECRET, livemode=False)
    await client.post("/v1/payment_intents", json=PAY)
    await client.post(
        "/v1/payment_intents", json=PAY, headers={"Authorization": f"Bearer {other_key.secret}"}
    )
    await sequence(container)

    page = (await client.get("/v1/audit/events", params={"limit": 100})).json()
    ids = {e["id"] for e in page["data"]}
    async with container.engines.read.connect() as conn:
        owners = set(
            (
                await conn.execute(
                    select(t.audit_events.c.merchant_id).where(t.audit_events.c.id.in_(ids))
                )
            ).scalars()
        )
    assert len(owners) == 1
    assert other.id not in owners
    created = next(e for e in page["data"] if e["type"] == AuditTag.PAYMENT_INTENT_CREATE)
    assert created["leaf_index"] is not None
    # A client can check the leaf hash from the event it was given.
    assert hashlib.sha256(b"\x00" + created["entry"].encode()).hexdigest() == created["leaf_hash"]

    reads = [r for r in await audit_rows(container) if r.event_type == AuditTag.AUDIT_LOG_READ]
    assert len(reads) == 1
    assert reads[0].details["read"] == "events"


async def test_a_test_key_never_lists_live_events(
    container: Container, client: httpx.AsyncClient, secret_key: str
) -> None:
    merchant_id = (await container.merchants.authenticate(secret_key)).caller.merchant_id
    live = await container.merchants.create_key(merchant_id, KeyKind.SECRET, livemode=True)
    as_live = {"Authorization": f"Bearer {live.secret}"}
    await client.post("/v1/payment_intents", json=PAY, headers=as_live)
    await client.post("/v1/payment_intents", json=PAY)

    test_view = (await client.get("/v1/audit/events", params={"limit": 100})).json()["data"]
    live_view = (
        await client.get("/v1/audit/events", params={"limit": 100}, headers=as_live)
    ).json()["data"]
    assert test_view
    assert live_view
    assert {e["livemode"] for e in test_view} == {False}
    assert {e["livemode"] for e in live_view} == {True}
    # A live event's id as a test-mode cursor names nothing.
    crossed = await client.get("/v1/audit/events", params={"starting_after": live_view[0]["id"]})
    assert crossed.json()["error"]["code"] == "resource_missing"


async def test_pagination_of_events(container: Container, client: httpx.AsyncClient) -> None:
    for _ in range(3):
        await client.post("/v1/customers", json={})
        await client.post("/v1/payment_intents", json={"amount": 100, "currency": "usd"})
    first = (await client.get("/v1/audit/events", params={"limit": 2})).json()
    assert first["has_more"] is True
    assert len(first["data"]) == 2
    second = (
        await client.get(
            "/v1/audit/events", params={"limit": 2, "starting_after": first["data"][-1]["id"]}
        )
    ).json()
    assert {e["id"] for e in first["data"]}.isdisjoint(e["id"] for e in second["data"])
    unknown = await client.get("/v1/audit/events", params={"starting_after": "aud_nope"})
    assert unknown.json()["error"]["code"] == "resource_missing"


def check_signed(head: dict[str, Any]) -> bytes:
    """The head's signature over RFC-style fields verifies with its public key."""
    root = bytes.fromhex(head["root_hash"])
    key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(head["public_key"]))
    message = tree_head_message(head["tree_size"], head["timestamp"], root)
    key.verify(bytes.fromhex(head["signature"]), message)  # raises if forged
    return root


# Past 32, so every proof shape of a tree crossing each power of two up to 2**5 is checked.
LARGEST_TREE = 33


# SQLite only: the proofs are computed in Python from the rows; PostgreSQL's handling of the
# same rows is covered by the other tests here, and this run is long.
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_proofs_from_the_api_verify_for_every_size_and_index(
    container: Container, client: httpx.AsyncClient, clock: FakeClock
) -> None:
    """One event per pass, so there is a signed head at every size 1..LARGEST_TREE; then every
    inclusion proof and every consistency proof verifies against those heads' signed roots."""
    assert await sequence(container) == 1  # the client's key creation: the head of size 1
    async with container.engines.read.connect() as conn:
        events = list((await conn.execute(select(t.audit_events.c.id))).scalars())
    for n in range(1, LARGEST_TREE):
        event = container.audit.event(AuditTag.API_KEY_CREATE, details={"n": n})
        await container.audit.record_alone(event)
        events.append(event.id)
        clock.advance(seconds=1)
        assert await sequence(container) == 1

    roots: dict[int, bytes] = {}
    leaf_hashes: dict[int, bytes] = {}
    async with container.engines.read.connect() as conn:
        for row in await conn.execute(select(t.audit_leaves)):
            leaf_hashes[row.leaf_index] = bytes.fromhex(row.leaf_hash)
    for size in range(1, LARGEST_TREE + 1):
        head = (await client.get("/v1/audit/tree_heads", params={"tree_size": size})).json()
        roots[size] = check_signed(head)
    latest = (await client.get("/v1/audit/tree_heads/latest")).json()
    assert latest["tree_size"] == LARGEST_TREE
    assert bytes.fromhex(latest["root_hash"]) == roots[LARGEST_TREE]

    for size in range(1, LARGEST_TREE + 1):
        for index in range(size):
            proof = (
                await client.get(f"/v1/audit/events/{events[index]}/proof?tree_size={size}")
            ).json()
            assert proof["leaf_index"] == index
            assert proof["tree_size"] == size
            path = [bytes.fromhex(h) for h in proof["inclusion_path"]]
            assert rfc9162.verify_inclusion(leaf_hashes[index], index, size, path, roots[size])
        for first in range(1, size):
            proof = (
                await client.get("/v1/audit/consistency", params={"first": first, "second": size})
            ).json()
            path = [bytes.fromhex(h) for h in proof["consistency_path"]]
            assert rfc9162.verify_consistency(first, size, path, roots[first], roots[size])
        same = await client.get("/v1/audit/consistency", params={"first": size, "second": size})
        assert same.json()["consistency_path"] == []  # RFC 9162: a tree is consistent with itself


async def test_proof_requests_outside_the_tree_are_refused(
    container: Container, client: httpx.AsyncClient
) -> None:
    first = container.audit.event(AuditTag.API_KEY_CREATE)
    await container.audit.record_alone(first)
    assert await sequence(container) == 2  # with the client's key creation
    second = container.audit.event(AuditTag.API_KEY_CREATE)
    await container.audit.record_alone(second)

    pending = await client.get(f"/v1/audit/events/{second.id}/proof")
    assert pending.status_code == 400
    assert pending.json()["error"]["code"] == "audit_event_pending"
    await sequence(container)
    too_small = await client.get(f"/v1/audit/events/{second.id}/proof?tree_size=2")
    assert too_small.status_code == 400
    assert too_small.json()["error"]["param"] == "tree_size"
    unsigned = await client.get(f"/v1/audit/events/{first.id}/proof?tree_size=7")
    assert unsigned.status_code == 400
    assert (await client.get("/v1/audit/events/aud_nope/proof")).status_code == 404
    assert (await client.get(f"/v1/audit/events/{first.id}/proof")).status_code == 200
    backwards = await client.get("/v1/audit/consistency", params={"first": 2, "second": 1})
    assert backwards.status_code == 400
    from_zero = await client.get("/v1/audit/consistency", params={"first": 0, "second": 1})
    assert from_zero.status_code == 400
    no_head = await client.get("/v1/audit/tree_heads", params={"tree_size": 9})
    assert no_head.json()["error"]["code"] == "resource_missing"


async def test_tree_heads_never_shrink_or_go_back_in_time(
    container: Container, clock: FakeClock
) -> None:
    for _ in range(3):
        await container.audit.record_alone(container.audit.event(AuditTag.API_KEY_CREATE))
        await sequence(container)
        clock.advance(seconds=-10)  # a clock stepping backwards
    assert await sequence(container) == 0  # nothing new: no new head
    async with container.engines.read.connect() as conn:
        heads = list(
            await conn.execute(select(t.audit_tree_heads).order_by(t.audit_tree_heads.c.tree_size))
        )
    assert [h.tree_size for h in heads] == [1, 2, 3]
    stamps = [h.timestamp_ms for h in heads]
    assert stamps == sorted(stamps)


async def test_concurrent_sequencers_integrate_each_event_once(container: Container) -> None:
    for _ in range(40):
        await container.audit.record_alone(container.audit.event(AuditTag.API_KEY_CREATE))
    rivals = [
        Sequencer(container.uow, container.clock, container.sequencer.keys, batch=7)
        for _ in range(4)
    ]
    for _ in range(10):
        await asyncio.gather(*(s.run_once() for s in rivals))
    async with container.engines.read.connect() as conn:
        leaves = list(await conn.execute(select(t.audit_leaves)))
    assert sorted(r.leaf_index for r in leaves) == list(range(40))
    assert len({r.event_seq for r in leaves}) == 40


async def test_an_event_committed_late_is_still_integrated(container: Container) -> None:
    """An event whose transaction commits after later events were sequenced (its seq is below
    the newest integrated one) gets the next leaf; nothing is skipped."""
    async with container.uow.transaction() as slow:
        await slow.repo.add_audit_event(container.audit.event(AuditTag.API_KEY_CREATE))
        if container.engines.write.dialect.name == "sqlite":
            await slow.commit()  # one writer at a time: commits cannot overtake each other
        else:
            async with container.uow.transaction() as fast:
                await fast.repo.add_audit_event(container.audit.event(AuditTag.API_KEY_REVOKE))
                await fast.commit()
            assert await sequence(container) == 1
            await slow.commit()
    assert await sequence(container) >= 1
    async with container.engines.read.connect() as conn:
        leaves = (await conn.execute(select(t.audit_leaves))).all()
        events = (await conn.execute(select(t.audit_events))).all()
    assert len(leaves) == len(events)


@pytest.mark.parametrize(
    "database_url", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
async def test_postgres_refuses_changes_to_the_audit_tables(container: Container) -> None:
    """PostgreSQL only: on SQLite nothing stops a writer with the file; audit verify is the
    defence there (test_audit_verify.py)."""
    for _ in range(2):  # two leaves, so there is a node above them
        await container.audit.record_alone(container.audit.event(AuditTag.API_KEY_CREATE))
    await sequence(container)
    for statement in (
        "UPDATE audit_events SET outcome = 'failure'",
        "DELETE FROM audit_events",
        "DELETE FROM audit_leaves",
        "UPDATE audit_tree_heads SET tree_size = 9",
        "DELETE FROM audit_nodes",
        "TRUNCATE audit_tree_heads CASCADE",
    ):
        async with container.engines.write.connect() as conn:
            with pytest.raises(Exception, match="append-only"):
                await conn.execute(text(statement))
            await conn.rollback()


async def test_a_failing_worker_loop_does_not_stop_the_sequencer(
    container: Container, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def gateway_down(limit: int = 100) -> int:
        raise ConnectionError("gateway unreachable")

    monkeypatch.setattr(container.payments, "recover", gateway_down)
    await container.audit.record_alone(container.audit.event(AuditTag.API_KEY_CREATE))
    done = await worker.run_once(container)
    assert "recovered" not in done
    assert done["sequenced"] == 1


async def test_one_event_per_request_with_the_gateways_outcome(
    container: Container, client: httpx.AsyncClient
) -> None:
    """A request that calls the gateway is recorded once, where the answer is applied, so its
    outcome is the real one: a decline is a failure, with its codes."""
    paid = (await client.post("/v1/payment_intents", json=PAY)).json()
    declined = await client.post(
        "/v1/payment_intents", json={**PAY, "payment_method": "tok_chargeDeclined"}
    )
    assert declined.status_code == 402
    refund = (await client.post("/v1/refunds", json={"payment_intent": paid["id"]})).json()

    rows = [r for r in await audit_rows(container) if r.actor_type == "api_key"]
    assert [(r.event_type, r.outcome, r.resource_id) for r in rows] == [
        (AuditTag.PAYMENT_INTENT_CREATE, "success", paid["id"]),
        (AuditTag.PAYMENT_INTENT_CREATE, "failure", declined.json()["error"]["payment_intent"]),
        (AuditTag.REFUND_CREATE, "success", refund["id"]),
    ]
    assert rows[1].details["decline_code"] == "generic_decline"
    assert rows[2].details["status"] == "succeeded"


async def test_a_request_finished_by_the_recovery_loop_is_recorded_as_its_caller(
    container: Container, client: httpx.AsyncClient, clock: FakeClock
) -> None:
    container.sandbox.inject(Fault.TIMEOUT_AFTER_CHARGE)
    lost = await client.post("/v1/payment_intents", json=PAY)
    assert lost.status_code == 502
    assert not [r for r in await audit_rows(container) if r.actor_type == "api_key"]
    clock.advance(minutes=5)
    assert (await worker.run_once(container))["recovered"] == 1

    (event,) = [r for r in await audit_rows(container) if r.actor_type == "api_key"]
    assert event.event_type == AuditTag.PAYMENT_INTENT_CREATE
    assert event.outcome == "success"
    assert event.request_id == lost.headers["request-id"]  # who asked, from where
    assert event.ip == "127.0.0.1"


async def test_an_idle_sequencer_takes_no_write_transaction(
    container: Container, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On SQLite a write transaction takes the database's one write lock; an idle worker must
    not take it every second."""
    await container.audit.record_alone(container.audit.event(AuditTag.API_KEY_CREATE))
    assert await sequence(container) >= 1
    writes = 0
    transaction = container.uow.transaction

    def counted() -> Any:
        nonlocal writes
        writes += 1
        return transaction()

    monkeypatch.setattr(container.uow, "transaction", counted)
    assert await sequence(container) == 0
    assert writes == 0
    await container.audit.record_alone(container.audit.event(AuditTag.API_KEY_CREATE))
    assert await sequence(container) == 1  # record_alone's own write, then the pass's
    assert writes == 2
