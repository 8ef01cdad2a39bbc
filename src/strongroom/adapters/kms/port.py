"""The Keyring port: versioned master keys that wrap and unwrap data keys, and its errors.

KeyringError                 any keyring failure (configuration, permissions, the KMS is down)
├── DecryptionFailed         a wrapped key or a sealed value does not authenticate here
├── UnknownKeyVersion        the version never existed here, or was retired
└── KeyVersionInUse          retirement refused: stored values still use the version

Providers are chosen by URL (`keyring_from_url`): `local:///<dir>` keeps master keys in files,
`aws-kms:///<alias name>?region=…` keeps them in AWS KMS. No message of any error here carries
key material.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol
from urllib.parse import parse_qs, urlsplit

from strongroom.domain.errors import StrongroomError


class KeyringError(StrongroomError):
    """The keyring could not do what was asked; the message says why (never with key bytes)."""

    type = "api_error"
    default_code = "keyring_error"


class DecryptionFailed(KeyringError):
    """A value (or its wrapped data key) did not decrypt: it was moved to another row, altered,
    truncated, or its key version was retired."""

    default_code = "decryption_failed"


class UnknownKeyVersion(KeyringError):
    """No such master key version here: it never existed or it was retired."""

    default_code = "unknown_key_version"


class KeyVersionInUse(KeyringError):
    """A key version cannot be retired while stored values (or the current version) use it."""

    default_code = "key_version_in_use"


@dataclass(frozen=True, slots=True)
class DataKey:
    """A fresh AES-256 data key and its copy wrapped by master key `version`."""

    plaintext: bytes = field(repr=False)
    wrapped: bytes
    version: str


@dataclass(frozen=True, slots=True)
class KeyVersion:
    version: str
    current: bool
    # When the version was made, which is when it became current (timezone-aware). Retiring
    # the version before it waits until this is long enough ago that no process can still be
    # sealing under the older one (see strongroom.service_layer.keyring.RETIRE_GRACE).
    created_at: datetime


class Keyring(Protocol):
    """Versioned master keys. `context` is authenticated with every wrapped key (KMS's
    encryption context): unwrapping with any other context fails with DecryptionFailed."""

    async def current_version(self) -> str:
        """The version new data keys are wrapped under; creates the first one on first use."""
        ...

    async def versions(self) -> list[KeyVersion]:
        """The live (not retired) versions, oldest first, each with its creation time;
        creates nothing."""
        ...

    async def generate_data_key(self, context: Mapping[str, str]) -> DataKey:
        """A new random 256-bit data key, wrapped under the current version."""
        ...

    async def wrap(self, plaintext: bytes, context: Mapping[str, str]) -> tuple[bytes, str]:
        """Wrap an existing data key under the current version: (wrapped, version)."""
        ...

    async def unwrap(self, wrapped: bytes, version: str, context: Mapping[str, str]) -> bytes:
        """The data key inside `wrapped`. Raises DecryptionFailed when it does not authenticate
        under `version` with `context`, UnknownKeyVersion when `version` is not here."""
        ...

    async def create_version(self) -> str:
        """Make a new master key version and make it current; returns its name."""
        ...

    async def retire_version(self, version: str) -> None:
        """Destroy (or schedule destruction of) a version so it never decrypts again. Refuses
        the current version with KeyVersionInUse; callers check stored values first."""
        ...


def keyring_from_url(url: str) -> Keyring:
    """The keyring a `STRONGROOM_KMS_URL` names. Creates no key and makes no network call.

    `local:///./var/keyring` is relative to the working directory, `local:////srv/keys` is
    absolute; `aws-kms:///<alias name>?region=<region>[&endpoint_url=<url>]` uses the aliases
    `alias/<name>-v1`, `-v2`, … with credentials from boto3's usual chain (never the URL).
    Raises KeyringError for an unknown scheme or a malformed URL.
    """
    parts = urlsplit(url)
    if parts.scheme == "local":
        if parts.netloc or parts.query or not parts.path.startswith("/") or parts.path == "/":
            raise KeyringError(f"a local keyring URL looks like local:///./var/keyring: {url!r}")
        from strongroom.adapters.kms.local import LocalKeyring

        return LocalKeyring(parts.path[1:])
    if parts.scheme == "aws-kms":
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        unknown = set(query) - {"region", "endpoint_url"}
        if parts.netloc or unknown or not query.get("region"):
            raise KeyringError(
                "an AWS KMS keyring URL looks like "
                "aws-kms:///<alias name>?region=<region>[&endpoint_url=<url>]"
            )
        from strongroom.adapters.kms.aws import AwsKmsKeyring

        return AwsKmsKeyring(
            parts.path.lstrip("/"), region=query["region"], endpoint_url=query.get("endpoint_url")
        )
    raise KeyringError(
        f"unknown keyring scheme {parts.scheme!r} in STRONGROOM_KMS_URL; "
        "use local:///<directory> or aws-kms:///<alias name>?region=<region>"
    )


def version_key(version: str) -> tuple[int, str]:
    """Sort key putting "2" before "10"."""
    return (int(version), "") if version.isdigit() else (1 << 62, version)
