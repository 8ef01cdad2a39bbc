"""The stored form of an envelope-encrypted value: the ciphertext with its wrapped data key.

A row's secret is kept as one text value, so the wrapped key always travels with the data it
protects and key rotation can re-wrap it in place:

    sr1$<key version>$<wrapped data key>$<nonce>$<ciphertext>      (base64url, no padding)
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

_PREFIX = "sr1"
_SEP = "$"


class MalformedSealedValue(ValueError):
    """A stored value is not in the sealed format (truncated, edited, or never sealed)."""


@dataclass(frozen=True, slots=True)
class SealedValue:
    key_version: str  # the master key version that wrapped `wrapped_key`
    wrapped_key: bytes  # the data key, encrypted by the master key
    nonce: bytes
    ciphertext: bytes  # AES-256-GCM output, tag included

    def __post_init__(self) -> None:
        if not self.key_version or _SEP in self.key_version:
            raise MalformedSealedValue("a key version is non-empty and has no '$'")

    def encode(self) -> str:
        parts = (self.wrapped_key, self.nonce, self.ciphertext)
        return _SEP.join((_PREFIX, self.key_version, *(_b64(p) for p in parts)))

    @classmethod
    def decode(cls, text: str) -> SealedValue:
        parts = text.split(_SEP)
        if len(parts) != 5 or parts[0] != _PREFIX:
            raise MalformedSealedValue("not a sealed value")
        try:
            wrapped, nonce, ciphertext = (_unb64(p) for p in parts[2:])
        except (binascii.Error, ValueError) as exc:
            raise MalformedSealedValue("a sealed value's base64 is damaged") from exc
        return cls(parts[1], wrapped, nonce, ciphertext)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
