"""Column types that behave the same on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Dialect, Text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.types import TypeDecorator

from strongroom.adapters.kms.sealed import SealedValue


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC timestamps; SQLite stores them naive, so we re-attach UTC on load."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime refused; pass an aware UTC datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


Json: Any = JSON().with_variant(JSONB(), "postgresql")


class Sealed(TypeDecorator[SealedValue]):
    """An envelope-encrypted secret. The column holds only ciphertext and the wrapped data key;
    sealing and opening take the row's identity as associated data, so they happen in code that
    knows the row (see strongroom.adapters.kms.envelope), never in the type. Key rotation finds
    every column of this type in the schema and re-wraps its data keys."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: SealedValue | None, dialect: Dialect) -> str | None:
        if value is None:
            return None
        if not isinstance(value, SealedValue):
            raise TypeError("a Sealed column stores SealedValue, never plaintext")
        return value.encode()

    def process_result_value(self, value: str | None, dialect: Dialect) -> SealedValue | None:
        return None if value is None else SealedValue.decode(value)
