"""RFC 9162 Merkle tree hashing, proofs and their verification: the audit log's tamper-evident tree.

Storage keeps only complete-subtree hashes, addressed as `Node = (level, index)`; every root and
proof is folded from them, so a caller fetches the listed nodes in one query and never a leaf
range.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

__all__ = [
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
]

_sha256 = hashlib.sha256
_HASH_SIZE = 32

EMPTY_ROOT: bytes = _sha256(b"").digest()
"""MTH({}): RFC 9162 defines the root of an empty tree as the hash of the empty string."""

Node = tuple[int, int]
"""(level, index): the complete subtree of 2**level leaves covering leaf indices
[index * 2**level, (index + 1) * 2**level). Level 0 is the leaf hashes themselves."""

NodeSource = Callable[[int, int], bytes]
"""Returns the stored hash of node (level, index); typically `dict.__getitem__`."""

_Span = tuple[int, int]
# (start, size): a run of leaves whose MTH a proof needs. Every span the RFC's recursion produces
# starts at a multiple of the smallest power of two >= its size (it splits at the largest power of
# two below n, so left parts are complete and right parts stay aligned), which is what lets
# `_span_nodes` decompose it greedily into complete subtrees.


def leaf_hash(entry: bytes) -> bytes:
    """SHA-256(0x00 || entry); the 0x00 prefix keeps a leaf from passing for an interior node."""
    return _sha256(b"\x00" + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 || left || right); the 0x01 prefix is the interior half of that separation."""
    return _sha256(b"\x01" + left + right).digest()


def _largest_power_of_two_below(n: int) -> int:
    """The RFC's split point k for n > 1: k < n <= 2k."""
    return 1 << ((n - 1).bit_length() - 1)


def _span_nodes(start: int, size: int) -> list[Node]:
    """The complete subtrees tiling an aligned span, left to right, largest first."""
    nodes: list[Node] = []
    while size:
        level = size.bit_length() - 1
        nodes.append((level, start >> level))
        start += 1 << level
        size -= 1 << level
    return nodes


def _span_hash(start: int, size: int, node: NodeSource) -> bytes:
    """MTH of an aligned span, folded right to left from its complete subtrees.

    Folding from the right reproduces the RFC's split: the leftmost (largest) subtree is exactly
    the left half MTH(D[0:k]) and everything after it is the right half, recursively.
    """
    nodes = _span_nodes(start, size)
    level, index = nodes[-1]
    digest = node(level, index)
    for level, index in reversed(nodes[:-1]):
        digest = node_hash(node(level, index), digest)
    return digest


def _check_tree_size(size: int) -> None:
    if size < 0:
        raise ValueError(f"tree size must be >= 0, got {size}")


def _inclusion_spans(index: int, size: int) -> list[_Span]:
    """PATH(index, D[size]) from RFC 9162 §2.1.3.1, unrolled: one span per element, leaf end first.

    Raises ValueError unless 0 <= index < size.
    """
    if size <= 0:
        raise ValueError(f"an inclusion proof needs a tree size >= 1, got {size}")
    if not 0 <= index < size:
        raise ValueError(f"leaf index {index} is outside a tree of size {size}")
    spans: list[_Span] = []
    start = 0
    while size > 1:
        k = _largest_power_of_two_below(size)
        if index - start < k:
            spans.append((start + k, size - k))
            size = k
        else:
            spans.append((start, k))
            start += k
            size -= k
    # The recursion appends each level's sibling after the deeper path, so the top comes last.
    spans.reverse()
    return spans


def _consistency_spans(first: int, second: int) -> list[_Span]:
    """PROOF(first, D[second]) = SUBPROOF(first, D[second], true) from RFC 9162 §2.1.4.1, unrolled.

    Raises ValueError unless 0 < first <= second.
    """
    if first <= 0:
        raise ValueError(f"a consistency proof needs a first tree size >= 1, got {first}")
    if first > second:
        raise ValueError(f"first tree size {first} is larger than second tree size {second}")
    spans: list[_Span] = []
    start, m, n = 0, first, second
    known = True  # SUBPROOF's b: MTH(D[0:m]) is the first root the verifier already holds
    while m != n:
        k = _largest_power_of_two_below(n)
        if m <= k:
            spans.append((start + k, n - k))
            n = k
        else:
            spans.append((start, k))
            start += k
            m -= k
            n -= k
            known = False
    if not known:
        spans.append((start, m))
    spans.reverse()
    return spans


def _nodes_of(spans: list[_Span]) -> list[Node]:
    return [node for start, size in spans for node in _span_nodes(start, size)]


def root_nodes(size: int) -> list[Node]:
    """The nodes `root_hash(size, ...)` reads, left to right; [] for the empty tree.

    Raises ValueError for a negative size.
    """
    _check_tree_size(size)
    return _span_nodes(0, size)


def root_hash(size: int, node: NodeSource) -> bytes:
    """MTH(D[size]) folded from `root_nodes(size)`; EMPTY_ROOT for size 0.

    Raises ValueError for a negative size.
    """
    _check_tree_size(size)
    if size == 0:
        return EMPTY_ROOT
    return _span_hash(0, size, node)


def inclusion_nodes(index: int, size: int) -> list[Node]:
    """The nodes `inclusion_proof(index, size, ...)` reads.

    Raises ValueError unless 0 <= index < size.
    """
    return _nodes_of(_inclusion_spans(index, size))


def inclusion_proof(index: int, size: int, node: NodeSource) -> list[bytes]:
    """RFC 9162 PATH(index, D[size]): the audit path from leaf `index`, leaf end first.

    Raises ValueError unless 0 <= index < size.
    """
    return [_span_hash(start, n, node) for start, n in _inclusion_spans(index, size)]


def consistency_nodes(first: int, second: int) -> list[Node]:
    """The nodes `consistency_proof(first, second, ...)` reads.

    Raises ValueError unless 0 < first <= second.
    """
    return _nodes_of(_consistency_spans(first, second))


def consistency_proof(first: int, second: int, node: NodeSource) -> list[bytes]:
    """RFC 9162 PROOF(first, D[second]): shows the tree of `first` leaves is a prefix of `second`.

    Empty when first == second, as the RFC's SUBPROOF gives. Size 0 is refused because the RFC
    defines no proof from the empty tree (every tree extends it, so there is nothing to prove).
    Raises ValueError unless 0 < first <= second.
    """
    return [_span_hash(start, n, node) for start, n in _consistency_spans(first, second)]


def _all_hashes(*values: object) -> bool:
    # A verifier is handed untrusted input; anything but 32-byte strings is a failed proof, not a
    # crash.
    return all(isinstance(v, bytes) and len(v) == _HASH_SIZE for v in values)


def verify_inclusion(
    leaf: bytes, index: int, size: int, path: Sequence[bytes], root: bytes
) -> bool:
    """Whether `path` proves leaf hash `leaf` sits at `index` in the tree of `size` with `root`.

    Rebuilds the path's shape from (index, size) and folds the given hashes along it, rather than
    the RFC's bit-shifting walk, so the tests can check one against the other. Never raises:
    malformed input is simply not a proof.
    """
    if not 0 <= index < size or not _all_hashes(leaf, root, *path):
        return False
    spans = _inclusion_spans(index, size)
    if len(path) != len(spans):
        return False
    digest = leaf
    for (start, _), sibling in zip(spans, path, strict=True):
        digest = node_hash(sibling, digest) if start < index else node_hash(digest, sibling)
    return digest == root


def verify_consistency(
    first: int, second: int, proof: Sequence[bytes], first_root: bytes, second_root: bytes
) -> bool:
    """Whether `proof` shows the tree of `first` leaves with `first_root` is a prefix of the tree
    of `second` leaves with `second_root`.

    Folds both roots up the proof's shape at once: subtrees left of the first tree's edge feed
    both, those right of it only the second. first == second needs an empty proof and equal roots;
    first == 0 is refused (see `consistency_proof`). Never raises.
    """
    if not 0 < first <= second or not _all_hashes(first_root, second_root, *proof):
        return False
    spans = _consistency_spans(first, second)
    if len(proof) != len(spans):
        return False
    if first == second:
        return first_root == second_root
    if first & (first - 1) == 0:
        # A power of two is a complete left subtree of the second tree, so SUBPROOF leaves it out:
        # the verifier's own first_root is the starting hash.
        first_digest = second_digest = first_root
        siblings = zip(spans, proof, strict=True)
    else:
        first_digest = second_digest = proof[0]
        siblings = zip(spans[1:], proof[1:], strict=True)
    for (start, _), sibling in siblings:
        if start < first:
            first_digest = node_hash(sibling, first_digest)
            second_digest = node_hash(sibling, second_digest)
        else:
            second_digest = node_hash(second_digest, sibling)
    return first_digest == first_root and second_digest == second_root


class Frontier:
    """The compact right edge of a growing tree: the complete subtrees of the current size's
    binary decomposition. Appending is amortised O(1) hashes; root() is O(log n).

    It lets a writer extend the log, and a verifier replay it, without reading any stored node
    beyond `root_nodes(size)`.
    """

    __slots__ = ("_size", "_stack")

    def __init__(self) -> None:
        self._size = 0
        # The complete subtrees of `_size`, left to right (largest first): `root_nodes` order.
        self._stack: list[bytes] = []

    @classmethod
    def empty(cls) -> Frontier:
        return cls()

    @classmethod
    def from_nodes(cls, size: int, node: NodeSource) -> Frontier:
        """Resume a tree of `size` leaves, reading only `root_nodes(size)`.

        Raises ValueError for a negative size.
        """
        frontier = cls()
        frontier._stack = [node(level, index) for level, index in root_nodes(size)]
        frontier._size = size
        return frontier

    @property
    def size(self) -> int:
        return self._size

    def append(self, leaf: bytes) -> list[tuple[Node, bytes]]:
        """Add one leaf hash; return every complete subtree of level >= 1 it completed, lowest
        first, so the caller can store them (it already holds the leaf itself).
        """
        stack = self._stack
        size = self._size
        self._size = new_size = size + 1
        if not size & 1:
            # Half of all appends complete nothing: skip the loop and its bookkeeping.
            stack.append(leaf)
            return []
        completed: list[tuple[Node, bytes]] = []
        digest = leaf
        level = 0
        # Each trailing 1-bit of the old size is a subtree of equal height waiting for a right
        # sibling; the new leaf's carry merges them, exactly like binary addition.
        while size & 1:
            digest = _sha256(b"\x01" + stack.pop() + digest).digest()
            level += 1
            size >>= 1
            completed.append(((level, (new_size >> level) - 1), digest))
        stack.append(digest)
        return completed

    def root(self) -> bytes:
        """MTH of the current tree; EMPTY_ROOT when nothing has been appended."""
        stack = self._stack
        if not stack:
            return EMPTY_ROOT
        digest = stack[-1]
        for left in reversed(stack[:-1]):
            digest = node_hash(left, digest)
        return digest
