"""Envelope encryption of secrets at rest, bound to the row that holds them.

Each value gets its own AES-256-GCM data key and 96-bit random nonce; the data key is wrapped
by the keyring's current master key version and stored beside the ciphertext (see
`strongroom.adapters.kms.sealed`). The row's identity (table, column, row id, merchant) is the
GCM associated data and the KMS encryption context, so a value copied to another row, column,
table or merchant does not open.

How a repository keeps a secret in a `Sealed` column (the easy path, so use it):

    binding = Binding.for_row(t.gateway_credentials, "secret", row_id, merchant_id)
    sealed = await envelope.seal(secret.encode(), binding)     # a SealedValue
    await conn.execute(t.gateway_credentials.insert().values(id=row_id, ..., secret=sealed))
    ...
    row = (await conn.execute(select(...))).one()
    secret = (await envelope.open(row.secret, binding)).decode()

Seal before the row is written (the id is known up front: ids are generated in code), and keep
keyring calls outside long transactions where you can, since AWS KMS is a network call.
`strongroom keys rotate` finds every `Sealed` column by its type and re-wraps it; nothing else
is needed for a new table, provided its primary key is one column and its tenant column, if
any, is called `merchant_id`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import Table

from strongroom.adapters.db.types import Sealed
from strongroom.adapters.kms.port import DecryptionFailed, Keyring, UnknownKeyVersion
from strongroom.adapters.kms.sealed import MalformedSealedValue, SealedValue

__all__ = ["Binding", "DecryptionFailed", "Envelope"]

NONCE_BYTES = 12
KEY_BYTES = 32
FORMAT_VERSION = 1
MERCHANT_COLUMN = "merchant_id"


@dataclass(frozen=True, slots=True)
class Binding:
    """Where a sealed value lives. `merchant_id` is "" for installation-wide rows."""

    table: str
    column: str
    row_id: str
    merchant_id: str = ""

    def __post_init__(self) -> None:
        if not (self.table and self.column and self.row_id):
            raise ValueError("a binding names a table, a column and a row id")

    @classmethod
    def for_row(
        cls, table: Table, column: str, row_id: object, merchant_id: str | None = None
    ) -> Binding:
        """The binding of `table.column` in the row whose primary key is `row_id`.

        Raises ValueError when the column is not `Sealed`, when the table has a non-null
        `merchant_id` column and no merchant is given, or when a merchant is given for a table
        without one: a mistake here would otherwise surface only when rotation cannot open the
        value.
        """
        if column not in table.c or not isinstance(table.c[column].type, Sealed):
            raise ValueError(f"{table.name}.{column} is not a Sealed column")
        tenant = table.c.get(MERCHANT_COLUMN)
        if tenant is None and merchant_id:
            raise ValueError(f"{table.name} has no {MERCHANT_COLUMN}; its secrets bind to none")
        if tenant is not None and not tenant.nullable and not merchant_id:
            raise ValueError(f"{table.name}.{column} is per merchant: pass its merchant_id")
        return cls(table.name, column, str(row_id), merchant_id or "")

    def context(self) -> dict[str, str]:
        """The KMS encryption context (empty merchant left out: KMS wants non-empty values)."""
        context = {"table": self.table, "column": self.column, "row": self.row_id}
        if self.merchant_id:
            context["merchant"] = self.merchant_id
        return context

    def associated_data(self) -> bytes:
        """Canonical JSON (sorted keys, with a format version): no two bindings share it."""
        fields: dict[str, Any] = {
            "v": FORMAT_VERSION,
            "table": self.table,
            "column": self.column,
            "row": self.row_id,
            "merchant": self.merchant_id,
        }
        return json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()

    def __str__(self) -> str:
        where = f"{self.table}.{self.column} of row {self.row_id}"
        return f"{where} (merchant {self.merchant_id})" if self.merchant_id else where


class Envelope:
    """Seals and opens secrets with per-value data keys from `keyring`."""

    def __init__(self, keyring: Keyring) -> None:
        self.keyring = keyring

    async def seal(self, plaintext: bytes, binding: Binding) -> SealedValue:
        data_key = await self.keyring.generate_data_key(binding.context())
        nonce = os.urandom(NONCE_BYTES)
        ciphertext = AESGCM(data_key.plaintext).encrypt(nonce, plaintext, binding.associated_data())
        return SealedValue(data_key.version, data_key.wrapped, nonce, ciphertext)

    async def open(self, sealed: SealedValue | str, binding: Binding) -> bytes:
        """The plaintext. Raises DecryptionFailed, naming the row, for anything that does not
        open: a value moved from elsewhere, any altered bit, a retired key version, or stored
        text that is not a sealed value."""
        value = _decoded(sealed, binding)
        data_key = await self._unwrap(value, binding)
        if len(value.nonce) != NONCE_BYTES:
            raise _failure(binding, "its nonce has the wrong length")
        try:
            return AESGCM(data_key).decrypt(
                value.nonce, value.ciphertext, binding.associated_data()
            )
        except InvalidTag:
            raise _failure(
                binding, "the ciphertext does not authenticate (altered, or sealed for another row)"
            ) from None

    async def rewrap(self, sealed: SealedValue | str, binding: Binding) -> SealedValue:
        """The same data key and ciphertext, with the data key wrapped under the current
        master key version. Raises DecryptionFailed when the old wrapping does not open."""
        value = _decoded(sealed, binding)
        data_key = await self._unwrap(value, binding)
        wrapped, version = await self.keyring.wrap(data_key, binding.context())
        return SealedValue(version, wrapped, value.nonce, value.ciphertext)

    async def _unwrap(self, value: SealedValue, binding: Binding) -> bytes:
        try:
            data_key = await self.keyring.unwrap(
                value.wrapped_key, value.key_version, binding.context()
            )
        except UnknownKeyVersion:
            raise _failure(
                binding, f"its key version {value.key_version} is retired or unknown"
            ) from None
        except DecryptionFailed:
            raise _failure(
                binding,
                f"its wrapped data key does not open under key version {value.key_version} "
                "(altered, or sealed for another row)",
            ) from None
        if len(data_key) != KEY_BYTES:
            raise _failure(binding, "its data key has the wrong length")
        return data_key


def _decoded(sealed: SealedValue | str, binding: Binding) -> SealedValue:
    if isinstance(sealed, SealedValue):
        return sealed
    try:
        return SealedValue.decode(sealed)
    except MalformedSealedValue as exc:
        raise _failure(binding, f"the stored text is not a sealed value ({exc})") from None


def _failure(binding: Binding, why: str) -> DecryptionFailed:
    return DecryptionFailed(f"cannot decrypt {binding}: {why}")
