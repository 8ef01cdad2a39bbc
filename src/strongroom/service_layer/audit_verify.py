"""`strongroom audit verify`: recompute the audit tree from the event rows and check it against
every signed tree head, stopping at the first thing that does not hold.

Trust comes from two places only: the event rows themselves (re-hashed here, never taking a
stored hash on faith) and the signing key sealed by the keyring (a database copy alone cannot
forge a signature). Every head's root is recomputed from one pass over the leaves, so two
consecutive heads that both match are consistent in RFC 9162's sense: the first tree is a
prefix of the second.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from strongroom.adapters.db.audit_store import AuditStore, TreeHead, event_from_row
from strongroom.adapters.kms.envelope import Envelope
from strongroom.domain import merkle
from strongroom.domain.audit import tree_head_message
from strongroom.service_layer.audit_sequencer import public_hex, signing_key_binding
from strongroom.service_layer.unit_of_work import UnitOfWork

# An event may commit a moment after a sequencer pass began; one still outside the tree this
# long after a later head was signed was not written by Strongroom's own transactions.
PENDING_GRACE = timedelta(minutes=5)


@dataclass
class VerifyReport:
    entries: int = 0
    tree_heads: int = 0
    pending: int = 0
    problem: str | None = None  # the first thing found wrong; None when the log verifies
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.problem is None


@dataclass(frozen=True)
class KnownHead:
    """A tree head saved earlier outside the database (e.g. from GET /v1/audit/tree_heads/latest):
    the anchor that shows the log was not cut back to an older, self-consistent state."""

    tree_size: int
    root_hash: bytes


async def verify_log(
    uow: UnitOfWork,
    envelope: Envelope,
    progress: Callable[[int, int], None] | None = None,
    *,
    known: KnownHead | None = None,
) -> VerifyReport:
    """Check the whole log. `progress(done, total)` is called as leaves are checked."""
    report = VerifyReport()
    # One snapshot throughout: a sequencer pass committing mid-check must not look like leaves
    # that no head covers.
    async with uow.snapshot() as repo:
        store = AuditStore(repo.conn)
        keys, problem = await _trusted_keys(store, envelope)
        heads = await store.heads()
        report.tree_heads = len(heads)
        if problem is None:
            problem = _check_heads_order(heads)
        if problem is None and known is not None:
            problem = _check_known(heads, known)
        if problem is None:
            problem = await _check_leaves(store, heads, keys, report, progress)
        if problem is None:
            problem = await _check_nodes(store, report.entries)
        if problem is None and heads:
            problem = await _check_pending(store, heads[-1], report)
    report.problem = problem
    return report


async def _trusted_keys(
    store: AuditStore, envelope: Envelope
) -> tuple[dict[str, Ed25519PublicKey], str | None]:
    """Public keys derived from the sealed private keys, not read from the table: a forged
    public key column would otherwise vouch for forged heads."""
    keys: dict[str, Ed25519PublicKey] = {}
    for row in await store.signing_keys():
        try:
            raw = await envelope.open(row.private_key, signing_key_binding(row.id))
        except Exception as exc:  # DecryptionFailed, or a keyring error: both are fatal here
            return keys, f"signing key {row.id}: cannot open its sealed private key ({exc})"
        private = Ed25519PrivateKey.from_private_bytes(raw)
        if public_hex(private) != row.public_key:
            return keys, f"signing key {row.id}: stored public key does not match the private key"
        keys[row.id] = private.public_key()
    return keys, None


def _check_heads_order(heads: list[TreeHead]) -> str | None:
    for earlier, later in itertools.pairwise(heads):
        if later.timestamp_ms < earlier.timestamp_ms:
            return (
                f"tree head {later.tree_size}: its timestamp is earlier than tree head "
                f"{earlier.tree_size}'s"
            )
    return None


def _check_known(heads: list[TreeHead], known: KnownHead) -> str | None:
    match = next((h for h in heads if h.tree_size == known.tree_size), None)
    if match is None:
        return f"tree head {known.tree_size}: gone from the log (cut back to an older state?)"
    if match.root_hash != known.root_hash:
        return f"tree head {known.tree_size}: its root is not the one saved earlier"
    return None


async def _check_nodes(store: AuditStore, size: int) -> str | None:
    """Every stored complete-subtree hash is the hash of its two children, none is missing and
    none is extra. Proofs and the sequencer's restarts are built from these rows, so one bad
    row would hand out proofs that fail, or get signed into every later head. Level 0 (the
    leaf hashes) was checked against the entries already."""
    level = 1
    while True:
        expected = size >> level
        children = store.level_hashes(level - 1)
        index = 0
        async for idx, stored in store.level_hashes(level):
            if idx != index:
                return f"tree node {level}/{index}: missing"
            if idx >= expected:
                return f"tree node {level}/{idx}: beyond the tree (inserted?)"
            (_, left), (_, right) = await anext(children), await anext(children)
            if merkle.node_hash(left, right) != stored:
                return f"tree node {level}/{idx}: does not hash its two children (edited?)"
            index += 1
        if index != expected:
            return f"tree node {level}/{index}: missing"
        if expected == 0:
            return None
        level += 1


def _check_head(
    head: TreeHead, root: bytes, keys: dict[str, Ed25519PublicKey], start: int
) -> str | None:
    key = keys.get(head.key_id)
    if key is None:
        return f"tree head {head.tree_size}: signed by unknown key {head.key_id}"
    try:
        key.verify(
            head.signature, tree_head_message(head.tree_size, head.timestamp_ms, head.root_hash)
        )
    except InvalidSignature:
        return f"tree head {head.tree_size}: the signature does not verify (replaced or edited)"
    if head.root_hash != root:
        return (
            f"tree head {head.tree_size}: root hash does not match the entries; the first "
            f"changed leaf is at index {start} or later"
        )
    return None


async def _check_leaves(
    store: AuditStore,
    heads: list[TreeHead],
    keys: dict[str, Ed25519PublicKey],
    report: VerifyReport,
    progress: Callable[[int, int], None] | None,
) -> str | None:
    total = heads[-1].tree_size if heads else 0
    frontier = merkle.Frontier.empty()
    next_head = 0
    previous_size = 0
    async for row in store.leaves_with_events():
        index = frontier.size
        if row.leaf_index != index:
            return f"leaf {index}: missing (the next leaf stored is {row.leaf_index})"
        if row.seq is None:
            return f"leaf {index}: its event (seq {row.event_seq}) is missing (deleted?)"
        event = event_from_row(row)
        leaf = merkle.leaf_hash(event.entry())
        if leaf.hex() != row.leaf_hash:
            return f"leaf {index} (event {event.id}): the entry does not match its leaf hash"
        frontier.append(leaf)
        if next_head < len(heads) and heads[next_head].tree_size == frontier.size:
            problem = _check_head(heads[next_head], frontier.root(), keys, previous_size)
            if problem:
                return problem
            previous_size = frontier.size
            next_head += 1
        if progress is not None and frontier.size % 10_000 == 0:
            progress(frontier.size, total)
    report.entries = frontier.size
    if progress is not None:
        progress(frontier.size, total)
    if next_head < len(heads):
        head = heads[next_head]
        return (
            f"tree head {head.tree_size}: the log has only {frontier.size} leaves (leaves deleted?)"
        )
    if frontier.size > total:
        return f"leaf {total}: the log has leaves no signed tree head covers (inserted?)"
    return None


async def _check_pending(store: AuditStore, latest: TreeHead, report: VerifyReport) -> str | None:
    """An event outside the tree is normal while the sequencer catches up, oldest first. One
    below events already in the tree, and older than a later signed head by more than the
    grace, was not written by a transaction of Strongroom's (those commit in milliseconds)."""
    signed_at = datetime.fromtimestamp(latest.timestamp_ms / 1000, UTC)
    stale = await store.pending_before(
        signed_at - PENDING_GRACE, below_seq=await store.max_integrated_seq(), limit=1
    )
    if stale:
        event = stale[0]
        return (
            f"event {event.id}: outside the tree although older than tree head "
            f"{latest.tree_size} (inserted?)"
        )
    report.pending = await store.count_pending()
    return None
