"""PlaidWebhookVerifier against webhooks signed by the stand-in's signer
(tests/standins/plaid_server.py), which builds Plaid's `Plaid-Verification` JWT by hand with
`cryptography`, independently of PyJWT. No server: the keys function reads the signer's public
JWKs directly and counts the fetches. Time is a FakeClock; nothing sleeps."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Mapping

import pytest

from strongroom.adapters.banks.plaid_webhooks import PlaidWebhookVerifier, WebhookRejected
from tests.standins.plaid_server import WebhookSigner
from tests.support import FakeClock

BODY = json.dumps(
    {
        "webhook_type": "AUTH",
        "webhook_code": "AUTOMATICALLY_VERIFIED",
        "item_id": "eVBnVMp7zdTJLkRNr33Rs6zr7KNJqBFL9DrE6",
        "account_id": "dVzbVMLjrxTnLjX4G66XUp5GLklm4oiZy88yK",
        "environment": "sandbox",
    },
    indent=2,
).encode()


class Keys:
    """The keys function: the signer's JWKs, as PlaidProvider.webhook_verification_key returns
    them, with the fetches counted by kid."""

    def __init__(self, signer: WebhookSigner) -> None:
        self.signer = signer
        self.fetches: list[str] = []
        self.override: dict[str, dict[str, object]] = {}
        self.gone: set[str] = set()  # kids Plaid no longer knows

    async def __call__(self, kid: str) -> Mapping[str, object] | None:
        self.fetches.append(kid)
        await asyncio.sleep(0)  # a real fetch yields to the loop; let others run meanwhile
        if kid in self.gone:
            return None
        return self.override.get(kid) or self.signer.jwk(kid)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def signer() -> WebhookSigner:
    return WebhookSigner()


@pytest.fixture
def keys(signer: WebhookSigner) -> Keys:
    return Keys(signer)


@pytest.fixture
def verifier(keys: Keys, clock: FakeClock) -> PlaidWebhookVerifier:
    return PlaidWebhookVerifier(keys, clock)


def now(clock: FakeClock) -> int:
    return int(clock.now().timestamp())


async def rejected(verifier: PlaidWebhookVerifier, header: str | None, body: bytes = BODY) -> str:
    with pytest.raises(WebhookRejected) as caught:
        await verifier.verify(header, body)
    return caught.value.reason


# --- genuine deliveries --------------------------------------------------------------------------


async def test_a_webhook_signed_as_plaid_signs_passes(
    verifier: PlaidWebhookVerifier, signer: WebhookSigner, clock: FakeClock, keys: Keys
) -> None:
    await verifier.verify(signer.sign(BODY, iat=now(clock)), BODY)

    assert keys.fetches == [signer.current_kid]


async def test_a_webhook_four_minutes_old_still_passes(
    verifier: PlaidWebhookVerifier, signer: WebhookSigner, clock: FakeClock
) -> None:
    header = signer.sign(BODY, iat=now(clock))
    clock.advance(minutes=4)

    await verifier.verify(header, BODY)


# --- the body ------------------------------------------------------------------------------------


async def test_a_changed_body_is_rejected(
    verifier: PlaidWebhookVerifier, signer: WebhookSigner, clock: FakeClock
) -> None:
    header = signer.sign(BODY, iat=now(clock))
    changed = BODY.replace(b"AUTOMATICALLY_VERIFIED", b"VERIFICATION_EXPIRED")

    assert await rejected(verifier, header, changed) == "body does not match the signed hash"


async def test_the_same_json_reserialized_is_rejected(
    verifier: PlaidWebhookVerifier, signer: WebhookSigner, clock: FakeClock
) -> None:
    """The hash is over the raw bytes: a parsed-and-dumped body (same data) does not match."""
    header = signer.sign(BODY, iat=now(clock))
    reserialized = json.dumps(json.loads(BODY)).encode()

    assert await rejected(verifier, header, reserialized) == "body does not match the signed hash"


async def test_a_signed_hash_of_another_body_is_rejected(
    verifier: PlaidWebhookVerifier, signer: WebhookSigner, clock: FakeClock
) -> None:
    other = hashlib.sha256(b'{"webhook_type": "ITEM"}').hexdigest()
    header = signer.sign(BODY, iat=now(clock), request_body_sha256=other)

    assert await rejected(verifier, header) == "body does not match the signed hash"


async def test_a_token_without_the_body_hash_claim_is_rejected(
    verifier: PlaidWebhookVerifier, signer: WebhookSigner, clock: FakeClock
) -> None:
    header = signer.sign(BODY, iat=now(clock), omit_claims=["request_body_sha256"])

    assert await rejected(verifier, header) == "JWT has no request_body_sha256 claim"


# --- time ----------------------------------------------------------------------------------------


async def test_an_iat_six_minutes_old_is_rejected(
    verifier: PlaidWebhookVerifier, signer: WebhookSigner, clock: FakeClock
) -> None:
    header = signer.sign(BODY, iat=now(clock) - 6 * 60)

    assert await rejected(verifier, header) == "webhook is older than five minutes"


async def test_a_genuine_webhook_replayed_six_minutes_later_is_rejected(
    verifier: PlaidWebhookVerifier, signer: WebhookSigner, clock: FakeClock
) -> None:
    header = signer.sign(BODY, iat=now(clock))
    await verifier.verify(header, BODY)

    clock.advance(minutes=6)

    assert await rejected(verifier, header) == "webhook is older than five minutes"


async def test_an_iat_far_in_the_future_is_rejected(
    verifier: PlaidWebhookVerifier, signer: WebhookSigner, clock: FakeClock
) -> None:
    header = signer.sign(BODY, iat=now(clock) + 6 * 60)

    assert await rejected(verifier, header) == "webhook iat is in the future"


async def test_a_token_without_iat_is_rejected(
    verifier: PlaidWebhookVerifier, signer: WebhookSigner, clock: FakeClock
) -> None:
    header = signer.sign(BODY, omit_claims=["iat"])

    assert await rejected(verifier, header) == "JWT has no iat claim"


# --- the algorithm and the signature -------------------------------------------------------------


async def test_alg_none_is_rejected_before_any_key_is_fetched(
    verifier: PlaidWebhookVerifier, signer: WebhookSigner, clock: FakeClock, keys: Keys
) -> None:
    header = signer.sign(BODY, iat=now(clock), alg="none")

    assert await rejected(verifier, header) == "JWT algorithm is not ES256"
    assert keys.fetches == []


async def test_hs256_keyed_with_the_public_key_is_rejected(
    verifier: PlaidWebhookVerifier, signer: WebhookSigner, clock: FakeClock, keys: Keys
) -> None:
    """The algorithm-confusion forgery: anyone can fetch the public key, so an HMAC keyed with
    it proves nothing. The algorithm is fixed to ES256, never read from the token."""
    header = signer.sign(BODY, iat=now(clock), alg="HS256")

    assert await rejected(verifier, header) == "JWT algorithm is not ES256"
    assert keys.fetches == []


async def test_hs256_is_rejected_even_with_a_key_already_cached(
    verifier: PlaidWebhookVerifier, signer: WebhookSigner, clock: FakeClock
) -> None:
    await verifier.verify(signer.sign(BODY, iat=now(clock)), BODY)

    header = signer.sign(BODY, iat=now(clock), alg="HS256")

    assert await rejected(verifier, header) == "JWT algorithm is not ES256"


async def test_a_signature_by_another_key_under_plaids_kid_is_rejected(
    verifier: PlaidWebhookVerifier, signer: WebhookSigner, clock: FakeClock
) -> None:
    forger = WebhookSigner()
    header = forger.sign(BODY, iat=now(clock), kid=signer.current_kid)

    assert await rejected(verifier, header) == "JWT signature is not valid"


async def test_a_tampered_signature_is_rejected(
    verifier: PlaidWebhookVerifier, signer: WebhookSigner, clock: FakeClock
) -> None:
    signing_input, _, signature = signer.sign(BODY, iat=now(clock)).rpartition(".")
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]

    assert await rejected(verifier, f"{signing_input}.{flipped}") == "JWT signature is not valid"


# --- the header ----------------------------------------------------------------------------------


@pytest.mark.parametrize("header", [None, ""])
async def test_a_missing_header_is_rejected(
    verifier: PlaidWebhookVerifier, header: str | None
) -> None:
    assert await rejected(verifier, header) == "missing Plaid-Verification header"


@pytest.mark.parametrize("header", ["not a jwt", "a.b.c", "eyJhbGciOiJFUzI1NiJ9", "...."])
async def test_a_garbage_header_is_rejected(
    verifier: PlaidWebhookVerifier, header: str, keys: Keys
) -> None:
    assert await rejected(verifier, header) == "malformed Plaid-Verification JWT"
    assert keys.fetches == []


async def test_an_overlong_kid_is_not_sent_to_plaid(
    verifier: PlaidWebhookVerifier, signer: WebhookSigner, clock: FakeClock, keys: Keys
) -> None:
    header = signer.sign(BODY, iat=now(clock), kid="k" * 500)

    assert await rejected(verifier, header) == "JWT has no usable key id"
    assert keys.fetches == []


# --- keys ----------------------------------------------------------------------------------------


async def test_an_unknown_kid_is_rejected(
    verifier: PlaidWebhookVerifier, signer: WebhookSigner, clock: FakeClock, keys: Keys
) -> None:
    header = signer.sign(BODY, iat=now(clock), kid="b5e5b0a0-0000-4000-8000-000000000000")

    assert await rejected(verifier, header) == "unknown webhook key id"
    assert keys.fetches == ["b5e5b0a0-0000-4000-8000-000000000000"]


async def test_made_up_kids_do_not_make_the_verifier_recheck_cached_keys(
    verifier: PlaidWebhookVerifier, signer: WebhookSigner, clock: FakeClock, keys: Keys
) -> None:
    await verifier.verify(signer.sign(BODY, iat=now(clock)), BODY)

    for n in range(3):
        header = signer.sign(BODY, iat=now(clock), kid=f"made-up-{n}")
        assert await rejected(verifier, header) == "unknown webhook key id"

    assert keys.fetches == [signer.current_kid, "made-up-0", "made-up-1", "made-up-2"]


async def test_a_key_plaid_has_expired_is_rejected(
    verifier: PlaidWebhookVerifier, signer: WebhookSigner, clock: FakeClock
) -> None:
    signer.expire(signer.current_kid, at=now(clock) - 60)
    header = signer.sign(BODY, iat=now(clock))

    assert await rejected(verifier, header) == "webhook key has expired"


async def test_the_key_is_fetched_once_and_cached(
    verifier: PlaidWebhookVerifier, signer: WebhookSigner, clock: FakeClock, keys: Keys
) -> None:
    for _ in range(3):
        await verifier.verify(signer.sign(BODY, iat=now(clock)), BODY)
        clock.advance(hours=1)

    assert keys.fetches == [signer.current_kid]


async def test_concurrent_deliveries_share_one_fetch(
    verifier: PlaidWebhookVerifier, signer: WebhookSigner, clock: FakeClock, keys: Keys
) -> None:
    header = signer.sign(BODY, iat=now(clock))

    await asyncio.gather(*(verifier.verify(header, BODY) for _ in range(5)))

    assert keys.fetches == [signer.current_kid]


async def test_the_key_is_refetched_after_its_expired_at(
    verifier: PlaidWebhookVerifier, signer: WebhookSigner, clock: FakeClock, keys: Keys
) -> None:
    kid = signer.current_kid
    signer.expire(kid, at=now(clock) + 3600)  # Plaid will retire it in an hour
    await verifier.verify(signer.sign(BODY, iat=now(clock)), BODY)
    clock.advance(minutes=59)
    await verifier.verify(signer.sign(BODY, iat=now(clock)), BODY)
    assert keys.fetches == [kid]

    clock.advance(minutes=2)  # past expired_at: the cached copy is dropped and Plaid asked again

    assert await rejected(verifier, signer.sign(BODY, iat=now(clock))) == "webhook key has expired"
    assert keys.fetches == [kid, kid]


async def test_a_key_whose_expiry_plaid_lifted_is_used_again_after_refetch(
    verifier: PlaidWebhookVerifier, signer: WebhookSigner, clock: FakeClock, keys: Keys
) -> None:
    kid = signer.current_kid
    signer.expire(kid, at=now(clock) + 60)
    await verifier.verify(signer.sign(BODY, iat=now(clock)), BODY)
    signer.expire(kid, at=None)
    clock.advance(minutes=2)

    await verifier.verify(signer.sign(BODY, iat=now(clock)), BODY)

    assert keys.fetches == [kid, kid]


async def test_a_new_kid_makes_the_verifier_recheck_cached_keys(
    verifier: PlaidWebhookVerifier, signer: WebhookSigner, clock: FakeClock, keys: Keys
) -> None:
    """Plaid rotates: a new key signs, the old one gets an expired_at. The cached old key had
    none, so it is asked about again when the new kid first appears, and is then refused."""
    old = signer.current_kid
    await verifier.verify(signer.sign(BODY, iat=now(clock)), BODY)

    new = signer.rotate(expire_old_at=now(clock))
    clock.advance(seconds=1)
    await verifier.verify(signer.sign(BODY, iat=now(clock)), BODY)

    assert keys.fetches == [old, new, old]
    header = signer.sign(BODY, iat=now(clock), kid=old)
    # `sign` uses the old key's private half: a genuine signature, by a retired key.
    assert await rejected(verifier, header) == "webhook key has expired"


async def test_a_cached_key_plaid_no_longer_knows_is_dropped_at_rotation(
    verifier: PlaidWebhookVerifier, signer: WebhookSigner, clock: FakeClock, keys: Keys
) -> None:
    old = signer.current_kid
    await verifier.verify(signer.sign(BODY, iat=now(clock)), BODY)
    keys.gone.add(old)
    new = signer.new_key()

    await verifier.verify(signer.sign(BODY, iat=now(clock)), BODY)

    assert keys.fetches == [old, new, old]
    assert await rejected(verifier, signer.sign(BODY, iat=now(clock), kid=old)) == (
        "unknown webhook key id"
    )


@pytest.mark.parametrize(
    "change",
    [
        {"kty": "oct", "k": "c2VjcmV0"},
        {"crv": "P-384"},
        {"alg": "HS256"},
        {"use": "enc"},
        {"kid": "someone-else"},
        {"expired_at": "soon"},
    ],
)
async def test_a_key_that_is_not_an_es256_signing_key_is_refused(
    verifier: PlaidWebhookVerifier,
    signer: WebhookSigner,
    clock: FakeClock,
    keys: Keys,
    change: dict[str, object],
) -> None:
    jwk = signer.jwk(signer.current_kid)
    assert jwk is not None
    keys.override[signer.current_kid] = {**jwk, **change}

    with pytest.raises(WebhookRejected):
        await verifier.verify(signer.sign(BODY, iat=now(clock)), BODY)


async def test_a_failing_key_fetch_is_not_a_rejection(
    signer: WebhookSigner, clock: FakeClock
) -> None:
    """Plaid unreachable is not a bad webhook: the error passes through, so the route answers
    5xx and Plaid delivers again later."""

    async def unreachable(kid: str) -> Mapping[str, object] | None:
        raise ConnectionError("plaid is down")

    verifier = PlaidWebhookVerifier(unreachable, clock)

    with pytest.raises(ConnectionError):
        await verifier.verify(signer.sign(BODY, iat=now(clock)), BODY)


async def test_the_rejection_reason_never_quotes_the_token(
    verifier: PlaidWebhookVerifier, signer: WebhookSigner, clock: FakeClock
) -> None:
    header = signer.sign(BODY, iat=now(clock) - 3600)

    reason = await rejected(verifier, header)

    for part in header.split("."):
        assert part not in reason
