"""`audit verify` catches every kind of tampering with the log: on SQLite, where nothing stops
a writer, and on PostgreSQL with the append-only trigger disabled by the test (as a superuser
could)."""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, text

from strongroom.adapters.db import tables as t
from strongroom.adapters.db.audit_store import AuditStore, TreeHead, event_from_row
from strongroom.bootstrap import Container
from strongroom.domain.audit import AuditTag
from strongroom.domain.merkle import leaf_hash
from strongroom.service_layer.audit_sequencer import AuditLogDamaged, Sequencer
from strongroom.service_layer.audit_verify import KnownHead, VerifyReport, verify_log
from tests.integration.test_cli import cli
from tests.support import FakeClock


async def build_log(container: Container, clock: FakeClock, events: int = 12) -> None:
    """`events` events, sequenced in passes of three, so there are several signed heads."""
    for n in range(events):
        await container.audit.record_alone(
            container.audit.event(AuditTag.API_KEY_CREATE, details={"n": n})
        )
        clock.advance(seconds=1)
        if n % 3 == 2:
            await container.sequencer.run_once()


async def verify(container: Container) -> VerifyReport:
    return await verify_log(container.uow, container.envelope)


async def tamper(container: Container, *statements: str | None, **params: Any) -> None:
    """Run SQL as a forger with direct access would: on SQLite through the sqlite3 module on the
    file (foreign keys off, as sqlite3 defaults); on PostgreSQL with the append-only triggers
    disabled first."""
    url = container.engines.write.url
    if url.get_backend_name() == "sqlite":
        assert url.database is not None
        with sqlite3.connect(url.database) as db:
            for statement in statements:
                if statement is not None:
                    db.execute(statement, params)
        return
    async with container.engines.write.connect() as conn:
        for table in t.AUDIT_TABLES:
            await conn.execute(text(f"ALTER TABLE {table} DISABLE TRIGGER USER"))
        for statement in statements:
            if statement is not None:
                await conn.execute(text(statement), params)
        await conn.commit()


async def head_root(container: Container, size: int) -> str:
    """Tree head `size`'s root hash, as a client would have saved it."""
    async with container.engines.read.connect() as conn:
        return str(
            (
                await conn.execute(
                    select(t.audit_tree_heads.c.root_hash).where(
                        t.audit_tree_heads.c.tree_size == size
                    )
                )
            ).scalar_one()
        )


async def leaf_row(container: Container, index: int) -> Any:
    async with container.engines.read.connect() as conn:
        return (
            await conn.execute(select(t.audit_leaves).where(t.audit_leaves.c.leaf_index == index))
        ).one()


async def test_an_untouched_log_verifies(container: Container, clock: FakeClock) -> None:
    await build_log(container, clock)
    report = await verify(container)
    assert report.ok, report.problem
    assert (report.entries, report.tree_heads, report.pending) == (12, 4, 0)


async def test_editing_a_field_is_detected(container: Container, clock: FakeClock) -> None:
    await build_log(container, clock)
    leaf = await leaf_row(container, 4)
    await tamper(
        container, "UPDATE audit_events SET outcome = 'failure' WHERE seq = :s", s=leaf.event_seq
    )
    report = await verify(container)
    assert report.problem is not None
    assert report.problem.startswith("leaf 4 ")


async def test_editing_a_field_and_its_leaf_hash_is_detected(
    container: Container, clock: FakeClock
) -> None:
    await build_log(container, clock)
    leaf = await leaf_row(container, 4)
    await tamper(
        container,
        "UPDATE audit_events SET outcome = 'failure' WHERE seq = :s",
        s=leaf.event_seq,
    )
    async with container.engines.read.connect() as conn:
        row = (
            await conn.execute(select(t.audit_events).where(t.audit_events.c.seq == leaf.event_seq))
        ).one()
    forged = leaf_hash(event_from_row(row).entry()).hex()
    await tamper(container, "UPDATE audit_leaves SET leaf_hash = :h WHERE leaf_index = 4", h=forged)
    report = await verify(container)
    assert report.problem is not None
    assert report.problem.startswith("tree head 6: root hash does not match")


async def test_deleting_a_row_is_detected(container: Container, clock: FakeClock) -> None:
    await build_log(container, clock)
    leaf = await leaf_row(container, 7)
    await tamper(
        container,
        "DELETE FROM audit_leaves WHERE leaf_index = 7",
        "DELETE FROM audit_events WHERE seq = :s",
        s=leaf.event_seq,
    )
    report = await verify(container)
    assert report.problem == "leaf 7: missing (the next leaf stored is 8)"


async def test_deleting_the_newest_rows_is_detected(container: Container, clock: FakeClock) -> None:
    await build_log(container, clock)
    leaf = await leaf_row(container, 11)
    await tamper(
        container,
        "DELETE FROM audit_leaves WHERE leaf_index = 11",
        "DELETE FROM audit_events WHERE seq = :s",
        s=leaf.event_seq,
    )
    report = await verify(container)
    assert report.problem is not None
    assert report.problem.startswith("tree head 12: the log has")


async def test_deleting_an_event_but_not_its_leaf_is_detected(
    container: Container, clock: FakeClock
) -> None:
    await build_log(container, clock)
    leaf = await leaf_row(container, 2)
    await tamper(
        container,
        _without_foreign_keys(container),
        "DELETE FROM audit_events WHERE seq = :s",
        s=leaf.event_seq,
    )
    report = await verify(container)
    assert report.problem is not None
    assert report.problem.startswith("leaf 2: its event")


async def test_swapping_two_rows_is_detected(container: Container, clock: FakeClock) -> None:
    await build_log(container, clock)
    two, five = await leaf_row(container, 2), await leaf_row(container, 5)
    # Swap the two leaves whole (event and hash): each leaf still matches its own entry, but
    # the order under the signed root has changed.
    statements = [
        _without_foreign_keys(container),
        "UPDATE audit_leaves SET event_seq = -1 WHERE leaf_index = 2",
        "UPDATE audit_leaves SET event_seq = :a WHERE leaf_index = 5",
        "UPDATE audit_leaves SET event_seq = :b WHERE leaf_index = 2",
        "UPDATE audit_leaves SET leaf_hash = :ha WHERE leaf_index = 5",
        "UPDATE audit_leaves SET leaf_hash = :hb WHERE leaf_index = 2",
    ]
    await tamper(
        container,
        *statements,
        a=two.event_seq,
        b=five.event_seq,
        ha=two.leaf_hash,
        hb=five.leaf_hash,
    )
    report = await verify(container)
    assert report.problem is not None
    assert report.problem.startswith("tree head 3: root hash does not match")


async def test_inserting_a_row_is_detected(container: Container, clock: FakeClock) -> None:
    """A forger inserts an event at leaf 5 with a correct leaf hash and shifts the rest up."""
    await build_log(container, clock)
    forged = container.audit.event(AuditTag.API_KEY_REVOKE)
    await container.audit.record_alone(forged)
    async with container.engines.read.connect() as conn:
        seq = (
            await conn.execute(select(t.audit_events.c.seq).where(t.audit_events.c.id == forged.id))
        ).scalar_one()
        later = list(
            await conn.execute(
                select(t.audit_leaves)
                .where(t.audit_leaves.c.leaf_index >= 5)
                .order_by(t.audit_leaves.c.leaf_index.desc())
            )
        )
    statements = ["DELETE FROM audit_leaves WHERE leaf_index >= 5"]
    params: dict[str, Any] = {"fs": seq, "fh": leaf_hash(forged.entry()).hex()}
    for n, row in enumerate(later):
        statements.append(f"INSERT INTO audit_leaves VALUES (:i{n}, :s{n}, :h{n})")  # noqa: S608
        params |= {f"i{n}": row.leaf_index + 1, f"s{n}": row.event_seq, f"h{n}": row.leaf_hash}
    statements.append("INSERT INTO audit_leaves VALUES (5, :fs, :fh)")
    await tamper(container, *statements, **params)
    report = await verify(container)
    assert report.problem is not None
    assert report.problem.startswith("tree head 6: root hash does not match")


async def test_a_backdated_event_slipped_below_the_tree_is_detected(
    container: Container, clock: FakeClock
) -> None:
    """A row inserted with a sequence number below events already in the tree, dated long
    before a later signed head: no transaction of Strongroom's commits that late."""
    await build_log(container, clock)
    clock.advance(minutes=10)
    await container.audit.record_alone(container.audit.event(AuditTag.API_KEY_CREATE))
    await container.sequencer.run_once()
    row = container.audit.event(AuditTag.API_KEY_REVOKE)
    await tamper(
        container,
        "INSERT INTO audit_events (seq, id, occurred_at, actor_type, event_type, outcome,"
        " details) VALUES (0, :id, :at, 'system', :type, 'success', '{}')",
        id=row.id,
        at=_db_time(container, clock, minutes=-9),
        type=str(row.event_type),
    )
    report = await verify(container)
    assert report.problem is not None
    assert report.problem.startswith(f"event {row.id}: outside")


def _db_time(container: Container, clock: FakeClock, *, minutes: int) -> datetime | str:
    """A time `minutes` from the clock's now, as each database stores it (SQLite: naive UTC
    text, in SQLAlchemy's format)."""
    moment = clock.now() + timedelta(minutes=minutes)
    if _is_sqlite(container):
        return moment.strftime("%Y-%m-%d %H:%M:%S.%f")
    return moment


def _is_sqlite(container: Container) -> bool:
    return container.engines.write.dialect.name == "sqlite"


def _without_foreign_keys(container: Container) -> str | None:
    """What a forger runs first to break referential integrity on purpose (sqlite3 connections
    start with foreign keys off)."""
    if _is_sqlite(container):
        return None
    return "SET session_replication_role = replica"  # skips PostgreSQL's FK triggers


async def test_a_replaced_tree_head_is_detected(container: Container, clock: FakeClock) -> None:
    await build_log(container, clock)
    async with container.engines.read.connect() as conn:
        heads = list(
            await conn.execute(select(t.audit_tree_heads).order_by(t.audit_tree_heads.c.tree_size))
        )
    # Replace head 6's root with head 9's (a well-formed hash, but not what was signed).
    await tamper(
        container,
        "UPDATE audit_tree_heads SET root_hash = :r WHERE tree_size = 6",
        r=heads[2].root_hash,
    )
    report = await verify(container)
    assert report.problem == "tree head 6: the signature does not verify (replaced or edited)"


async def test_a_swapped_public_key_is_detected(container: Container, clock: FakeClock) -> None:
    """A forger who signs heads with their own key must also swap the stored public key;
    verify derives the public key from the sealed private key instead of trusting the column."""
    await build_log(container, clock)
    await tamper(container, "UPDATE audit_signing_keys SET public_key = :k", k="ab" * 32)
    report = await verify(container)
    assert report.problem is not None
    assert "stored public key does not match" in report.problem


# SQLite only: the command's parsing and output do not depend on the store, the service
# layer under it runs on both stores in the tests above, and each run starts several processes.
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_the_cli_exits_non_zero_naming_the_first_bad_entry(
    database_url: str, container: Container, clock: FakeClock, kms_url: str
) -> None:
    await build_log(container, clock)
    env = {"STRONGROOM_KMS_URL": kms_url}
    good = cli(database_url, "audit", "verify", "--json", env=env)
    assert good.returncode == 0, good.stderr
    assert json.loads(good.stdout)["entries"] == 12
    head = await head_root(container, 12)
    anchored = cli(
        database_url, "audit", "verify", "--tree-size", "12", "--root-hash", head, env=env
    )
    assert anchored.returncode == 0, anchored.stdout
    wrong = cli(
        database_url, "audit", "verify", "--tree-size", "12", "--root-hash", "ab" * 32, env=env
    )
    assert wrong.returncode == 1
    assert "tree head 12: its root is not the one saved earlier" in wrong.stdout
    leaf = await leaf_row(container, 3)
    await tamper(
        container, "UPDATE audit_events SET resource_id = 'x' WHERE seq = :s", s=leaf.event_seq
    )
    bad = cli(database_url, "audit", "verify", env=env)
    assert bad.returncode == 1
    assert "leaf 3 (event aud_" in bad.stdout


async def test_a_sequencer_pass_during_verify_is_not_tampering(
    container: Container, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """verify reads heads first and leaves later; a pass committing in between must stay
    invisible to it (one snapshot), not show up as leaves no head covers."""
    await build_log(container, clock)
    await container.audit.record_alone(container.audit.event(AuditTag.API_KEY_CREATE))
    read_heads = AuditStore.heads

    async def heads_then_a_pass(store: AuditStore) -> list[TreeHead]:
        heads = await read_heads(store)
        assert await container.sequencer.run_once() == 1  # commits leaf 12 and head 13
        return heads

    monkeypatch.setattr(AuditStore, "heads", heads_then_a_pass)
    report = await verify(container)
    assert report.ok, report.problem
    assert report.entries == 12


async def test_a_sequencer_backlog_is_not_tampering(container: Container, clock: FakeClock) -> None:
    """After a worker outage the sequencer catches up oldest first; events still waiting are
    older than the newest head, and that is fine."""
    await build_log(container, clock)
    for _ in range(5):
        await container.audit.record_alone(container.audit.event(AuditTag.API_KEY_CREATE))
    clock.advance(minutes=10)
    slow = Sequencer(container.uow, container.clock, container.sequencer.keys, batch=2)
    assert await slow.run_once() == 2
    report = await verify(container)
    assert report.ok, report.problem
    assert report.pending == 3


async def test_an_edited_tree_node_is_detected_and_never_signed_over(
    container: Container, clock: FakeClock
) -> None:
    await build_log(container, clock)  # 12 leaves: the root folds nodes 3/0 and 2/2
    await tamper(
        container, "UPDATE audit_nodes SET hash = :h WHERE level = 2 AND idx = 2", h="00" * 32
    )
    report = await verify(container)
    assert report.problem == "tree node 2/2: does not hash its two children (edited?)"

    await container.audit.record_alone(container.audit.event(AuditTag.API_KEY_CREATE))
    restarted = Sequencer(container.uow, container.clock, container.sequencer.keys)
    with pytest.raises(AuditLogDamaged, match="do not give tree head 12's root"):
        await restarted.run_once()


async def test_a_log_cut_back_is_caught_by_a_saved_head_and_by_the_sequencer(
    container: Container, clock: FakeClock
) -> None:
    """Removing the newest entries, their nodes and heads leaves an older log that is
    consistent in itself; only a head saved earlier (or the running sequencer) shows it."""
    await build_log(container, clock)
    async with container.engines.read.connect() as conn:
        saved = (
            await conn.execute(
                select(t.audit_tree_heads).where(t.audit_tree_heads.c.tree_size == 12)
            )
        ).one()
        nodes = list(await conn.execute(select(t.audit_nodes.c.level, t.audit_nodes.c.idx)))
        doomed = [(await leaf_row(container, i)).event_seq for i in range(9, 12)]
    beyond = [(lv, ix) for lv, ix in nodes if (ix + 1) << lv > 9]
    statements: list[str | None] = [
        "DELETE FROM audit_tree_heads WHERE tree_size > 9",
        "DELETE FROM audit_leaves WHERE leaf_index >= 9",
        *(f"DELETE FROM audit_nodes WHERE level = {lv} AND idx = {ix}" for lv, ix in beyond),  # noqa: S608 - ints
        *(f"DELETE FROM audit_events WHERE seq = {seq}" for seq in doomed),  # noqa: S608 - ints
    ]
    await tamper(container, *statements)

    alone = await verify(container)
    assert alone.ok, alone.problem  # the cut-back log is consistent in itself
    known = KnownHead(12, bytes.fromhex(saved.root_hash))
    anchored = await verify_log(container.uow, container.envelope, known=known)
    assert anchored.problem == "tree head 12: gone from the log (cut back to an older state?)"

    await container.audit.record_alone(container.audit.event(AuditTag.API_KEY_CREATE))
    with pytest.raises(AuditLogDamaged, match="cut back"):
        await container.sequencer.run_once()  # it signed head 12 itself
