"""A child process that dies for real (os._exit) right after the sandbox charged, before
phase 2 commits. Run by test_recovery.py as `python -m tests.integration.crash_child`."""

from __future__ import annotations

import asyncio
import os
import sys
from datetime import timedelta
from typing import Any

from strongroom.bootstrap import bootstrap
from strongroom.domain.model import GatewayAnswer
from strongroom.entrypoints.api.rendering import render
from strongroom.service_layer import commands as c
from strongroom.service_layer.idempotency import IdempotentRequest, fingerprint
from strongroom.settings import Settings

EXIT_CODE = 86


async def main(database_url: str, merchant_id: str, operation: str, target: str) -> None:
    container = bootstrap(Settings(database_url=database_url, env="test"))
    sandbox = container.sandbox
    method = "refund" if operation == "refund" else "authorize"
    original = getattr(sandbox, method)

    async def charge_then_die(**kwargs: Any) -> GatewayAnswer:
        await original(**kwargs)
        os._exit(EXIT_CODE)  # no cleanup, no rollback, no phase 2: a real crash

    setattr(sandbox, method, charge_then_die)
    caller = c.Caller(merchant_id, livemode=False)
    if operation == "refund":
        await container.payments.create_refund(
            caller, c.CreateRefund(payment_intent=target, amount=700), None
        )
    else:
        params = {"amount": 2000, "currency": "usd", "payment_method": "tok_visa", "confirm": True}
        idem = IdempotentRequest(
            merchant_id=merchant_id,
            livemode=False,
            key=target,
            method="POST",
            path="/v1/payment_intents",
            fingerprint=fingerprint(params),
            render=lambda outcome: render(outcome, "req_child"),
            lock_for=timedelta(seconds=60),
        )
        await container.payments.create_payment_intent(
            caller,
            c.CreatePaymentIntent(**params),
            idem,  # type: ignore[arg-type]
        )
    raise SystemExit("the gateway call returned without the process dying")


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
