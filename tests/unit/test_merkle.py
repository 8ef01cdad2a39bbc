"""The audit log's Merkle tree against RFC 9162: roots, proofs and the Frontier are compared with
a reference written from the RFC's recursive definitions, and every proof is checked by both our
verifier and the independent one in tests/rfc9162.py."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from functools import cache

import pytest

from strongroom.domain import merkle
from strongroom.domain.merkle import (
    EMPTY_ROOT,
    Frontier,
    Node,
    consistency_nodes,
    consistency_proof,
    inclusion_nodes,
    inclusion_proof,
    leaf_hash,
    node_hash,
    root_hash,
    root_nodes,
)
from tests import rfc9162

MAX_SIZE = 64
# Entry 0 is empty on purpose: the RFC's leaf prefix must still set it apart from EMPTY_ROOT.
# Twice MAX_SIZE so the wrong-size tests can ask the reference about larger claimed trees.
ENTRIES: tuple[bytes, ...] = (b"", *(f"audit event {i}".encode() for i in range(1, 2 * MAX_SIZE)))

InclusionVerifier = Callable[[bytes, int, int, list[bytes], bytes], bool]
ConsistencyVerifier = Callable[[int, int, list[bytes], bytes, bytes], bool]

INCLUSION_VERIFIERS = [
    pytest.param(merkle.verify_inclusion, id="strongroom"),
    pytest.param(rfc9162.verify_inclusion, id="rfc9162"),
]
CONSISTENCY_VERIFIERS = [
    pytest.param(merkle.verify_consistency, id="strongroom"),
    pytest.param(rfc9162.verify_consistency, id="rfc9162"),
]


# -- Reference: RFC 9162 §2.1.1 MTH, §2.1.3.1 PATH, §2.1.4.1 PROOF/SUBPROOF, as literally as
# -- Python allows, over lists of entries. Slow and obviously right is the point.


def _sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than n (n > 1)."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


@cache
def mth(d: tuple[bytes, ...]) -> bytes:
    n = len(d)
    if n == 0:
        return _sha256(b"")
    if n == 1:
        return _sha256(b"\x00" + d[0])
    k = _split(n)
    return _sha256(b"\x01" + mth(d[:k]) + mth(d[k:]))


def path(m: int, d: tuple[bytes, ...]) -> list[bytes]:
    n = len(d)
    if n == 1:
        return []
    k = _split(n)
    if m < k:
        return [*path(m, d[:k]), mth(d[k:])]
    return [*path(m - k, d[k:]), mth(d[:k])]


def subproof(m: int, d: tuple[bytes, ...], b: bool) -> list[bytes]:
    n = len(d)
    if m == n:
        return [] if b else [mth(d)]
    k = _split(n)
    if m <= k:
        return [*subproof(m, d[:k], b), mth(d[k:])]
    return [*subproof(m - k, d[k:], False), mth(d[:k])]


def proof(m: int, d: tuple[bytes, ...]) -> list[bytes]:
    return subproof(m, d, True)


def stored(level: int, index: int) -> bytes:
    """The reference hash of complete subtree (level, index): what storage would hold."""
    return mth(ENTRIES[index << level : (index + 1) << level])


class Recorder:
    """A node source that logs every read and refuses nodes outside a tree of `size` leaves."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.reads: list[Node] = []

    def __call__(self, level: int, index: int) -> bytes:
        assert level >= 0
        assert index >= 0
        assert (index + 1) << level <= self.size, f"read {(level, index)} beyond size {self.size}"
        self.reads.append((level, index))
        return stored(level, index)


def assert_reads_exactly(recorder: Recorder, listed: Sequence[Node]) -> None:
    # Exactly the listed nodes, each once: a caller fetches them in one query and no more.
    assert sorted(recorder.reads) == sorted(listed)
    assert len(set(listed)) == len(listed)


def flip(value: bytes, bit: int) -> bytes:
    out = bytearray(value)
    out[(bit // 8) % len(out)] ^= 1 << (bit % 8)
    return bytes(out)


def complete_nodes(size: int, *, min_level: int) -> set[Node]:
    return {
        (level, index)
        for level in range(min_level, size.bit_length())
        for index in range(size >> level)
    }


# -- Known answers and the public surface


def test_known_answers() -> None:
    assert EMPTY_ROOT.hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert leaf_hash(b"").hex() == (
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
    )
    assert node_hash(b"l", b"r") == _sha256(b"\x01lr")
    assert Frontier.empty().root() == EMPTY_ROOT
    assert Frontier.empty().size == 0


def test_exported_names() -> None:
    assert set(merkle.__all__) == {
        "EMPTY_ROOT",
        "Frontier",
        "Node",
        "consistency_nodes",
        "consistency_proof",
        "inclusion_nodes",
        "inclusion_proof",
        "leaf_hash",
        "node_hash",
        "root_hash",
        "root_nodes",
        "verify_consistency",
        "verify_inclusion",
    }


# -- Roots and the Frontier


def test_root_hash_matches_reference_at_every_size() -> None:
    for size in range(MAX_SIZE + 1):
        recorder = Recorder(size)
        assert root_hash(size, recorder) == mth(ENTRIES[:size]), size
        assert_reads_exactly(recorder, root_nodes(size))


def test_frontier_emits_reference_subtrees_and_roots() -> None:
    frontier = Frontier.empty()
    store: dict[Node, bytes] = {}
    for size in range(1, MAX_SIZE + 1):
        leaf = leaf_hash(ENTRIES[size - 1])
        store[(0, size - 1)] = leaf
        emitted = frontier.append(leaf)
        for node, digest in emitted:
            assert node[0] >= 1
            assert node not in store, f"{node} emitted twice"
            assert digest == stored(*node), node
            store[node] = digest
        assert frontier.size == size
        assert frontier.root() == mth(ENTRIES[:size]), size
        # Everything completed so far has been handed over, nothing more.
        assert set(store) == complete_nodes(size, min_level=0)

    # What the Frontier emits, plus the leaves, is enough to serve every root and proof.
    def fetch(level: int, index: int) -> bytes:
        return store[level, index]

    for size in range(MAX_SIZE + 1):
        assert root_hash(size, fetch) == mth(ENTRIES[:size])
    for size in range(1, MAX_SIZE + 1):
        for index in range(size):
            assert inclusion_proof(index, size, fetch) == path(index, ENTRIES[:size])
        for first in range(1, size + 1):
            got = consistency_proof(first, size, fetch)
            assert got == proof(first, ENTRIES[:size])


def test_frontier_from_nodes_resumes_at_every_size() -> None:
    for size in range(MAX_SIZE + 1):
        recorder = Recorder(size)
        frontier = Frontier.from_nodes(size, recorder)
        assert_reads_exactly(recorder, root_nodes(size))
        assert frontier.size == size
        assert frontier.root() == mth(ENTRIES[:size])
        for grown in range(size + 1, MAX_SIZE + 1):
            for node, digest in frontier.append(leaf_hash(ENTRIES[grown - 1])):
                assert digest == stored(*node), (size, grown, node)
            assert frontier.root() == mth(ENTRIES[:grown]), (size, grown)


def test_frontier_append_reports_lowest_level_first() -> None:
    frontier = Frontier.empty()
    for entry in ENTRIES[:7]:
        frontier.append(leaf_hash(entry))
    completed = frontier.append(leaf_hash(ENTRIES[7]))
    assert [node for node, _ in completed] == [(1, 3), (2, 1), (3, 0)]


# -- Inclusion proofs


def test_inclusion_proofs_match_reference_and_verify() -> None:
    for size in range(1, MAX_SIZE + 1):
        d = ENTRIES[:size]
        root = mth(d)
        for index in range(size):
            recorder = Recorder(size)
            got = inclusion_proof(index, size, recorder)
            assert got == path(index, d), (index, size)
            assert_reads_exactly(recorder, inclusion_nodes(index, size))
            leaf = leaf_hash(ENTRIES[index])
            assert merkle.verify_inclusion(leaf, index, size, got, root), (index, size)
            assert rfc9162.verify_inclusion(leaf, index, size, got, root), (index, size)


@pytest.mark.parametrize("verify", INCLUSION_VERIFIERS)
def test_inclusion_rejects_index_outside_tree(verify: InclusionVerifier) -> None:
    for size in range(1, MAX_SIZE + 1):
        d = ENTRIES[:size]
        last = leaf_hash(ENTRIES[size - 1])
        good = path(size - 1, d)
        for index in (size, size + 1, -1):
            assert not verify(last, index, size, good, mth(d)), (index, size)
    assert not verify(leaf_hash(b""), 0, 0, [], EMPTY_ROOT)
    # A one-leaf tree's root is its leaf hash, yet index 1 is still outside it.
    assert not verify(leaf_hash(b""), 1, 1, [], leaf_hash(b""))


@pytest.mark.parametrize("verify", INCLUSION_VERIFIERS)
def test_inclusion_rejects_tampering(verify: InclusionVerifier) -> None:
    for size in range(1, MAX_SIZE + 1):
        d = ENTRIES[:size]
        root = mth(d)
        for index in range(size):
            leaf = leaf_hash(ENTRIES[index])
            good = path(index, d)
            case = (index, size)
            if good:
                assert not verify(leaf, index, size, good[:-1], root), case
            assert not verify(leaf, index, size, [*good, root], root), case
            assert not verify(leaf, index, size, [*good, EMPTY_ROOT], root), case
            for i in range(len(good)):
                bad = [*good[:i], flip(good[i], i * 37 + index), *good[i + 1 :]]
                assert not verify(leaf, index, size, bad, root), (*case, i)
            assert not verify(flip(leaf, index), index, size, good, root), case
            assert not verify(leaf, index, size, good, flip(root, size)), case


def test_inclusion_with_wrong_tree_size_is_rejected_unless_the_shape_is_identical() -> None:
    """A proof only fixes the tree size as far as the path's shape does; the size itself is bound
    by the signed tree head. Both verifiers must agree everywhere, and must reject whenever the
    claimed size needs a path of another length."""
    rejected = 0
    for size in range(1, MAX_SIZE + 1):
        d = ENTRIES[:size]
        root = mth(d)
        for index in range(size):
            leaf = leaf_hash(ENTRIES[index])
            good = path(index, d)
            for claimed in (size - 1, size + 1, 2 * size):
                src = merkle.verify_inclusion(leaf, index, claimed, good, root)
                rfc = rfc9162.verify_inclusion(leaf, index, claimed, good, root)
                assert src == rfc, (index, size, claimed)
                if index >= claimed or len(path(index, ENTRIES[:claimed])) != len(good):
                    assert not src, (index, size, claimed)
                rejected += not src
    assert rejected > 0
    # The shape-identical case, made explicit: leaf 0 of 3 has the same path shape as in 4.
    three = ENTRIES[:3]
    assert merkle.verify_inclusion(leaf_hash(three[0]), 0, 4, path(0, three), mth(three))


# -- Consistency proofs


def test_consistency_proofs_match_reference_and_verify() -> None:
    for second in range(1, MAX_SIZE + 1):
        d = ENTRIES[:second]
        second_root = mth(d)
        for first in range(1, second + 1):
            recorder = Recorder(second)
            got = consistency_proof(first, second, recorder)
            case = (first, second)
            assert got == proof(first, d), case
            assert_reads_exactly(recorder, consistency_nodes(first, second))
            first_root = mth(ENTRIES[:first])
            assert merkle.verify_consistency(first, second, got, first_root, second_root), case
            if first < second:
                assert rfc9162.verify_consistency(first, second, got, first_root, second_root), case
            else:
                # RFC 9162 §2.1.4.2 covers 0 < first < second only, and its step 1 fails the
                # empty path that PROOF(n, D[n]) is; our verifier accepts equal roots instead.
                assert got == []
                assert not rfc9162.verify_consistency(first, second, got, first_root, second_root)


@pytest.mark.parametrize("verify", CONSISTENCY_VERIFIERS)
def test_consistency_rejects_size_zero(verify: ConsistencyVerifier) -> None:
    assert not verify(0, 0, [], EMPTY_ROOT, EMPTY_ROOT)
    for second in range(1, MAX_SIZE + 1):
        d = ENTRIES[:second]
        assert not verify(0, second, [], EMPTY_ROOT, mth(d)), second
        assert not verify(0, second, [mth(d)], EMPTY_ROOT, mth(d)), second
        assert not verify(0, second, proof(1, d), EMPTY_ROOT, mth(d)), second


@pytest.mark.parametrize("verify", CONSISTENCY_VERIFIERS)
def test_consistency_rejects_tampering(verify: ConsistencyVerifier) -> None:
    for second in range(1, MAX_SIZE + 1):
        d = ENTRIES[:second]
        second_root = mth(d)
        for first in range(1, second + 1):
            first_root = mth(ENTRIES[:first])
            good = proof(first, d)
            case = (first, second)
            if good:
                assert not verify(first, second, good[:-1], first_root, second_root), case
            assert not verify(first, second, [*good, second_root], first_root, second_root), case
            assert not verify(first, second, [*good, EMPTY_ROOT], first_root, second_root), case
            for i in range(len(good)):
                bad = [*good[:i], flip(good[i], i * 37 + first), *good[i + 1 :]]
                assert not verify(first, second, bad, first_root, second_root), (*case, i)
            assert not verify(first, second, good, flip(first_root, second), second_root), case
            assert not verify(first, second, good, first_root, flip(second_root, first)), case
            if first < second:
                # Swapping the heads claims the log shrank.
                assert not verify(second, first, good, second_root, first_root), case


def test_consistency_with_wrong_tree_size_is_rejected_unless_the_shape_is_identical() -> None:
    """As for inclusion: the two verifiers agree on every wrong size, and reject whenever the
    claimed sizes need a proof of another length."""
    rejected = 0
    for second in range(2, MAX_SIZE + 1):
        d = ENTRIES[:second]
        second_root = mth(d)
        for first in range(1, second):
            first_root = mth(ENTRIES[:first])
            good = proof(first, d)
            claims = [
                (first, second - 1),
                (first, second + 1),
                (first - 1, second),
                (first + 1, second),
            ]
            for claimed_first, claimed_second in claims:
                args = (claimed_first, claimed_second, good, first_root, second_root)
                src = merkle.verify_consistency(*args)
                rfc = rfc9162.verify_consistency(*args)
                case = (first, second, claimed_first, claimed_second)
                assert src == rfc, case
                if not 0 < claimed_first < claimed_second or len(
                    proof(claimed_first, ENTRIES[:claimed_second])
                ) != len(good):
                    assert not src, case
                rejected += not src
    assert rejected > 0


# -- Malformed input


def test_verifiers_return_false_for_malformed_hashes() -> None:
    d = ENTRIES[:5]
    leaf = leaf_hash(d[2])
    good = path(2, d)
    short = good[0][:31]
    assert not merkle.verify_inclusion(leaf, 2, 5, [short, *good[1:]], mth(d))
    assert not merkle.verify_inclusion(leaf[:31], 2, 5, good, mth(d))
    assert not merkle.verify_inclusion(leaf, 2, 5, good, b"")
    assert not merkle.verify_inclusion(leaf, 2, 5, [good[0].hex(), *good[1:]], mth(d))  # type: ignore[list-item]
    cons = proof(3, d)
    assert not merkle.verify_consistency(3, 5, [short, *cons[1:]], mth(d[:3]), mth(d))
    assert not merkle.verify_consistency(3, 5, cons, mth(d[:3]) + b"\x00", mth(d))
    assert not merkle.verify_consistency(3, 5, cons, mth(d[:3]), None)  # type: ignore[arg-type]
    assert not merkle.verify_consistency(-3, 5, cons, mth(d[:3]), mth(d))
    assert not merkle.verify_consistency(-1, -1, [], EMPTY_ROOT, EMPTY_ROOT)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: inclusion_proof(3, 3, stored), "outside a tree of size 3"),
        (lambda: inclusion_proof(-1, 3, stored), "outside a tree of size 3"),
        (lambda: inclusion_proof(0, 0, stored), "tree size >= 1"),
        (lambda: inclusion_nodes(0, -2), "tree size >= 1"),
        (lambda: consistency_proof(0, 3, stored), "first tree size >= 1"),
        (lambda: consistency_proof(0, 0, stored), "first tree size >= 1"),
        (lambda: consistency_proof(-1, 3, stored), "first tree size >= 1"),
        (lambda: consistency_proof(4, 3, stored), "larger than second"),
        (lambda: consistency_nodes(2, -1), "larger than second"),
        (lambda: root_nodes(-1), "tree size must be >= 0"),
        (lambda: root_hash(-1, stored), "tree size must be >= 0"),
        (lambda: Frontier.from_nodes(-1, stored), "tree size must be >= 0"),
    ],
)
def test_builders_refuse_out_of_range_input(call: Callable[[], object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()
