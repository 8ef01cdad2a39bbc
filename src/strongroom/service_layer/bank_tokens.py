"""Rotating every bank item's access token at its provider (`strongroom bank rotate-tokens`).

Each item is its own step: open the sealed token, ask the provider for a new one (the old one
stops working there at once), seal the new one and store it with the time, in one transaction.
A run that is interrupted loses nothing done so far, and running it again picks up the items
not rotated within `not_since` (a day, by default), so a rerun resumes rather than starting
over. The one unavoidable window is between the provider's answer and our commit: the run keeps
it to that single step, and an item lost in it is reported by the next run (its token is
refused) for the customer to re-link.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

import structlog
from sqlalchemy import func, or_, select, update

from strongroom.adapters.banks.port import BankProvider, BankProviderError
from strongroom.adapters.db import tables as t
from strongroom.adapters.kms.envelope import Binding, Envelope
from strongroom.domain.audit import AuditTag, Outcome
from strongroom.domain.clock import Clock
from strongroom.service_layer.audit import AuditLog
from strongroom.service_layer.unit_of_work import UnitOfWork

log = structlog.get_logger(__name__)
_i = t.bank_items


@dataclass
class TokenRotation:
    total: int = 0
    rotated: int = 0
    failed: dict[str, str] = field(default_factory=dict)  # item id → the provider's code

    def as_dict(self) -> dict[str, object]:
        return {"total": self.total, "rotated": self.rotated, "failed": self.failed}


class BankTokens:
    def __init__(
        self,
        uow: UnitOfWork,
        envelope: Envelope,
        clock: Clock,
        *,
        audit: AuditLog,
        provider: BankProvider,
    ) -> None:
        self.uow = uow
        self.envelope = envelope
        self.clock = clock
        self.audit = audit
        self.provider = provider

    async def rotate(
        self,
        *,
        not_since: timedelta = timedelta(days=1),
        progress: Callable[[int, int], None] = lambda done, total: None,
    ) -> TokenRotation:
        cutoff = self.clock.now() - not_since
        due = (
            _i.c.provider == self.provider.name,
            or_(_i.c.token_rotated_at.is_(None), _i.c.token_rotated_at < cutoff),
        )
        async with self.uow.reading() as repo:
            ids = list(
                (await repo.conn.execute(select(_i.c.id).where(*due).order_by(_i.c.id))).scalars()
            )
            # Items rotated in this window already count as done, for the progress bar.
            done_before = (
                await repo.conn.execute(
                    select(func.count()).where(
                        _i.c.provider == self.provider.name, _i.c.token_rotated_at >= cutoff
                    )
                )
            ).scalar_one()
        summary = TokenRotation(total=len(ids) + done_before)
        progress(done_before, summary.total)
        for n, item_id in enumerate(ids, start=1):
            try:
                if await self._rotate_one(item_id):
                    summary.rotated += 1
            except BankProviderError as exc:
                summary.failed[item_id] = exc.code
                log.warning("bank token not rotated", item=item_id, code=exc.code)
            progress(done_before + n, summary.total)
        return summary

    async def _rotate_one(self, item_id: str) -> bool:
        async with self.uow.reading() as repo:
            row = (await repo.conn.execute(select(_i).where(_i.c.id == item_id))).one()
        binding = Binding.for_row(_i, "access_token", row.id, row.merchant_id)
        old = (await self.envelope.open(row.access_token, binding)).decode()
        new = await self.provider.rotate_access_token(old)
        sealed = await self.envelope.seal(new.encode(), binding)
        now = self.clock.now()
        async with self.uow.transaction() as tx:
            done = await tx.repo.conn.execute(
                update(_i)
                .where(_i.c.id == row.id, _i.c.access_token == row.access_token)
                .values(access_token=sealed, token_rotated_at=now, updated_at=now)
            )
            changed = bool(done.rowcount)
            await tx.repo.add_audit_event(
                self.audit.event(
                    AuditTag.BANK_TOKEN_ROTATE,
                    merchant_id=row.merchant_id,
                    livemode=row.livemode,
                    resource=("bank_item", row.id),
                    outcome=Outcome.SUCCESS if changed else Outcome.FAILURE,
                    details={"provider": row.provider},
                )
            )
            await tx.commit()
        return changed
