"""The audit sequencer: gives committed events their leaves in the Merkle tree, in order, and
signs a tree head over the result. Runs in the worker; any number may run side by side.

Events commit in any order (a transaction that started first may commit last), so the leaf
order is the sequencer's: each pass takes the committed events not yet in the tree, oldest
first, and appends them. Leaves, the tree's new complete-subtree nodes and the signed head are
written in one transaction, so the log never has unsigned leaves.
"""

from __future__ import annotations

import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from sqlalchemy.exc import IntegrityError

from strongroom.adapters.db import tables as t
from strongroom.adapters.db.audit_store import AuditStore, TreeHead
from strongroom.adapters.kms.envelope import Binding, Envelope
from strongroom.domain import merkle
from strongroom.domain.audit import tree_head_message
from strongroom.domain.clock import Clock
from strongroom.domain.ids import new_id
from strongroom.service_layer.unit_of_work import UnitOfWork

log = structlog.get_logger(__name__)


class AuditLogDamaged(RuntimeError):
    """The stored tree disagrees with its own signed heads. The sequencer stops signing rather
    than sign over damage; `strongroom audit verify` names what is wrong."""


def signing_key_binding(key_id: str) -> Binding:
    return Binding.for_row(t.audit_signing_keys, "private_key", key_id)


def public_hex(key: Ed25519PrivateKey) -> str:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex()


class SigningKeys:
    """The Ed25519 key that signs tree heads. Its private half is stored sealed by the keyring,
    so a copy of the database alone cannot forge a tree head."""

    def __init__(self, envelope: Envelope, clock: Clock) -> None:
        self.envelope = envelope
        self.clock = clock
        self._current: tuple[str, Ed25519PrivateKey] | None = None

    def forget(self) -> None:
        self._current = None

    async def current(self, store: AuditStore) -> tuple[str, Ed25519PrivateKey]:
        if self._current is None:
            rows = await store.signing_keys()
            if rows:
                row = rows[-1]
                raw = await self.envelope.open(row.private_key, signing_key_binding(row.id))
                self._current = (row.id, Ed25519PrivateKey.from_private_bytes(raw))
            else:
                self._current = await self._create(store)
        return self._current

    async def _create(self, store: AuditStore) -> tuple[str, Ed25519PrivateKey]:
        key_id = new_id("ask", 16)
        key = Ed25519PrivateKey.generate()
        raw = key.private_bytes_raw()
        await store.add_signing_key(
            {
                "id": key_id,
                "public_key": public_hex(key),
                "private_key": await self.envelope.seal(raw, signing_key_binding(key_id)),
                "created_at": self.clock.now(),
            }
        )
        return key_id, key


class Sequencer:
    """One pass at a time: `run_once()` integrates up to `batch` events and signs a head.

    To find unsequenced events without scanning the whole log, a pass looks only at events
    after (the newest integrated event minus `lookback`); every `sweep_every` passes it looks at
    everything, so an event whose transaction committed very late is still picked up."""

    def __init__(
        self,
        uow: UnitOfWork,
        clock: Clock,
        keys: SigningKeys,
        *,
        batch: int = 5000,
        lookback: int = 100_000,
        sweep_every: int = 600,
    ) -> None:
        self.uow = uow
        self.clock = clock
        self.keys = keys
        self.batch = batch
        self.lookback = lookback
        self.sweep_every = sweep_every
        self._passes = 0
        self._frontier: merkle.Frontier | None = None
        self._signed_size = 0  # the largest head this process has seen: heads never shrink

    async def run_once(self) -> int:
        """Integrate pending events; returns how many. A pass that loses a race with another
        sequencer rolls back and integrates nothing (the next pass catches up)."""
        sweep = self._passes % self.sweep_every == 0
        self._passes += 1
        if not sweep and not await self._anything_new():
            return 0
        frontier = self._frontier
        self._frontier = None  # restored only after a commit: the in-memory copy mutates
        try:
            count, frontier = await self._pass(frontier, sweep)
        except Exception as exc:
            self.keys.forget()  # a key created in the rolled-back transaction does not exist
            if isinstance(exc, IntegrityError):
                log.info("audit sequencer lost a race; retrying on the next pass")
                return 0
            raise
        self._frontier = frontier
        return count

    async def _anything_new(self) -> bool:
        """A read first, so an idle log costs no write transaction: on SQLite each one would
        take the database's single write lock away from payments, every second."""
        async with self.uow.reading() as repo:
            store = AuditStore(repo.conn)
            floor = max(0, await store.max_integrated_seq() - self.lookback)
            return bool(await store.pending(after_seq=floor, limit=1))

    async def _pass(
        self, frontier: merkle.Frontier | None, sweep: bool
    ) -> tuple[int, merkle.Frontier]:
        async with self.uow.transaction() as tx:
            store = AuditStore(tx.repo.conn)
            head = await store.latest_head(for_update=True)
            size = head.tree_size if head is not None else 0
            if size < self._signed_size:
                raise AuditLogDamaged(
                    f"the latest signed tree head has size {size}, but this process saw "
                    f"{self._signed_size}: the log was cut back"
                )
            if frontier is None or frontier.size != size:
                frontier = await self._frontier_at(store, head)
            floor = 0 if sweep else max(0, await store.max_integrated_seq() - self.lookback)
            pending = await store.pending(after_seq=floor, limit=self.batch)
            if not pending:
                return 0, frontier
            leaves = []
            completed: list[tuple[merkle.Node, bytes]] = []
            for seq, event in pending:
                leaf = merkle.leaf_hash(event.entry())
                leaves.append(
                    {"leaf_index": frontier.size, "event_seq": seq, "leaf_hash": leaf.hex()}
                )
                completed.extend(frontier.append(leaf))
            await store.add_leaves(leaves)
            await store.add_nodes(completed)
            key_id, key = await self.keys.current(store)
            now_ms = int(self.clock.now().timestamp() * 1000)
            # Tree heads never go back in time, even if the clock does.
            timestamp_ms = max(now_ms, head.timestamp_ms if head is not None else 0)
            root = frontier.root()
            signature = key.sign(tree_head_message(frontier.size, timestamp_ms, root))
            await store.add_head(TreeHead(frontier.size, root, timestamp_ms, key_id, signature))
            await tx.commit()
        self._signed_size = frontier.size
        return len(pending), frontier

    @staticmethod
    async def _frontier_at(store: AuditStore, head: TreeHead | None) -> merkle.Frontier:
        """The tree's right edge, rebuilt from stored nodes and checked against the signed
        root, so damage to the nodes is never carried into the next head."""
        size = head.tree_size if head is not None else 0
        wanted = merkle.root_nodes(size)
        nodes = await store.nodes(wanted)
        if len(nodes) != len(wanted):
            raise AuditLogDamaged(f"tree nodes for size {size} are missing")
        frontier = merkle.Frontier.from_nodes(size, lambda lv, ix: nodes[(lv, ix)])
        if head is not None and frontier.root() != head.root_hash:
            raise AuditLogDamaged(f"the stored tree nodes do not give tree head {size}'s root")
        return frontier
