"""Master key rotation and retirement over real databases (SQLite and PostgreSQL).

Secrets are sealed into `audit_signing_keys.private_key`, the first Sealed column. The main
rotation test also runs on AWS KMS: AWS is unreachable from here, so the official boto3 SDK
talks to moto's KMS server on a loopback port (tests/kms_support.py)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Column, MetaData, String, Table, Text, select, type_coerce, update

from strongroom.adapters.db import tables as t
from strongroom.adapters.db.types import Sealed
from strongroom.adapters.kms.envelope import Binding, DecryptionFailed, Envelope
from strongroom.adapters.kms.local import LocalKeyring
from strongroom.adapters.kms.port import (
    DataKey,
    Keyring,
    KeyringError,
    KeyVersion,
    KeyVersionInUse,
    UnknownKeyVersion,
)
from strongroom.adapters.kms.sealed import SealedValue
from strongroom.bootstrap import Container
from strongroom.service_layer.keyring import (
    RETIRE_GRACE,
    KeyRotation,
    KeyUsage,
    RotationProgress,
    sealed_columns,
)
from tests.kms_support import aws_kms_url, local_kms_url, moto_kms_server
from tests.support import FakeClock

KEYS = t.audit_signing_keys
COLUMN = "audit_signing_keys.private_key"
STRONGROOM = str(Path(sys.executable).with_name("strongroom"))


class Interrupted(Exception):
    """Stands for the operator's Ctrl-C or a crash in the middle of a rotation."""


def cli(database_url: str, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The real `strongroom` command in a subprocess, as tests/integration/test_cli.py runs it."""
    environ = {**os.environ, "STRONGROOM_DATABASE_URL": database_url, **env}
    return subprocess.run(
        [STRONGROOM, *args], env=environ, capture_output=True, text=True, timeout=60
    )


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    with moto_kms_server() as url:
        yield url


@pytest.fixture
def kms_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Overrides the conftest's: local by default, or the provider an indirect param names."""
    provider = getattr(request, "param", "local")
    if provider == "aws-kms":
        return aws_kms_url(request.getfixturevalue("moto_endpoint"))
    return local_kms_url(tmp_path / "keyring")


def binding(row_id: str) -> Binding:
    return Binding.for_row(KEYS, "private_key", row_id)


async def insert_secrets(container: Container, clock: FakeClock, count: int) -> dict[str, bytes]:
    secrets = {f"ask_{i:03d}": os.urandom(32) for i in range(count)}
    sealed = {
        row_id: await container.envelope.seal(secret, binding(row_id))
        for row_id, secret in secrets.items()
    }
    async with container.uow.transaction() as tx:
        await tx.repo.conn.execute(
            KEYS.insert(),
            [
                {"id": i, "public_key": "0" * 64, "private_key": s, "created_at": clock.now()}
                for i, s in sealed.items()
            ],
        )
        await tx.commit()
    return secrets


async def stored(container: Container) -> dict[str, str]:
    """Each row's stored text, raw."""
    async with container.uow.reading() as repo:
        rows = await repo.conn.execute(
            select(KEYS.c.id, type_coerce(KEYS.c.private_key, Text)).order_by(KEYS.c.id)
        )
        return {row[0]: row[1] for row in rows}


async def assert_all_open(container: Container, secrets: Mapping[str, bytes]) -> None:
    texts = await stored(container)
    assert set(texts) == set(secrets)
    for row_id, secret in secrets.items():
        assert await container.envelope.open(texts[row_id], binding(row_id)) == secret


def versions_of(texts: Mapping[str, str]) -> dict[str, str]:
    return {row_id: SealedValue.decode(text).key_version for row_id, text in texts.items()}


def real_time() -> FakeClock:
    """A movable clock starting at the real time: key versions carry real creation times."""
    return FakeClock(datetime.now(UTC))


async def keyring_events(container: Container) -> list[tuple[str, str, dict[str, Any]]]:
    """(event type, outcome, details) of every keyring event, in log order."""
    events = t.audit_events
    async with container.engines.read.connect() as conn:
        recorded = await conn.execute(
            select(events.c.event_type, events.c.outcome, events.c.details)
            .where(events.c.event_type.like("cli:keyring:%"))
            .order_by(events.c.seq)
        )
        return [(row[0], row[1], dict(row[2])) for row in recorded]


ROTATE, RETIRE = "cli:keyring:rotate", "cli:keyring:retire"


@pytest.mark.parametrize("kms_url", ["local", "aws-kms"], indirect=True)
async def test_rotation_rewraps_every_value_and_all_still_decrypt(
    container: Container, clock: FakeClock
) -> None:
    secrets = await insert_secrets(container, clock, 7)
    before = await stored(container)
    steps: list[RotationProgress] = []

    summary = await KeyRotation(
        container.uow, container.envelope, audit=container.audit, batch_size=3
    ).rotate(progress=steps.append)

    assert (summary.version, summary.created, summary.rewrapped) == ("2", True, 7)
    assert (summary.changed_concurrently, summary.unreadable) == (0, [])
    assert [(s.column, s.checked, s.total) for s in steps] == [
        (COLUMN, 3, 7),
        (COLUMN, 6, 7),
        (COLUMN, 7, 7),
    ]
    after = await stored(container)
    assert set(versions_of(after).values()) == {"2"}
    for row_id in secrets:  # same data key and ciphertext, newly wrapped
        old, new = SealedValue.decode(before[row_id]), SealedValue.decode(after[row_id])
        assert (old.nonce, old.ciphertext) == (new.nonce, new.ciphertext)
        assert old.wrapped_key != new.wrapped_key
    await assert_all_open(container, secrets)

    usage = await KeyRotation(container.uow, container.envelope, audit=container.audit).usage()
    assert [(v.version, v.current, v.available, v.values) for v in usage.versions] == [
        ("1", False, True, 0),
        ("2", True, True, 7),
    ]
    now = real_time()
    retirement = KeyRotation(container.uow, container.envelope, audit=container.audit, clock=now)
    with pytest.raises(KeyVersionInUse, match="replaced by version 2 only"):
        await retirement.retire("1")
    now.advance(seconds=RETIRE_GRACE.total_seconds())
    await retirement.retire("1")
    await assert_all_open(container, secrets)


async def test_an_interrupted_rotation_resumes_where_it_stopped(
    container: Container, clock: FakeClock
) -> None:
    secrets = await insert_secrets(container, clock, 8)
    rotation = KeyRotation(container.uow, container.envelope, audit=container.audit, batch_size=3)

    def crash(step: RotationProgress) -> None:
        raise Interrupted  # right after the first batch commits

    with pytest.raises(Interrupted):
        await rotation.rotate(progress=crash)
    halfway = await stored(container)
    assert sorted(versions_of(halfway).values()) == ["1"] * 5 + ["2"] * 3
    await assert_all_open(container, secrets)  # mid-rotation, everything still decrypts

    summary = await rotation.rotate(resume=True)

    assert (summary.version, summary.created, summary.rewrapped) == ("2", False, 5)
    finished = await stored(container)
    assert set(versions_of(finished).values()) == {"2"}
    for row_id, version in versions_of(halfway).items():
        if version == "2":  # done before the interruption: left exactly as it was
            assert finished[row_id] == halfway[row_id]
    assert [v.version for v in await container.keyring.versions()] == ["1", "2"]
    await assert_all_open(container, secrets)
    again = await rotation.rotate(resume=True)
    assert (again.version, again.rewrapped, again.checked) == ("2", 0, 8)


async def test_retire_refuses_a_version_in_use_and_the_current_one(
    container: Container, clock: FakeClock
) -> None:
    secrets = await insert_secrets(container, clock, 5)
    now = real_time()
    rotation = KeyRotation(
        container.uow, container.envelope, audit=container.audit, batch_size=2, clock=now
    )
    with pytest.raises(KeyVersionInUse, match="key version 1 is the current version"):
        await rotation.retire("1")

    await container.keyring.create_version()  # a rotation that has not re-wrapped anything yet
    with pytest.raises(
        KeyVersionInUse,
        match=r"key version 1 is still used by 5 stored value\(s\): "
        r"audit_signing_keys.private_key \(5\)",
    ):
        await rotation.retire("1")
    await assert_all_open(container, secrets)  # the refusal destroyed nothing

    await rotation.rotate(resume=True)
    now.current = datetime.now(UTC) + RETIRE_GRACE  # version 2 has been current long enough
    await rotation.retire("1")
    await assert_all_open(container, secrets)
    with pytest.raises(KeyVersionInUse, match="current version"):
        await rotation.retire("2")
    with pytest.raises(UnknownKeyVersion):
        await rotation.retire("1")
    with pytest.raises(UnknownKeyVersion):
        await rotation.retire("7")

    recorded = await keyring_events(container)
    assert [(kind, outcome, details.get("phase")) for kind, outcome, details in recorded] == [
        (RETIRE, "failure", None),  # a refusal is one failure event
        (RETIRE, "failure", None),
        (ROTATE, "success", "started"),
        (ROTATE, "success", "finished"),
        (RETIRE, "success", "requested"),  # before the key is destroyed
        (RETIRE, "success", "finished"),
        (RETIRE, "failure", None),
        (RETIRE, "failure", None),
        (RETIRE, "failure", None),
    ]
    assert recorded[2][2] == {"phase": "started", "version": "2", "resume": True}
    assert recorded[4][2] == {"phase": "requested", "version": "1"}
    assert recorded[5][2] == {"phase": "finished", "version": "1"}
    assert "still used by 5 stored value(s)" in recorded[1][2]["why"]


@pytest.mark.parametrize("kms_url", ["local", "aws-kms"], indirect=True)
async def test_retire_waits_until_the_next_version_has_been_current_for_the_grace_period(
    container: Container, clock: FakeClock
) -> None:
    """Right after a rotation a server may still seal under the old version (AWS caches the
    current version; a value is sealed before its transaction commits): no retiring yet."""
    secrets = await insert_secrets(container, clock, 3)
    kept = await container.envelope.seal(b"kept", binding("ask_x"))  # under version 1
    await KeyRotation(container.uow, container.envelope, audit=container.audit).rotate()
    replaced_at = (await container.keyring.versions())[1].created_at
    assert replaced_at.tzinfo is not None
    assert abs(datetime.now(UTC) - replaced_at) < timedelta(minutes=1)
    now = FakeClock(replaced_at + timedelta(minutes=4, seconds=30))
    rotation = KeyRotation(container.uow, container.envelope, audit=container.audit, clock=now)

    with pytest.raises(
        KeyVersionInUse,
        match=r"key version 1 was replaced by version 2 only 4m 30s ago; .* "
        r"for up to 5m after a rotation\. Wait 30s",
    ):
        await rotation.retire("1")
    now.advance(seconds=29)
    with pytest.raises(KeyVersionInUse, match="Wait 1s"):
        await rotation.retire("1")
    assert [v.version for v in await container.keyring.versions()] == ["1", "2"]
    assert await container.envelope.open(kept, binding("ask_x")) == b"kept"  # still there

    now.advance(seconds=1)
    await rotation.retire("1")
    assert [v.version for v in await container.keyring.versions()] == ["2"]
    await assert_all_open(container, secrets)
    with pytest.raises(DecryptionFailed, match="key version 1 is retired"):
        await container.envelope.open(kept, binding("ask_x"))
    refusals = [
        d["why"] for _, outcome, d in await keyring_events(container) if outcome == "failure"
    ]
    assert len(refusals) == 2
    assert "Wait 30s" in refusals[0]


class LateCommit(KeyRotation):
    """Lets a value sealed under the old version commit right after retire's first usage scan,
    as a server that sealed it before the rotation (or under a cached version) would."""

    late: Callable[[], Awaitable[None]] | None = None

    async def usage(self) -> KeyUsage:
        found = await super().usage()
        if self.late is not None:
            late, self.late = self.late, None
            await late()
        return found


async def test_retire_scans_again_just_before_destroying_the_key(
    container: Container, clock: FakeClock
) -> None:
    await insert_secrets(container, clock, 2)
    straggler = os.urandom(32)
    sealed_early = await container.envelope.seal(straggler, binding("ask_late"))  # version 1
    now = FakeClock()
    rotation = LateCommit(container.uow, container.envelope, audit=container.audit, clock=now)
    await rotation.rotate()
    now.current = datetime.now(UTC) + RETIRE_GRACE

    async def commit_straggler() -> None:
        async with container.uow.transaction() as tx:
            await tx.repo.conn.execute(
                KEYS.insert().values(
                    id="ask_late",
                    public_key="0" * 64,
                    private_key=sealed_early,
                    created_at=clock.now(),
                )
            )
            await tx.commit()

    rotation.late = commit_straggler
    with pytest.raises(KeyVersionInUse, match=r"key version 1 is still used by 1 stored value"):
        await rotation.retire("1")
    assert [v.version for v in await container.keyring.versions()] == ["1", "2"]
    assert (
        await container.envelope.open((await stored(container))["ask_late"], binding("ask_late"))
        == straggler
    )
    assert [(k, o, d.get("phase")) for k, o, d in await keyring_events(container)][-1] == (
        RETIRE,
        "failure",
        None,
    )


async def test_a_retirement_that_fails_while_destroying_is_audited_before_and_after(
    container: Container, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    await insert_secrets(container, clock, 2)
    now = FakeClock()
    rotation = KeyRotation(container.uow, container.envelope, audit=container.audit, clock=now)
    await rotation.rotate()
    now.current = datetime.now(UTC) + RETIRE_GRACE
    seen: list[list[str | None]] = []

    async def kms_down(version: str) -> None:
        seen.append([d.get("phase") for _, _, d in await keyring_events(container)])
        raise KeyringError("AWS KMS is unreachable or misconfigured: timeout")

    monkeypatch.setattr(container.keyring, "retire_version", kms_down)
    with pytest.raises(KeyringError, match="unreachable"):
        await rotation.retire("1")

    assert seen == [["started", "finished", "requested"]]  # recorded before destroying
    assert (await keyring_events(container))[-2:] == [
        (RETIRE, "success", {"phase": "requested", "version": "1"}),
        (
            RETIRE,
            "failure",
            {
                "phase": "finished",
                "version": "1",
                "why": "AWS KMS is unreachable or misconfigured: timeout",
            },
        ),
    ]


async def test_an_interrupted_rotation_leaves_its_started_event(
    container: Container, clock: FakeClock
) -> None:
    await insert_secrets(container, clock, 4)
    rotation = KeyRotation(container.uow, container.envelope, audit=container.audit, batch_size=2)

    def crash(step: RotationProgress) -> None:
        raise Interrupted

    with pytest.raises(Interrupted):
        await rotation.rotate(progress=crash)

    assert [v.version for v in await container.keyring.versions()] == ["1", "2"]
    assert await keyring_events(container) == [
        (ROTATE, "success", {"phase": "started", "version": "2", "resume": False})
    ]
    await rotation.rotate(resume=True)
    (_, _, started), (_, outcome, finished) = (await keyring_events(container))[1:]
    assert started == {"phase": "started", "version": "2", "resume": True}
    assert (outcome, finished["phase"], finished["rewrapped"]) == ("success", "finished", 2)


class WriterDuringRotation:
    """The real keyring, except that the first re-wrap lets a concurrent writer replace one
    row's secret: the rotation has read that row's old text and not yet written it back."""

    def __init__(self, inner: Keyring, writer: Callable[[], Awaitable[None]]) -> None:
        self.inner = inner
        self.writer: Callable[[], Awaitable[None]] | None = writer

    async def wrap(self, plaintext: bytes, context: Mapping[str, str]) -> tuple[bytes, str]:
        if self.writer is not None:
            writer, self.writer = self.writer, None
            await writer()
        return await self.inner.wrap(plaintext, context)

    async def current_version(self) -> str:
        return await self.inner.current_version()

    async def versions(self) -> list[KeyVersion]:
        return await self.inner.versions()

    async def generate_data_key(self, context: Mapping[str, str]) -> DataKey:
        return await self.inner.generate_data_key(context)

    async def unwrap(self, wrapped: bytes, version: str, context: Mapping[str, str]) -> bytes:
        return await self.inner.unwrap(wrapped, version, context)

    async def create_version(self) -> str:
        return await self.inner.create_version()

    async def retire_version(self, version: str) -> None:
        await self.inner.retire_version(version)


async def test_a_concurrent_writer_is_never_overwritten(
    container: Container, clock: FakeClock
) -> None:
    secrets = await insert_secrets(container, clock, 4)
    replacement = os.urandom(32)

    async def replace_first_secret() -> None:
        sealed = await container.envelope.seal(replacement, binding("ask_000"))
        async with container.uow.transaction() as tx:
            await tx.repo.conn.execute(
                update(KEYS).where(KEYS.c.id == "ask_000").values(private_key=sealed)
            )
            await tx.commit()

    envelope = Envelope(WriterDuringRotation(container.keyring, replace_first_secret))
    summary = await KeyRotation(
        container.uow, envelope, audit=container.audit, batch_size=10
    ).rotate()

    # ask_000's conditional UPDATE matched nothing; the writer's value (already on version 2)
    # stands, and the second pass found nothing left to do.
    assert (summary.rewrapped, summary.changed_concurrently) == (3, 0)
    assert set(versions_of(await stored(container)).values()) == {"2"}
    await assert_all_open(container, {**secrets, "ask_000": replacement})


async def test_unreadable_values_are_reported_and_block_nothing_else(
    container: Container, clock: FakeClock
) -> None:
    secrets = await insert_secrets(container, clock, 3)
    moved = (await stored(container))["ask_001"]
    async with container.uow.transaction() as tx:  # raw text: the Sealed type would refuse it
        for row_id, text in (("ask_000", "not a sealed value"), ("ask_002", moved)):
            await tx.repo.conn.execute(
                update(KEYS)
                .where(KEYS.c.id == row_id)
                .values({type_coerce(KEYS.c.private_key, Text): text})
            )
        await tx.commit()
    rotation = KeyRotation(container.uow, container.envelope, audit=container.audit, batch_size=2)

    summary = await rotation.rotate()

    assert summary.rewrapped == 1
    assert summary.unreadable == [f"{COLUMN} row ask_000", f"{COLUMN} row ask_002"]
    usage = await rotation.usage()
    assert usage.malformed == {COLUMN: 1}
    assert [(v.version, v.values) for v in usage.versions] == [("1", 1), ("2", 1)]
    opened = await container.envelope.open((await stored(container))["ask_001"], binding("ask_001"))
    assert opened == secrets["ask_001"]


def test_sealed_columns_are_found_by_type() -> None:
    found = {c.name: c for c in sealed_columns()}
    assert COLUMN in found
    assert found[COLUMN].primary_key is KEYS.c.id
    assert found[COLUMN].merchant is None

    later = MetaData()
    Table(
        "bank_tokens",
        later,
        Column("id", String(40), primary_key=True),
        Column("merchant_id", String(40), nullable=False),
        Column("token", Sealed(), nullable=True),
    )
    Table(
        "pairs",
        later,
        Column("a", String(4), primary_key=True),
        Column("b", String(4), primary_key=True),
    )
    (bank,) = sealed_columns(later)
    assert bank.name == "bank_tokens.token"
    assert bank.binding("bt_1", "acct_1") == Binding("bank_tokens", "token", "bt_1", "acct_1")

    Table(
        "composite",
        later,
        Column("a", String(4), primary_key=True),
        Column("b", String(4), primary_key=True),
        Column("secret", Sealed()),
    )
    with pytest.raises(KeyringError, match="composite primary key"):
        sealed_columns(later)


def _cli_json(database_url: str, kms_url: str, *args: str) -> Any:
    result = cli(database_url, *args, "--json", env={"STRONGROOM_KMS_URL": kms_url})
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


# PostgreSQL only: the command's parsing and output do not depend on the store, the service
# layer under it runs on both stores in the tests above, and each run starts several processes.
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_keys_commands(
    database_url: str, kms_url: str, container: Container, clock: FakeClock
) -> None:
    secrets = await insert_secrets(container, clock, 5)
    env = {"STRONGROOM_KMS_URL": kms_url}

    listed = _cli_json(database_url, kms_url, "keys", "versions")
    assert listed == {
        "versions": [
            {
                "version": "1",
                "current": True,
                "available": True,
                "values": 5,
                "columns": {COLUMN: 5},
            }
        ],
        "malformed": {},
    }
    refused = cli(database_url, "keys", "retire", "1", env=env)
    assert refused.returncode != 0
    assert "key version 1 is the current version" in refused.stderr

    await container.keyring.create_version()  # as if a rotation stopped before re-wrapping
    refused = cli(database_url, "keys", "retire", "1", env=env)
    assert refused.returncode != 0
    assert "still used by 5 stored value(s): audit_signing_keys.private_key (5)" in (refused.stderr)

    resumed = _cli_json(database_url, kms_url, "keys", "rotate", "--resume", "--batch-size", "2")
    assert resumed == {
        "version": "2",
        "created": False,
        "checked": 5,
        "rewrapped": 5,
        "changed_concurrently": 0,
        "unreadable": [],
    }
    refused = cli(database_url, "keys", "retire", "1", env=env)  # version 2 is brand new
    assert refused.returncode != 0
    assert "key version 1 was replaced by version 2 only" in refused.stderr
    assert re.search(r"Wait (5m|4m \d+s)", refused.stderr)  # the real clock moved a little
    keyring = container.keyring
    assert isinstance(keyring, LocalKeyring)
    made = (keyring.directory / "2.key").stat().st_mtime - RETIRE_GRACE.total_seconds()
    os.utime(keyring.directory / "2.key", (made, made))  # as if rotated 5 minutes ago
    retired = _cli_json(database_url, kms_url, "keys", "retire", "1")
    assert retired == {"version": "1", "retired": True}

    rotated = cli(database_url, "keys", "rotate", env=env)
    assert rotated.returncode == 0, rotated.stderr
    assert "Key version 3 is now current: re-wrapped 5 stored value(s)." in rotated.stdout
    table = cli(database_url, "keys", "versions", env=env)
    assert table.returncode == 0, table.stderr
    assert table.stdout.splitlines()[1:] == [
        "2        active          0  ",
        f"3        current         5  {COLUMN}=5",
    ]
    await assert_all_open(container, secrets)
