"""An independent RFC 9162 proof verifier, written from the RFC's text alone, to check our own.

It deliberately imports nothing from `strongroom`: a bug shared by the code under test and its
oracle would go unseen. Each step is numbered as in RFC 9162 §2.1.3.2 and §2.1.4.2.
"""

from __future__ import annotations

import hashlib

__all__ = ["verify_consistency", "verify_inclusion"]


def _hash_children(left: bytes, right: bytes) -> bytes:
    """HASH(0x01 || left || right), the RFC's interior node hash."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def _lsb(n: int) -> bool:
    return n & 1 == 1


def verify_inclusion(
    leaf_hash: bytes, leaf_index: int, tree_size: int, inclusion_path: list[bytes], root_hash: bytes
) -> bool:
    """RFC 9162 §2.1.3.2, "Verifying an Inclusion Proof"."""
    # Indices are unsigned (uint64) in the RFC; a negative one cannot be a position in the tree.
    if leaf_index < 0:
        return False
    # 1. If leaf_index is greater than or equal to tree_size, fail.
    if leaf_index >= tree_size:
        return False
    # 2. Set fn to leaf_index and sn to tree_size - 1.
    fn = leaf_index
    sn = tree_size - 1
    # 3. Set r to hash.
    r = leaf_hash
    # 4. For each value p in the inclusion_path array:
    for p in inclusion_path:
        # a. If sn is 0, stop the iteration and fail.
        if sn == 0:
            return False
        # b. If LSB(fn) is set, or if fn is equal to sn, then:
        if _lsb(fn) or fn == sn:
            # i. Set r to HASH(0x01 || p || r).
            r = _hash_children(p, r)
            # ii. If LSB(fn) is not set, right-shift both fn and sn equally until either LSB(fn)
            #     is set or fn is 0.
            if not _lsb(fn):
                while not _lsb(fn) and fn != 0:
                    fn >>= 1
                    sn >>= 1
        # Otherwise:
        else:
            # i. Set r to HASH(0x01 || r || p).
            r = _hash_children(r, p)
        # c. Finally, right-shift both fn and sn one time.
        fn >>= 1
        sn >>= 1
    # 5. Proven if sn is 0 and r equals root_hash; otherwise fail.
    return sn == 0 and r == root_hash


def verify_consistency(
    first: int, second: int, consistency_path: list[bytes], first_hash: bytes, second_hash: bytes
) -> bool:
    """RFC 9162 §2.1.4.2, "Verifying Consistency between Two Tree Heads".

    The RFC states the algorithm for tree sizes 0 < first < second, so anything else fails. In
    particular first == 0 fails (step 4 would right-shift fn = -1 forever), and first == second
    fails, as step 1 rejects the empty path that the RFC's PROOF gives for it.
    """
    if not 0 < first < second:
        return False
    # 1. If consistency_path is an empty array, stop and fail.
    if not consistency_path:
        return False
    path = list(consistency_path)
    # 2. If first is an exact power of 2, prepend first_hash to the consistency_path array.
    if first & (first - 1) == 0:
        path.insert(0, first_hash)
    # 3. Set fn to first - 1 and sn to second - 1.
    fn = first - 1
    sn = second - 1
    # 4. If LSB(fn) is set, right-shift both fn and sn equally until LSB(fn) is not set.
    if _lsb(fn):
        while _lsb(fn):
            fn >>= 1
            sn >>= 1
    # 5. Set both fr and sr to the first value in the consistency_path array.
    fr = sr = path[0]
    # 6. For each subsequent value c in the consistency_path array:
    for c in path[1:]:
        # a. If sn is 0, stop the iteration and fail.
        if sn == 0:
            return False
        # b. If LSB(fn) is set, or if fn is equal to sn, then:
        if _lsb(fn) or fn == sn:
            # i. Set fr to HASH(0x01 || c || fr).
            fr = _hash_children(c, fr)
            # ii. Set sr to HASH(0x01 || c || sr).
            sr = _hash_children(c, sr)
            # iii. If LSB(fn) is not set, right-shift both fn and sn equally until either LSB(fn)
            #      is set or fn is 0.
            if not _lsb(fn):
                while not _lsb(fn) and fn != 0:
                    fn >>= 1
                    sn >>= 1
        # Otherwise:
        else:
            # i. Set sr to HASH(0x01 || sr || c).
            sr = _hash_children(sr, c)
        # c. Finally, right-shift both fn and sn one time.
        fn >>= 1
        sn >>= 1
    # 7. Verify that fr equals first_hash, sr equals second_hash, and sn is 0.
    return fr == first_hash and sr == second_hash and sn == 0
