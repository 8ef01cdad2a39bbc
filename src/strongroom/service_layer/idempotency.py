"""Idempotency-Key handling, Stripe's way, stored in the same transactions as the work.

The key row is inserted in the first transaction of a request and its response stored in the
last, so a validation error (rolled back) leaves no key behind, and the key costs no extra
commit. The row also records the id of the object the request created, so a retry that takes
over an abandoned request (its lock expired) resumes that object instead of making another.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from strongroom.domain.errors import IdempotencyKeyInUse, IdempotencyMismatch
from strongroom.service_layer.unit_of_work import Transaction

MAX_KEY_LENGTH = 255


@dataclass(frozen=True)
class StoredResponse:
    status: int
    body: str


Renderer = Callable[[object], StoredResponse]


def fingerprint(params: dict[str, Any]) -> str:
    """A stable digest of the request's parameters, independent of JSON key order."""
    canonical = json.dumps(params, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass
class IdempotentRequest:
    """One request's claim on a key. `render` turns the final result or error into the
    response that is stored and replayed byte for byte."""

    merchant_id: str
    livemode: bool
    key: str
    method: str
    path: str
    fingerprint: str
    render: Renderer
    lock_for: timedelta
    row_id: int | None = None
    resource_id: str | None = None
    replay: StoredResponse | None = None
    response: StoredResponse | None = field(default=None)
    _took_over: bool = field(default=False, init=False)

    async def claim(self, tx: Transaction, now: datetime, resource_id: str | None = None) -> None:
        """Take the key, or set `replay`, or raise IdempotencyMismatch / IdempotencyKeyInUse.

        `resource_id` names the object this request is about to create in the same
        transaction; after a takeover, `self.resource_id` names the one the dead request made.
        """
        repo = tx.repo
        row_id = await repo.insert_idempotency_key(
            {
                "merchant_id": self.merchant_id,
                "livemode": self.livemode,
                "key": self.key,
                "method": self.method,
                "path": self.path,
                "fingerprint": self.fingerprint,
                "resource_id": resource_id,
                "locked_until": now + self.lock_for,
                "created_at": now,
            }
        )
        if row_id is not None:
            self.row_id = row_id
            self.resource_id = resource_id
            return
        row = await repo.get_idempotency_key(self.merchant_id, self.livemode, self.key)
        if row is None:  # pruned between our insert and this read: the key is free again
            await self.claim(tx, now, resource_id)
            return
        if (row.method, row.path, row.fingerprint) != (self.method, self.path, self.fingerprint):
            raise IdempotencyMismatch(
                "Keys for idempotent requests can only be used with the same parameters they "
                "were first used with. Try using a key other than "
                f"{self.key!r} if you meant to execute a different request."
            )
        if row.response_status is not None:
            self.replay = StoredResponse(row.response_status, row.response_body)
            return
        if row.locked_until is not None and row.locked_until > now:
            raise IdempotencyKeyInUse(
                "There is currently another in-progress request using this Idempotency-Key. "
                "Try again once it has finished."
            )
        # The request that held this key died; take it over and resume its work.
        await repo.update_idempotency_key(row.id, locked_until=now + self.lock_for)
        self.row_id = row.id
        self.resource_id = row.resource_id
        self._took_over = True

    @property
    def took_over(self) -> bool:
        """True when this request resumed one that died, rather than starting afresh."""
        return self._took_over

    async def finish(self, tx: Transaction, outcome: object) -> None:
        assert self.row_id is not None
        self.response = self.render(outcome)
        await tx.repo.finish_idempotency_key(self.row_id, self.response.status, self.response.body)

    async def release(self, tx: Transaction, now: datetime) -> None:
        """Unlock without a response, so an immediate retry resumes the work."""
        assert self.row_id is not None
        await tx.repo.update_idempotency_key(self.row_id, locked_until=now)


@dataclass(frozen=True)
class Replayed:
    """The request's Idempotency-Key already has a stored response; the caller returns it."""
