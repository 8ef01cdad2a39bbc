"""Master keys in local files: the embedded default keyring (`local:///./var/keyring`).

One file per version (`1.key`, `2.key`, …) holding 32 random bytes, mode 0600, in a directory
of mode 0700. The current version is the highest one present. Wrapping is AES-256-GCM under the
master key with the context as associated data, as AWS KMS binds its encryption context.
Files are read on every use (no cache), so a version retired by another process stops
decrypting here at once.

A version's creation time (`KeyVersion.created_at`) is its key file's modification time, set
just after the file is linked into place, i.e. once the version is current. Key files are never
written again, so it stays put; copies that keep times (`cp -p`, `rsync -a`, `tar`) keep it,
and a copy that does not only makes versions look newer, which delays retirement, never hastens
it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import stat
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from strongroom.adapters.kms.port import (
    DataKey,
    DecryptionFailed,
    KeyringError,
    KeyVersion,
    KeyVersionInUse,
    UnknownKeyVersion,
)

KEY_BYTES = 32
NONCE_BYTES = 12
_FORMAT = b"\x01"  # leading byte of a wrapped key, so the layout can change later
_SUFFIX = ".key"
_AAD_LABEL = b"strongroom-local-keyring-v1\x00"


def _aad(context: Mapping[str, str]) -> bytes:
    return _AAD_LABEL + json.dumps(dict(context), sort_keys=True, separators=(",", ":")).encode()


class LocalKeyring:
    def __init__(self, directory: str | os.PathLike[str]) -> None:
        # Resolved now, so a later chdir cannot move the keyring.
        self.directory = Path(directory).absolute()

    # -- the port ------------------------------------------------------------------------------

    async def current_version(self) -> str:
        return await asyncio.to_thread(self._current_or_first)

    async def versions(self) -> list[KeyVersion]:
        return await asyncio.to_thread(self._key_versions)

    async def generate_data_key(self, context: Mapping[str, str]) -> DataKey:
        plaintext = AESGCM.generate_key(bit_length=256)
        wrapped, version = await self.wrap(plaintext, context)
        return DataKey(plaintext, wrapped, version)

    async def wrap(self, plaintext: bytes, context: Mapping[str, str]) -> tuple[bytes, str]:
        return await asyncio.to_thread(self._wrap, plaintext, dict(context))

    async def unwrap(self, wrapped: bytes, version: str, context: Mapping[str, str]) -> bytes:
        return await asyncio.to_thread(self._unwrap, wrapped, version, dict(context))

    async def create_version(self) -> str:
        return await asyncio.to_thread(self._create_version)

    async def retire_version(self, version: str) -> None:
        await asyncio.to_thread(self._retire, version)

    # -- files ---------------------------------------------------------------------------------

    def _wrap(self, plaintext: bytes, context: dict[str, str]) -> tuple[bytes, str]:
        version = self._current_or_first()
        master = self._read_key(version)
        nonce = os.urandom(NONCE_BYTES)
        return _FORMAT + nonce + AESGCM(master).encrypt(nonce, plaintext, _aad(context)), version

    def _unwrap(self, wrapped: bytes, version: str, context: dict[str, str]) -> bytes:
        master = self._read_key(version)
        if len(wrapped) < 1 + NONCE_BYTES + 16 or wrapped[:1] != _FORMAT:
            raise DecryptionFailed(f"the wrapped data key is not one key version {version} made")
        nonce, body = wrapped[1 : 1 + NONCE_BYTES], wrapped[1 + NONCE_BYTES :]
        try:
            return AESGCM(master).decrypt(nonce, body, _aad(context))
        except InvalidTag:
            raise DecryptionFailed(
                f"the wrapped data key does not authenticate under key version {version} "
                "with this context"
            ) from None

    def _path(self, version: str) -> Path:
        if not version.isdigit() or version.startswith("0"):
            raise UnknownKeyVersion(f"no key version {version!r} in the local keyring")
        return self.directory / f"{version}{_SUFFIX}"

    def _check_directory(self) -> bool:
        """False when the directory does not exist yet; raises when it is unsafe."""
        try:
            info = self.directory.stat()
        except FileNotFoundError:
            return False
        if not stat.S_ISDIR(info.st_mode):
            raise KeyringError(f"keyring path {self.directory} is not a directory")
        if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            # Whoever can write here can plant a "newer" version we would start using.
            raise KeyringError(
                f"keyring directory {self.directory} is writable by group or others; "
                f"run: chmod 700 {self.directory}"
            )
        return True

    def _versions(self) -> list[int]:
        if not self._check_directory():
            return []
        found = []
        for name in os.listdir(self.directory):
            stem, suffix = name[: -len(_SUFFIX)], name[-len(_SUFFIX) :]
            if suffix == _SUFFIX and stem.isdigit() and not stem.startswith("0"):
                found.append(int(stem))
        return sorted(found)

    def _key_versions(self) -> list[KeyVersion]:
        made: list[tuple[int, datetime]] = []
        for version in self._versions():
            try:
                info = os.stat(self._path(str(version)), follow_symlinks=False)
            except FileNotFoundError:  # retired by another process meanwhile
                continue
            made.append((version, datetime.fromtimestamp(info.st_mtime, UTC)))
        return [
            KeyVersion(str(version), i == len(made) - 1, created_at)
            for i, (version, created_at) in enumerate(made)
        ]

    def _current_or_first(self) -> str:
        found = self._versions()
        return str(found[-1]) if found else self._create_version()

    def _read_key(self, version: str) -> bytes:
        path = self._path(version)
        self._check_directory()
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except FileNotFoundError:
            raise UnknownKeyVersion(
                f"key version {version} is not in the local keyring (retired or never made)"
            ) from None
        with os.fdopen(fd, "rb") as file:
            mode = os.fstat(file.fileno()).st_mode
            if mode & (stat.S_IRWXG | stat.S_IRWXO):
                raise KeyringError(
                    f"key file {path} is readable or writable by group or others "
                    f"(mode {stat.S_IMODE(mode):o}); refusing to use it. Run: chmod 600 {path}"
                )
            key = file.read(KEY_BYTES + 1)
        if len(key) != KEY_BYTES:
            raise KeyringError(f"key file {path} does not hold a {KEY_BYTES}-byte key")
        return key

    def _create_version(self) -> str:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._check_directory()
        # Write the key under a temporary name, then link it into place: the link is atomic and
        # fails if the name exists, so no reader ever sees half a key and two processes
        # creating a version at once get different numbers.
        temporary = self.directory / f".new-{os.getpid()}-{os.urandom(6).hex()}"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(os.urandom(KEY_BYTES))
                file.flush()
                os.fsync(file.fileno())
            while True:
                found = self._versions()
                version = str(found[-1] + 1 if found else 1)
                try:
                    os.link(temporary, self._path(version))
                except FileExistsError:
                    continue
                # The file was written just before; stamp the moment it became current.
                with contextlib.suppress(OSError):
                    os.utime(temporary)
                self._fsync_directory()
                return version
        finally:
            temporary.unlink(missing_ok=True)

    def _retire(self, version: str) -> None:
        path = self._path(version)
        found = self._versions()
        if found and str(found[-1]) == version:
            raise KeyVersionInUse(
                f"key version {version} is the current version; rotate before retiring it"
            )
        try:
            # Overwrite before unlinking: cheap, though a journaling file system or an SSD may
            # keep old blocks; keep the keyring on an encrypted volume for that reason.
            with open(path, "r+b") as file:
                file.write(b"\0" * KEY_BYTES)
                file.flush()
                os.fsync(file.fileno())
            path.unlink()
        except FileNotFoundError:
            raise UnknownKeyVersion(
                f"key version {version} is not in the local keyring (retired or never made)"
            ) from None
        self._fsync_directory()

    def _fsync_directory(self) -> None:
        with contextlib.suppress(OSError):  # not every platform can fsync a directory
            fd = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
