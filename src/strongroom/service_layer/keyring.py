"""Master key rotation and retirement over every `Sealed` column in the schema.

Rotation is online and resumable: each column is walked in primary-key order in small batches;
a batch is read, its data keys are re-wrapped outside any transaction (a KMS call is network
I/O), then written in one short write transaction with conditional UPDATEs
(`WHERE pk = :pk AND col = :text_we_read`), so a value a concurrent writer replaced meanwhile is
never overwritten. Re-running with `resume=True` re-wraps whatever is not yet on the current
version without creating another one, so an interrupted rotation just finishes.

Retirement destroys a version only once nothing can still need it. A value is sealed before
its transaction commits, and AWS KMS processes cache the current version for 30 s, so right
after a rotation a server may still seal under the previous version and commit after a usage
scan. So `retire` refuses until the version that replaced the one retired has been current for
RETIRE_GRACE, then scans usage again just before destroying the key.

Both operations are audited before they change anything irreversible: a rotation records a
"started" event as soon as its new version exists and a "finished" one at the end (an
interrupted rotation leaves the first); a retirement that passed its checks records
"requested" before destroying the key, then its outcome. A refused retirement records one
failure event.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import structlog
from sqlalchemy import Column, MetaData, Table, Text, func, select, type_coerce, update

from strongroom.adapters.db.tables import metadata as schema
from strongroom.adapters.db.types import Sealed
from strongroom.adapters.kms.envelope import MERCHANT_COLUMN, Binding, Envelope
from strongroom.adapters.kms.port import (
    DecryptionFailed,
    KeyringError,
    KeyVersionInUse,
    UnknownKeyVersion,
    version_key,
)
from strongroom.adapters.kms.sealed import MalformedSealedValue, SealedValue
from strongroom.domain.audit import AuditTag, Outcome
from strongroom.domain.clock import Clock, SystemClock
from strongroom.service_layer.audit import AuditLog
from strongroom.service_layer.unit_of_work import UnitOfWork

log = structlog.get_logger(__name__)

DEFAULT_BATCH_SIZE = 200
MAX_PASSES = 3  # a pass that lost rows to concurrent writers is followed by another
# How long the version after a retired one must have been current first: well beyond the AWS
# keyring's 30 s cache of the current version plus the time from sealing a value to committing
# it, so no value sealed under the retired version can still be on its way into the database.
RETIRE_GRACE = timedelta(minutes=5)


@dataclass(frozen=True)
class SealedColumn:
    """One `Sealed` column with what a binding needs from its row."""

    table: Table
    column: Column[Any]
    primary_key: Column[Any]
    merchant: Column[Any] | None

    @property
    def name(self) -> str:
        return f"{self.table.name}.{self.column.name}"

    def binding(self, row_id: object, merchant_id: str | None) -> Binding:
        return Binding(self.table.name, self.column.name, str(row_id), merchant_id or "")


def sealed_columns(metadata: MetaData = schema) -> list[SealedColumn]:
    """Every Sealed column in the schema, found by type, so new tables are covered unasked.
    Raises KeyringError for a table whose primary key is not a single column."""
    found = []
    for table in metadata.sorted_tables:
        for column in table.columns:
            if not isinstance(column.type, Sealed):
                continue
            keys = list(table.primary_key.columns)
            if len(keys) != 1:
                raise KeyringError(
                    f"{table.name}.{column.name} is Sealed but {table.name} has a composite "
                    "primary key; sealed values bind to a single-column row id"
                )
            found.append(SealedColumn(table, column, keys[0], table.c.get(MERCHANT_COLUMN)))
    return found


@dataclass(frozen=True)
class RotationProgress:
    """Reported after each committed batch."""

    column: str  # table.column
    checked: int  # values of this column looked at so far
    total: int  # values in this column when the pass began
    rewrapped: int  # of this column, so far in this run


@dataclass
class RotationSummary:
    version: str  # the current version, which every rewrapped value now uses
    created: bool  # this run made `version` (False when resuming)
    checked: int = 0
    rewrapped: int = 0
    changed_concurrently: int = 0  # lost to a concurrent writer in the last pass; rerun --resume
    unreadable: list[str] = field(default_factory=list)  # values that could not be unwrapped

    def as_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "created": self.created,
            "checked": self.checked,
            "rewrapped": self.rewrapped,
            "changed_concurrently": self.changed_concurrently,
            "unreadable": list(self.unreadable),
        }


@dataclass
class VersionUsage:
    version: str
    current: bool
    available: bool  # the keyring still holds it (False: retired or unknown, cannot decrypt)
    values: int = 0
    columns: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "current": self.current,
            "available": self.available,
            "values": self.values,
            "columns": dict(self.columns),
        }


@dataclass
class KeyUsage:
    versions: list[VersionUsage]
    malformed: dict[str, int]  # table.column -> stored values that are not sealed values

    def as_dict(self) -> dict[str, Any]:
        return {
            "versions": [v.as_dict() for v in self.versions],
            "malformed": dict(self.malformed),
        }


@dataclass(frozen=True)
class _Row:
    row_id: Any
    merchant_id: str | None
    text: str


class KeyRotation:
    """Rotates, inspects and retires master key versions for every sealed value stored."""

    def __init__(
        self,
        uow: UnitOfWork,
        envelope: Envelope,
        *,
        audit: AuditLog,
        batch_size: int = DEFAULT_BATCH_SIZE,
        columns: Sequence[SealedColumn] | None = None,
        clock: Clock | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.uow = uow
        self.envelope = envelope
        self.audit = audit
        self.keyring = envelope.keyring
        self.batch_size = batch_size
        self.columns = list(columns) if columns is not None else sealed_columns()
        self.clock: Clock = clock if clock is not None else SystemClock()

    async def rotate(
        self,
        *,
        resume: bool = False,
        progress: Callable[[RotationProgress], None] | None = None,
    ) -> RotationSummary:
        """Make a new master key version current (unless `resume`), then re-wrap every stored
        data key that is on another version. Old versions keep decrypting until retired.

        An exception from `progress` (or anything else) stops the rotation after the batches
        already committed; `rotate(resume=True)` then finishes it. Values that cannot be
        unwrapped are skipped and listed in the summary's `unreadable`.
        """
        if resume:
            version, created = await self.keyring.current_version(), False
        else:
            version, created = await self.keyring.create_version(), True
        log.info("key rotation started", version=version, resume=resume)
        await self._record(
            AuditTag.KEYRING_ROTATE,
            Outcome.SUCCESS,
            {"phase": "started", "version": version, "resume": resume},
        )
        summary = RotationSummary(version, created)
        for _ in range(MAX_PASSES):
            summary.changed_concurrently = 0
            summary.unreadable = []
            for column in self.columns:
                await self._rotate_column(column, summary, progress)
            if not summary.changed_concurrently:
                break
        log.info(
            "key rotation finished",
            version=summary.version,
            rewrapped=summary.rewrapped,
            changed_concurrently=summary.changed_concurrently,
            unreadable=len(summary.unreadable),
        )
        complete = not (summary.changed_concurrently or summary.unreadable)
        await self._record(
            AuditTag.KEYRING_ROTATE,
            Outcome.SUCCESS if complete else Outcome.FAILURE,
            {
                "phase": "finished",
                "version": summary.version,
                "created": summary.created,
                "rewrapped": summary.rewrapped,
                "changed_concurrently": summary.changed_concurrently,
                "unreadable": len(summary.unreadable),
            },
        )
        return summary

    async def usage(self) -> KeyUsage:
        """How many stored values use each version, live or not. Creates no key."""
        live = {v.version: v for v in await self.keyring.versions()}
        found = {
            name: VersionUsage(name, version.current, available=True)
            for name, version in live.items()
        }
        malformed: dict[str, int] = defaultdict(int)
        for column in self.columns:
            async for batch in self._batches(column):
                for row in batch:
                    try:
                        key_version = SealedValue.decode(row.text).key_version
                    except MalformedSealedValue:
                        malformed[column.name] += 1
                        continue
                    entry = found.setdefault(
                        key_version, VersionUsage(key_version, current=False, available=False)
                    )
                    entry.values += 1
                    entry.columns[column.name] = entry.columns.get(column.name, 0) + 1
        ordered = sorted(found.values(), key=lambda v: version_key(v.version))
        return KeyUsage(ordered, dict(malformed))

    async def retire(self, version: str) -> None:
        """Destroy master key `version` in the keyring. Raises KeyVersionInUse while it is the
        current version, while any stored value still uses it, or until the version after it
        has been current for RETIRE_GRACE; UnknownKeyVersion if it is not in the keyring."""
        try:
            await self._check_retirable(version)
        except KeyringError as exc:
            await self._record(
                AuditTag.KEYRING_RETIRE, Outcome.FAILURE, {"version": version, "why": exc.message}
            )
            raise
        await self._record(
            AuditTag.KEYRING_RETIRE, Outcome.SUCCESS, {"phase": "requested", "version": version}
        )
        try:
            await self.keyring.retire_version(version)
        except Exception as exc:
            why = exc.message if isinstance(exc, KeyringError) else type(exc).__name__
            await self._record(
                AuditTag.KEYRING_RETIRE,
                Outcome.FAILURE,
                {"phase": "finished", "version": version, "why": why},
            )
            raise
        log.info("key version retired", version=version)
        await self._record(
            AuditTag.KEYRING_RETIRE, Outcome.SUCCESS, {"phase": "finished", "version": version}
        )

    async def _record(self, tag: AuditTag, outcome: Outcome, details: dict[str, object]) -> None:
        await self.audit.record_alone(
            self.audit.event(tag, outcome=outcome, resource=("keyring", "master"), details=details)
        )

    async def _check_retirable(self, version: str) -> None:
        """Raises unless `version` may be destroyed now. The second usage scan starts only
        after the grace period is over, so it sees every value sealed under `version`."""
        self._refuse_if_used(version, await self.usage())
        await self._refuse_within_grace(version)
        self._refuse_if_used(version, await self.usage())

    @staticmethod
    def _refuse_if_used(version: str, usage: KeyUsage) -> None:
        entry = next((v for v in usage.versions if v.version == version), None)
        if entry is None or not entry.available:
            raise UnknownKeyVersion(
                f"key version {version} is not in the keyring (retired or never made)"
            )
        if entry.current:
            raise KeyVersionInUse(
                f"key version {version} is the current version; run `strongroom keys rotate` first"
            )
        if entry.values:
            where = ", ".join(f"{name} ({count})" for name, count in sorted(entry.columns.items()))
            raise KeyVersionInUse(
                f"key version {version} is still used by {entry.values} stored value(s): "
                f"{where}; run `strongroom keys rotate --resume` to re-wrap them first"
            )

    async def _refuse_within_grace(self, version: str) -> None:
        newer = sorted(
            (
                v
                for v in await self.keyring.versions()
                if version_key(v.version) > version_key(version)
            ),
            key=lambda v: version_key(v.version),
        )
        if not newer:  # nothing replaced it: it is the current version
            raise KeyVersionInUse(
                f"key version {version} is the current version; run `strongroom keys rotate` first"
            )
        successor = newer[0]
        current_for = self.clock.now() - successor.created_at
        if current_for < RETIRE_GRACE:
            raise KeyVersionInUse(
                f"key version {version} was replaced by version {successor.version} only "
                f"{_duration(current_for)} ago; servers may still be storing values sealed under "
                f"version {version} for up to {_duration(RETIRE_GRACE)} after a rotation. "
                f"Wait {_duration(RETIRE_GRACE - current_for, round_up=True)}, run "
                "`strongroom keys rotate --resume`, then retry"
            )

    # -- internals -----------------------------------------------------------------------------

    async def _rotate_column(
        self,
        column: SealedColumn,
        summary: RotationSummary,
        progress: Callable[[RotationProgress], None] | None,
    ) -> None:
        total = await self._count(column) if progress is not None else 0  # only bars need it
        checked = rewrapped = 0
        async for batch in self._batches(column):
            updates: list[tuple[_Row, SealedValue]] = []
            for row in batch:
                binding = column.binding(row.row_id, row.merchant_id)
                try:
                    value = SealedValue.decode(row.text)
                    if value.key_version == summary.version:
                        continue
                    updates.append((row, await self.envelope.rewrap(value, binding)))
                except (MalformedSealedValue, DecryptionFailed):
                    summary.unreadable.append(f"{column.name} row {row.row_id}")
            written = await self._write(column, updates)
            checked += len(batch)
            rewrapped += written
            summary.checked += len(batch)
            summary.rewrapped += written
            summary.changed_concurrently += len(updates) - written
            if progress is not None:
                progress(RotationProgress(column.name, min(checked, total), total, rewrapped))
        if progress is not None and checked < total:  # rows deleted meanwhile: finish the bar
            progress(RotationProgress(column.name, total, total, rewrapped))

    async def _write(self, column: SealedColumn, updates: list[tuple[_Row, SealedValue]]) -> int:
        if not updates:
            return 0
        written = 0
        async with self.uow.transaction() as tx:
            for row, new in updates:
                result = await tx.repo.conn.execute(
                    update(column.table)
                    .where(
                        column.primary_key == row.row_id,
                        type_coerce(column.column, Text) == row.text,
                    )
                    .values({column.column.name: new})
                )
                written += result.rowcount
            await tx.commit()
        return written

    async def _count(self, column: SealedColumn) -> int:
        async with self.uow.reading() as repo:
            query = select(func.count()).select_from(column.table)
            result = await repo.conn.execute(query.where(column.column.is_not(None)))
            return int(result.scalar_one())

    async def _batches(self, column: SealedColumn) -> AsyncIterator[list[_Row]]:
        """The column's non-null values in primary-key order, one short read per batch. The
        raw text is read, not a SealedValue, so a malformed value is reported, not fatal."""
        text = type_coerce(column.column, Text)
        merchant = column.merchant
        selected: list[Any] = [column.primary_key, text]
        if merchant is not None:
            selected.append(merchant)
        last: Any = None
        while True:
            query = select(*selected).where(column.column.is_not(None))
            if last is not None:
                query = query.where(column.primary_key > last)
            query = query.order_by(column.primary_key).limit(self.batch_size)
            async with self.uow.reading() as repo:
                rows = (await repo.conn.execute(query)).all()
            if not rows:
                return
            yield [_Row(row[0], row[2] if merchant is not None else None, row[1]) for row in rows]
            last = rows[-1][0]
            if len(rows) < self.batch_size:
                return


def _duration(span: timedelta, *, round_up: bool = False) -> str:
    """`4m 30s`, `5m`, `0s`: whole seconds, rounded down, or up (for a wait that is enough)."""
    exact = span.total_seconds()
    seconds = max(0, -int(-exact // 1) if round_up else int(exact // 1))
    minutes, seconds = divmod(seconds, 60)
    if minutes and seconds:
        return f"{minutes}m {seconds}s"
    return f"{minutes}m" if minutes else f"{seconds}s"
