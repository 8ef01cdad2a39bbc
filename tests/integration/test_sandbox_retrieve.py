"""The sandbox answers `retrieve` with a charge's current state, the read a gateway webhook
triggers; every state a charge can reach is covered."""

from __future__ import annotations

from strongroom.adapters.gateways.port import ChargeState
from strongroom.bootstrap import Container
from strongroom.domain.model import ActionRequired, Approved, Declined


async def test_retrieve_follows_a_charge_through_its_states(container: Container) -> None:
    sandbox = container.sandbox
    held = await sandbox.authorize(
        payment_method="tok_visa", amount=500, currency="usd", capture=False, idempotency_key="k1"
    )
    assert isinstance(held, Approved)
    status = await sandbox.retrieve(reference=held.reference)
    assert (status.state, status.amount_captured) == (ChargeState.AUTHORIZED, 0)

    await sandbox.capture(reference=held.reference, amount=400, idempotency_key="k2")
    await sandbox.refund(reference=held.reference, amount=150, idempotency_key="k3")
    status = await sandbox.retrieve(reference=held.reference)
    assert (status.state, status.amount_captured, status.amount_refunded) == (
        ChargeState.CAPTURED,
        400,
        150,
    )

    other = await sandbox.authorize(
        payment_method="tok_visa", amount=500, currency="usd", capture=False, idempotency_key="k4"
    )
    await sandbox.void(reference=other.reference, idempotency_key="k5")
    assert (await sandbox.retrieve(reference=other.reference)).state is ChargeState.CANCELED


async def test_retrieve_reports_declines_and_challenges(container: Container) -> None:
    sandbox = container.sandbox
    declined = await sandbox.authorize(
        payment_method="tok_chargeDeclinedInsufficientFunds",
        amount=500,
        currency="usd",
        capture=True,
        idempotency_key="d1",
    )
    assert isinstance(declined, Declined)
    assert declined.reference is not None
    status = await sandbox.retrieve(reference=declined.reference)
    assert status.state is ChargeState.FAILED
    assert status.decline is not None
    assert status.decline.decline_code == "insufficient_funds"

    challenged = await sandbox.authorize(
        payment_method="tok_threeDSecureRequired",
        amount=500,
        currency="usd",
        capture=True,
        idempotency_key="c1",
    )
    assert isinstance(challenged, ActionRequired)
    ref = challenged.reference
    assert (await sandbox.retrieve(reference=ref)).state is ChargeState.REQUIRES_ACTION
    await sandbox.answer_challenge(ref, succeeded=False)
    await sandbox.confirm_action(reference=ref, capture=True, idempotency_key="c2")
    status = await sandbox.retrieve(reference=ref)
    assert status.state is ChargeState.FAILED
    assert status.decline is not None
    assert status.decline.code == "payment_intent_authentication_failure"
