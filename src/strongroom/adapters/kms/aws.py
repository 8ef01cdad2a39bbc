"""Master keys in AWS KMS (`aws-kms:///<alias name>?region=…[&endpoint_url=…]`).

Version N is the symmetric KMS key behind the alias `alias/<name>-vN`; the current version is
the highest alias. Data keys come from GenerateDataKey and are unwrapped with Decrypt, both
with the binding as KMS encryption context and Decrypt naming the version's alias as KeyId, so
a wrapped key only opens for its own row under its own version.

Retiring a version schedules its KMS key for deletion (30-day window) and deletes its alias.
A key pending deletion refuses every cryptographic operation at once, like a disabled key,
but unlike DisableKey it is also destroyed for good after the window, which is what "retire"
promises; the window leaves room to cancel if a restored backup still needs the version.

A version's creation time (`KeyVersion.created_at`) is when its alias was made or last
changed (ListAliases reports both), i.e. when it became current; where the listing lacks those
dates, the KMS key's CreationDate (DescribeKey), which precedes the alias by a moment.

boto3 is blocking, so every call runs in a worker thread (`asyncio.to_thread`). The current
version is cached for CACHE_SECONDS to save a ListAliases per seal; after `keys rotate` in
another process, this one may wrap under the previous version for that long, and a later
`keys rotate --resume` re-wraps whatever that left behind.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from strongroom.adapters.kms.port import (
    DataKey,
    DecryptionFailed,
    KeyringError,
    KeyVersion,
    KeyVersionInUse,
    UnknownKeyVersion,
)

if TYPE_CHECKING:
    from mypy_boto3_kms import KMSClient

T = TypeVar("T")
CACHE_SECONDS = 30.0
DELETION_WINDOW_DAYS = 30
_NAME = re.compile(r"[A-Za-z0-9/_-]{1,200}")
# Decrypt's refusals that mean "this wrapped key does not open here". AccessDenied is among
# them because KMS answers so when the wrapped key names a different KMS key than KeyId.
_DECRYPT_REFUSALS = {"InvalidCiphertextException", "IncorrectKeyException", "AccessDeniedException"}
_RETIRED = {"NotFoundException", "DisabledException", "KMSInvalidStateException"}


@dataclass(frozen=True, slots=True)
class _Alias:
    key_id: str
    changed_at: datetime | None  # the later of its CreationDate and LastUpdatedDate, if listed


class AwsKmsKeyring:
    def __init__(self, name: str, *, region: str, endpoint_url: str | None = None) -> None:
        name = name.removeprefix("alias/")
        if not _NAME.fullmatch(name) or name.startswith("aws/"):
            raise KeyringError(f"{name!r} is not a usable KMS alias name")
        self.name = name
        self.region = region
        self.endpoint_url = endpoint_url
        self._client: KMSClient | None = None
        self._client_lock = threading.Lock()
        self._current: tuple[str, float] | None = None  # (version, monotonic time cached)

    # -- the port ------------------------------------------------------------------------------

    async def current_version(self) -> str:
        return await asyncio.to_thread(self._current_version)

    async def versions(self) -> list[KeyVersion]:
        return await asyncio.to_thread(self._key_versions)

    async def generate_data_key(self, context: Mapping[str, str]) -> DataKey:
        def call() -> DataKey:
            version = self._current_version()
            answer = self._call(
                lambda kms: kms.generate_data_key(
                    KeyId=self._alias(version), KeySpec="AES_256", EncryptionContext=dict(context)
                )
            )
            return DataKey(answer["Plaintext"], answer["CiphertextBlob"], version)

        return await asyncio.to_thread(call)

    async def wrap(self, plaintext: bytes, context: Mapping[str, str]) -> tuple[bytes, str]:
        def call() -> tuple[bytes, str]:
            version = self._current_version()
            answer = self._call(
                lambda kms: kms.encrypt(
                    KeyId=self._alias(version), Plaintext=plaintext, EncryptionContext=dict(context)
                )
            )
            return answer["CiphertextBlob"], version

        return await asyncio.to_thread(call)

    async def unwrap(self, wrapped: bytes, version: str, context: Mapping[str, str]) -> bytes:
        def call() -> bytes:
            if not version.isdigit():
                raise UnknownKeyVersion(f"no key version {version!r} in AWS KMS")
            try:
                answer = self._client_or_new().decrypt(
                    CiphertextBlob=wrapped,
                    KeyId=self._alias(version),
                    EncryptionContext=dict(context),
                )
            except ClientError as exc:
                code = _code(exc)
                if code in _DECRYPT_REFUSALS:
                    raise DecryptionFailed(
                        f"AWS KMS refused to unwrap the data key under key version {version} "
                        f"with this context ({code})"
                    ) from None
                if code in _RETIRED:
                    raise UnknownKeyVersion(
                        f"key version {version} is retired or missing in AWS KMS ({code})"
                    ) from None
                raise KeyringError(f"AWS KMS Decrypt failed: {code}") from None
            except BotoCoreError as exc:
                raise _unreachable(exc) from None
            return answer["Plaintext"]

        return await asyncio.to_thread(call)

    async def create_version(self) -> str:
        return await asyncio.to_thread(self._create_version)

    async def retire_version(self, version: str) -> None:
        await asyncio.to_thread(self._retire, version)

    # -- calls (in worker threads) -------------------------------------------------------------

    def _alias(self, version: str) -> str:
        return f"alias/{self.name}-v{version}"

    def _client_or_new(self) -> KMSClient:
        with self._client_lock:
            if self._client is None:
                config = Config(connect_timeout=5, read_timeout=15, retries={"mode": "standard"})
                self._client = boto3.client(
                    "kms", region_name=self.region, endpoint_url=self.endpoint_url, config=config
                )
            return self._client

    def _call(self, request: Callable[[KMSClient], T]) -> T:
        try:
            return request(self._client_or_new())
        except ClientError as exc:
            raise KeyringError(f"AWS KMS refused the request: {_code(exc)}") from None
        except BotoCoreError as exc:
            raise _unreachable(exc) from None

    def _aliases(self) -> dict[int, _Alias]:
        """version -> its alias, for this keyring's aliases."""
        pattern = re.compile(re.escape(f"alias/{self.name}-v") + r"([1-9][0-9]*)")
        found: dict[int, _Alias] = {}

        def page_through(kms: KMSClient) -> None:
            for page in kms.get_paginator("list_aliases").paginate():
                for alias in page.get("Aliases", []):
                    match = pattern.fullmatch(alias.get("AliasName", ""))
                    if match and "TargetKeyId" in alias:
                        dates = [
                            d.astimezone(UTC)
                            for d in (alias.get("CreationDate"), alias.get("LastUpdatedDate"))
                            if d is not None
                        ]
                        changed_at = max(dates) if dates else None
                        found[int(match.group(1))] = _Alias(alias["TargetKeyId"], changed_at)

        self._call(page_through)
        return found

    def _versions(self) -> list[int]:
        return sorted(self._aliases())

    def _key_versions(self) -> list[KeyVersion]:
        aliases = self._aliases()
        newest = max(aliases, default=0)
        return [
            KeyVersion(str(v), v == newest, self._created_at(v, aliases[v]))
            for v in sorted(aliases)
        ]

    def _created_at(self, version: int, alias: _Alias) -> datetime:
        if alias.changed_at is not None:
            return alias.changed_at
        metadata = self._call(lambda kms: kms.describe_key(KeyId=alias.key_id))["KeyMetadata"]
        if "CreationDate" not in metadata:
            raise KeyringError(f"AWS KMS gave no creation date for key version {version}")
        return metadata["CreationDate"].astimezone(UTC)

    def _current_version(self) -> str:
        cached = self._current
        if cached is not None and time.monotonic() - cached[1] < CACHE_SECONDS:
            return cached[0]
        found = self._versions()
        version = str(found[-1]) if found else self._create_version()
        self._current = (version, time.monotonic())
        return version

    def _create_version(self) -> str:
        found = self._versions()
        version = str(found[-1] + 1 if found else 1)
        key_id = self._call(
            lambda kms: kms.create_key(
                Description=f"Strongroom master key {self.name} version {version}",
                KeyUsage="ENCRYPT_DECRYPT",
                KeySpec="SYMMETRIC_DEFAULT",
            )
        )["KeyMetadata"]["KeyId"]
        try:
            self._client_or_new().create_alias(AliasName=self._alias(version), TargetKeyId=key_id)
        except ClientError as exc:
            # Another process made this version first: drop our unused key and report.
            self._call(
                lambda kms: kms.schedule_key_deletion(
                    KeyId=key_id, PendingWindowInDays=DELETION_WINDOW_DAYS
                )
            )
            if _code(exc) == "AlreadyExistsException":
                raise KeyringError(
                    f"key version {version} was created by another process at the same time; retry"
                ) from None
            raise KeyringError(f"AWS KMS CreateAlias failed: {_code(exc)}") from None
        self._current = (version, time.monotonic())
        return version

    def _retire(self, version: str) -> None:
        aliases = self._aliases()
        if not version.isdigit() or int(version) not in aliases:
            raise UnknownKeyVersion(
                f"no key version {version!r} in AWS KMS (retired or never made)"
            )
        if int(version) == max(aliases):
            raise KeyVersionInUse(
                f"key version {version} is the current version; rotate before retiring it"
            )
        key_id = aliases[int(version)].key_id
        try:
            self._client_or_new().schedule_key_deletion(
                KeyId=key_id, PendingWindowInDays=DELETION_WINDOW_DAYS
            )
        except ClientError as exc:
            # Already pending deletion (an earlier retire stopped before deleting the alias).
            if _code(exc) != "KMSInvalidStateException":
                raise KeyringError(f"AWS KMS ScheduleKeyDeletion failed: {_code(exc)}") from None
        self._call(lambda kms: kms.delete_alias(AliasName=self._alias(version)))


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", "unknown"))


def _unreachable(exc: BotoCoreError) -> KeyringError:
    # botocore's messages name the endpoint and the problem, never request bodies.
    return KeyringError(f"AWS KMS is unreachable or misconfigured: {exc}")
