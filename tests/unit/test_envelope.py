"""Envelope encryption on both keyrings: the local one (files in a temporary directory) and
AWS KMS. AWS is unreachable from here, so the official boto3 SDK talks to moto's KMS server
running on a loopback port (see tests/kms_support.py). No database is involved."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from strongroom.adapters.db import tables as t
from strongroom.adapters.kms.envelope import Binding, Envelope
from strongroom.adapters.kms.local import LocalKeyring
from strongroom.adapters.kms.port import (
    DecryptionFailed,
    KeyringError,
    KeyVersionInUse,
    UnknownKeyVersion,
    keyring_from_url,
)
from strongroom.adapters.kms.sealed import SealedValue
from tests.kms_support import REGION, make_keyring, moto_kms_server

SECRET = b"whsec_0123456789abcdef-a gateway credential"
HOME = Binding("audit_signing_keys", "private_key", "ask_1")
TENANT = Binding("gateway_credentials", "secret", "gc_1", "acct_1")


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    with moto_kms_server() as url:
        yield url


@pytest.fixture(params=["local", "aws-kms"])
def provider(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def envelope(provider: str, tmp_path: Path, request: pytest.FixtureRequest) -> Envelope:
    endpoint = request.getfixturevalue("moto_endpoint") if provider == "aws-kms" else None
    _, keyring = make_keyring(provider, tmp_path, endpoint)
    return Envelope(keyring)


def flip(data: bytes, index: int) -> bytes:
    changed = bytearray(data)
    changed[index] ^= 0x01
    return bytes(changed)


# -- both keyrings -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "plaintext", [SECRET, b"", bytes(range(256)) * 8], ids=["text", "empty", "2KiB"]
)
@pytest.mark.parametrize("binding", [HOME, TENANT], ids=["installation", "merchant"])
async def test_a_sealed_value_opens_in_its_own_row(
    envelope: Envelope, plaintext: bytes, binding: Binding
) -> None:
    sealed = await envelope.seal(plaintext, binding)
    assert sealed.key_version == "1"
    assert plaintext not in sealed.encode().encode() or not plaintext
    assert await envelope.open(sealed, binding) == plaintext
    assert await envelope.open(sealed.encode(), binding) == plaintext  # stored text too


@pytest.mark.parametrize(
    "elsewhere",
    [
        replace(TENANT, row_id="gc_2"),
        replace(TENANT, column="webhook_secret"),
        replace(TENANT, table="bank_tokens"),
        replace(TENANT, merchant_id="acct_2"),
        replace(TENANT, merchant_id=""),
        Binding("gateway_credentials", "secret", "gc_1acct_1"),  # fields run together
    ],
    ids=["other row", "other column", "other table", "other merchant", "no merchant", "spliced"],
)
async def test_a_value_moved_anywhere_else_fails_clearly(
    envelope: Envelope, elsewhere: Binding
) -> None:
    sealed = await envelope.seal(SECRET, TENANT)
    with pytest.raises(DecryptionFailed, match=r"cannot decrypt \S+ of row"):
        await envelope.open(sealed, elsewhere)
    with pytest.raises(DecryptionFailed):
        await envelope.rewrap(sealed, elsewhere)


async def test_a_moved_ciphertext_with_the_target_rows_own_wrapped_key_fails(
    envelope: Envelope,
) -> None:
    """Splicing one row's ciphertext under another row's (valid) wrapped key still fails:
    the GCM associated data binds the ciphertext itself to its row."""
    mine = await envelope.seal(SECRET, TENANT)
    theirs = await envelope.seal(b"other", replace(TENANT, row_id="gc_2"))
    spliced = replace(mine, ciphertext=theirs.ciphertext, nonce=theirs.nonce)
    with pytest.raises(DecryptionFailed, match="ciphertext does not authenticate"):
        await envelope.open(spliced, TENANT)


@pytest.mark.parametrize("part", ["wrapped_key", "nonce", "ciphertext"])
@pytest.mark.parametrize("where", ["first", "middle", "last"])
async def test_one_flipped_bit_anywhere_fails(envelope: Envelope, part: str, where: str) -> None:
    sealed = await envelope.seal(SECRET, HOME)
    data: bytes = getattr(sealed, part)
    index = {"first": 0, "middle": len(data) // 2, "last": len(data) - 1}[where]
    damaged = replace(sealed, **{part: flip(data, index)})
    with pytest.raises(DecryptionFailed, match=r"audit_signing_keys\.private_key of row ask_1"):
        await envelope.open(damaged, HOME)
    with pytest.raises(DecryptionFailed):
        await envelope.open(damaged.encode(), HOME)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "not sealed",
        "sr1$1$$$",
        "sr1$1$AAAA$AAAA",
        "sr2$1$AAAA$AAAAAAAAAAAAAAAA$AAAA",
        "sr1$$AAAA$AAAAAAAAAAAAAAAA$AAAA",
        "sr1$1$A$AAAAAAAAAAAAAAAA$AAAA",
        "sr1$1$AAAA$AAAAAAAAAAAAAAAA$AAAA",  # well-formed, but nothing real
    ],
)
async def test_malformed_stored_text_fails_clearly(envelope: Envelope, text: str) -> None:
    with pytest.raises(DecryptionFailed, match=r"cannot decrypt audit_signing_keys\.private_key"):
        await envelope.open(text, HOME)


async def test_truncated_or_altered_stored_text_fails(envelope: Envelope) -> None:
    text = (await envelope.seal(SECRET, HOME)).encode()
    for damaged in (text[:-3], text[:20], text.replace("$", "$$", 1), text + "A", "x" + text):
        with pytest.raises(DecryptionFailed):
            await envelope.open(damaged, HOME)


async def test_a_wrong_key_version_label_fails(envelope: Envelope) -> None:
    sealed = await envelope.seal(SECRET, HOME)
    await envelope.keyring.create_version()
    with pytest.raises(DecryptionFailed, match="key version 2"):
        await envelope.open(replace(sealed, key_version="2"), HOME)
    with pytest.raises(DecryptionFailed, match="retired or unknown"):
        await envelope.open(replace(sealed, key_version="9"), HOME)


async def test_every_value_gets_its_own_data_key_and_nonce(envelope: Envelope) -> None:
    values = [await envelope.seal(SECRET, HOME) for _ in range(5)]
    keyring = envelope.keyring
    data_keys = {await keyring.unwrap(v.wrapped_key, v.key_version, HOME.context()) for v in values}
    assert len(data_keys) == 5
    assert all(len(key) == 32 for key in data_keys)
    assert len({v.nonce for v in values}) == 5
    assert all(len(v.nonce) == 12 for v in values)
    assert len({v.wrapped_key for v in values}) == 5
    assert len({v.ciphertext for v in values}) == 5


async def test_rewrap_moves_a_value_to_the_new_version_and_it_still_opens(
    envelope: Envelope,
) -> None:
    keyring = envelope.keyring
    old = await envelope.seal(SECRET, TENANT)
    assert await keyring.create_version() == "2"
    assert await keyring.current_version() == "2"
    assert [(v.version, v.current) for v in await keyring.versions()] == [
        ("1", False),
        ("2", True),
    ]
    new = await envelope.rewrap(old, TENANT)
    assert new.key_version == "2"
    assert (new.nonce, new.ciphertext) == (old.nonce, old.ciphertext)  # same data key
    assert new.wrapped_key != old.wrapped_key
    assert await envelope.open(new, TENANT) == SECRET
    assert await envelope.open(old, TENANT) == SECRET  # old versions decrypt until retired
    assert (await envelope.seal(SECRET, TENANT)).key_version == "2"


async def test_retiring_a_version_makes_its_values_fail(envelope: Envelope) -> None:
    keyring = envelope.keyring
    old = await envelope.seal(SECRET, HOME)
    await keyring.create_version()
    kept = await envelope.rewrap(old, HOME)

    with pytest.raises(KeyVersionInUse, match="current version"):
        await keyring.retire_version("2")
    await keyring.retire_version("1")

    with pytest.raises(DecryptionFailed, match="key version 1 is retired or unknown"):
        await envelope.open(old, HOME)
    assert await envelope.open(kept, HOME) == SECRET
    assert [v.version for v in await keyring.versions()] == ["2"]
    with pytest.raises(UnknownKeyVersion):
        await keyring.retire_version("1")
    # Numbers are never reused: the next version is 3.
    assert await keyring.create_version() == "3"


async def test_versions_carry_when_they_were_made(envelope: Envelope) -> None:
    """The creation time is what retiring the version before it waits on, so it must be
    real, timezone-aware, no earlier than the version became current, and stable."""
    keyring = envelope.keyring
    slack = timedelta(seconds=2)  # file system and KMS timestamps are coarser than ours
    before = datetime.now(UTC)
    await keyring.current_version()
    between = datetime.now(UTC)
    await keyring.create_version()
    after = datetime.now(UTC)

    first, second = await keyring.versions()
    assert (first.version, first.current, second.version, second.current) == ("1", False, "2", True)
    for made in (first.created_at, second.created_at):
        assert made.utcoffset() == timedelta(0)
    assert before - slack <= first.created_at <= between + slack
    assert between - slack <= second.created_at <= after + slack
    assert first.created_at <= second.created_at
    await envelope.seal(SECRET, HOME)  # using a version does not move its creation time
    assert await keyring.versions() == [first, second]


async def test_errors_name_the_row_but_never_key_material(envelope: Envelope) -> None:
    sealed = await envelope.seal(SECRET, TENANT)
    data_key = await envelope.keyring.unwrap(sealed.wrapped_key, "1", TENANT.context())
    with pytest.raises(DecryptionFailed) as caught:
        await envelope.open(sealed, replace(TENANT, row_id="gc_9"))
    message = str(caught.value)
    assert "gateway_credentials.secret of row gc_9 (merchant acct_1)" in message
    for secret in (data_key, sealed.wrapped_key, sealed.ciphertext, SECRET):
        assert secret.hex() not in message
        assert repr(secret) not in message
    assert sealed.encode().split("$")[2] not in message


# -- the local keyring -------------------------------------------------------------------------


async def test_local_key_files_are_0600_in_a_0700_directory(tmp_path: Path) -> None:
    directory = tmp_path / "var" / "keyring"
    keyring = LocalKeyring(directory)
    assert await keyring.versions() == []
    assert not directory.exists()  # nothing is made until first use
    await Envelope(keyring).seal(SECRET, HOME)
    await keyring.create_version()
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    files = sorted(directory.iterdir())
    assert [f.name for f in files] == ["1.key", "2.key"]
    for file in files:
        assert stat.S_IMODE(file.stat().st_mode) == 0o600
        assert file.stat().st_size == 32
    assert files[0].read_bytes() != files[1].read_bytes()


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o700 | 0o020])
async def test_a_key_file_open_to_group_or_others_is_refused(tmp_path: Path, mode: int) -> None:
    keyring = LocalKeyring(tmp_path / "keyring")
    envelope = Envelope(keyring)
    sealed = await envelope.seal(SECRET, HOME)
    key_file = tmp_path / "keyring" / "1.key"
    key_file.chmod(mode)
    with pytest.raises(KeyringError, match="chmod 600") as caught:
        await envelope.open(sealed, HOME)
    assert not isinstance(caught.value, DecryptionFailed)  # a setup problem, not bad data
    with pytest.raises(KeyringError, match="group or others"):
        await envelope.seal(SECRET, HOME)
    key_file.chmod(0o600)
    assert await envelope.open(sealed, HOME) == SECRET


async def test_a_keyring_directory_others_can_write_is_refused(tmp_path: Path) -> None:
    directory = tmp_path / "keyring"
    directory.mkdir()
    directory.chmod(0o777)
    with pytest.raises(KeyringError, match="chmod 700"):
        await LocalKeyring(directory).current_version()


async def test_retiring_destroys_the_local_key_file(tmp_path: Path) -> None:
    keyring = LocalKeyring(tmp_path)
    await keyring.current_version()
    await keyring.create_version()
    await keyring.retire_version("1")
    assert sorted(os.listdir(tmp_path)) == ["2.key"]


async def test_local_versions_survive_a_file_vanishing_mid_listing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keyring = LocalKeyring(tmp_path)
    await keyring.current_version()
    await keyring.create_version()
    await keyring.create_version()
    listed = keyring._versions()
    monkeypatch.setattr(keyring, "_versions", lambda: listed)
    (tmp_path / "2.key").unlink()  # retired by another process after the directory listing
    assert [(v.version, v.current) for v in await keyring.versions()] == [
        ("1", False),
        ("3", True),
    ]


def test_aws_creation_times_come_from_the_alias_listing_when_it_has_them() -> None:
    """Real AWS lists each alias's CreationDate and LastUpdatedDate (moto does not, so the
    DescribeKey fallback is what the moto tests cover): the later one counts."""
    import boto3
    from botocore.stub import Stubber

    from strongroom.adapters.kms.aws import AwsKmsKeyring

    keyring = AwsKmsKeyring("strongroom", region=REGION)
    client = boto3.client(
        "kms", region_name=REGION, aws_access_key_id="testing", aws_secret_access_key="testing"
    )
    made = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
    entries = [
        {"AliasName": "alias/strongroom-v1", "TargetKeyId": "k1", "CreationDate": made},
        {
            "AliasName": "alias/strongroom-v2",
            "TargetKeyId": "k2",
            "CreationDate": made + timedelta(days=1),
            "LastUpdatedDate": made + timedelta(days=2),
        },
        {"AliasName": "alias/other-v3", "TargetKeyId": "k3", "CreationDate": made},
    ]
    with Stubber(client) as stub:
        stub.add_response("list_aliases", {"Aliases": entries, "Truncated": False})
        keyring._client = client
        found = keyring._key_versions()
        stub.assert_no_pending_responses()  # no DescribeKey was needed
    assert [(v.version, v.current, v.created_at) for v in found] == [
        ("1", False, made),
        ("2", True, made + timedelta(days=2)),
    ]


def test_keyring_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    relative = keyring_from_url("local:///./var/keyring")
    assert isinstance(relative, LocalKeyring)
    assert relative.directory == tmp_path / "var" / "keyring"
    absolute = keyring_from_url(f"local:///{tmp_path}/keys")
    assert isinstance(absolute, LocalKeyring)
    assert absolute.directory == tmp_path / "keys"
    assert not os.path.exists(tmp_path / "var")  # building a keyring creates nothing

    from strongroom.adapters.kms.aws import AwsKmsKeyring

    aws = keyring_from_url("aws-kms:///strongroom?region=eu-west-1")
    assert isinstance(aws, AwsKmsKeyring)
    assert (aws.name, aws.region, aws.endpoint_url) == ("strongroom", "eu-west-1", None)

    for bad in (
        "vault://secret/strongroom",
        "local://host/keys",
        "local:///",
        "aws-kms:///strongroom",  # no region
        "aws-kms:///strongroom?region=eu-west-1&key=abc",
        "aws-kms:///bad name?region=eu-west-1",
    ):
        with pytest.raises(KeyringError):
            keyring_from_url(bad)
    with pytest.raises(KeyringError, match="unknown keyring scheme 'vault'"):
        keyring_from_url("vault://x")


# -- bindings ----------------------------------------------------------------------------------


def test_bindings_from_tables() -> None:
    binding = Binding.for_row(t.audit_signing_keys, "private_key", "ask_1")
    assert binding == HOME
    with pytest.raises(ValueError, match="not a Sealed column"):
        Binding.for_row(t.audit_signing_keys, "public_key", "ask_1")
    with pytest.raises(ValueError, match="has no merchant_id"):
        Binding.for_row(t.audit_signing_keys, "private_key", "ask_1", "acct_1")
    with pytest.raises(ValueError, match="names a table, a column and a row id"):
        Binding("audit_signing_keys", "private_key", "")


def test_associated_data_is_unambiguous() -> None:
    a = Binding("t", "c", "1|2", "m").associated_data()
    b = Binding("t", "c", "1", "2|m").associated_data()
    assert a != b
    assert b'"v":1' in a
    assert SealedValue("1", b"k", b"n", b"c") != SealedValue("2", b"k", b"n", b"c")
