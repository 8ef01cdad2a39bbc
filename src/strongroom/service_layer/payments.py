"""Customers, PaymentIntents and refunds: the handlers behind every payment endpoint.

A gateway call cannot sit inside a database transaction, so every call runs in atomic phases:

  phase 1  one transaction: check the transition, record a `gateway_operations` row (status
           `started`, carrying the gateway idempotency key), mark the intent; commit.
  call     the gateway, with that key.
  phase 2  one transaction: lock the operation; unless someone already finished it, apply the
           answer, post the ledger, store the Idempotency-Key response; commit.

A crash between the phases leaves a `started` operation behind. `recover()` (the worker) and
any later request on the same intent drive it again with the same key, so the gateway charges
once, and phase 2's check makes applying the answer happen once.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

import structlog

from strongroom.adapters.gateways.port import (
    ChargeState,
    ChargeStatus,
    Gateway,
    GatewayNotReached,
    GatewayOutcomeUnknown,
)
from strongroom.adapters.observability.tracing import Tracing
from strongroom.domain.audit import Actor, ActorType, AuditTag, Origin
from strongroom.domain.audit import Outcome as AuditOutcome
from strongroom.domain.authorization import Resource
from strongroom.domain.clock import Clock
from strongroom.domain.errors import (
    CardError,
    GatewayUnavailable,
    IllegalTransition,
    InvalidRequest,
    ResourceMissing,
    StrongroomError,
)
from strongroom.domain.events import EventType
from strongroom.domain.ids import new_id
from strongroom.domain.model import (
    BANK_DEBIT,
    TERMINAL,
    ActionRequired,
    Approved,
    CaptureMethod,
    Customer,
    Declined,
    GatewayAnswer,
    GatewayOperation,
    OperationKind,
    OperationStatus,
    PaymentIntent,
    PIStatus,
    Refund,
    RefundStatus,
)
from strongroom.domain.money import check_amount, parse_currency
from strongroom.service_layer import commands as c
from strongroom.service_layer.audit import AuditLog
from strongroom.service_layer.authorization import Authorizer
from strongroom.service_layer.bank_debits import BankDebits, is_bank_account
from strongroom.service_layer.gateways import Candidate, Gateways
from strongroom.service_layer.idempotency import IdempotentRequest, Replayed
from strongroom.service_layer.unit_of_work import Transaction, UnitOfWork

log = structlog.get_logger(__name__)

Outcome = PaymentIntent | Refund | StrongroomError
# Phase 1 of confirm, capture or cancel: the operation to drive, or None when done already.
Starter = Callable[[Transaction, PaymentIntent, datetime], Awaitable[GatewayOperation | None]]

_AUDIT = "audit"  # the key in an operation's request that carries its request's audit record
GATEWAY_UNAVAILABLE = (
    "The payment gateway did not answer in time. The outcome will be settled automatically; "
    "retry with the same Idempotency-Key to get it."
)


class Payments:
    def __init__(
        self,
        uow: UnitOfWork,
        gateways: Gateways,
        clock: Clock,
        *,
        max_amount: int,
        recovery_grace: timedelta = timedelta(seconds=30),
        recovery_lease: timedelta = timedelta(seconds=60),
        audit: AuditLog,
        authz: Authorizer,
        tracing: Tracing | None = None,
        debits: BankDebits | None = None,
    ) -> None:
        self.uow = uow
        self.debits = debits
        self.audit = audit
        self.authz = authz
        self.gateways = gateways
        self.clock = clock
        self.max_amount = max_amount
        self.recovery_grace = recovery_grace
        self.recovery_lease = recovery_lease
        self.tracing = tracing or Tracing()

    # --- customers -----------------------------------------------------------------------------
    async def create_customer(
        self, caller: c.Caller, cmd: c.CreateCustomer, idem: IdempotentRequest | None
    ) -> Customer | Replayed:
        now = self.clock.now()
        async with self.uow.transaction() as tx:
            # Claim, write and response share one transaction: there is never a half-done
            # customer for a retry to resume.
            if idem and await self._claimed_replay(idem, tx, now):
                return Replayed()
            customer = Customer(
                id=new_id("cus"),
                merchant_id=caller.merchant_id,
                email=cmd.email,
                name=cmd.name,
                description=cmd.description,
                metadata=cmd.metadata,
                livemode=caller.livemode,
                created_at=now,
            )
            customer.raise_event(EventType.CUSTOMER_CREATED)
            await tx.repo.add_customer(customer)
            if idem:
                await idem.finish(tx, customer)
            await tx.commit()
        return customer

    async def get_customer(self, caller: c.Caller, customer_id: str) -> Customer:
        async with self.uow.reading() as repo:
            customer = await repo.get_customer(
                caller.merchant_id, customer_id, livemode=caller.livemode
            )
        if customer is None:
            raise ResourceMissing(f"No such customer: '{customer_id}'", param="id")
        await self.authz.require(
            caller, "customers.read", Resource("customer", customer.id, customer.merchant_id)
        )
        return customer

    async def customers_of(
        self, caller: c.Caller, intents: list[PaymentIntent]
    ) -> dict[str, Customer]:
        """The customers of these payment intents (the caller's merchant's only), by id."""
        wanted = {pi.customer_id for pi in intents if pi.customer_id}
        async with self.uow.reading() as repo:
            found = [
                await repo.get_customer(caller.merchant_id, i, livemode=caller.livemode)
                for i in sorted(wanted)
            ]
        return {customer.id: customer for customer in found if customer is not None}

    # --- payment intents -----------------------------------------------------------------------
    async def create_payment_intent(
        self, caller: c.Caller, cmd: c.CreatePaymentIntent, idem: IdempotentRequest | None
    ) -> PaymentIntent | Replayed:
        now = self.clock.now()
        # Checks that need no database run first, so a bad request costs no transaction.
        currency = parse_currency(cmd.currency)
        amount = check_amount(cmd.amount, maximum=self.max_amount)
        pi_id = new_id("pi")
        op: GatewayOperation | None = None
        bank = cmd.confirm and is_bank_account(cmd.payment_method)
        if bank:
            assert cmd.payment_method is not None
            await self._bank_debits().check_debitable(caller, cmd.payment_method, currency)
        plan = (
            await self._plan(caller, cmd.payment_method, currency, amount)
            if cmd.confirm and cmd.payment_method and not bank
            else None
        )
        async with self.uow.transaction() as tx:
            if idem and await self._claimed_replay(idem, tx, now, pi_id):
                return Replayed()
            # A retry taking over a request that died reads its intent without locking it: the
            # key row is locked already, and phase 2 locks the intent before the key.
            resumed = (
                await tx.repo.get_payment_intent(
                    caller.merchant_id, idem.resource_id, livemode=caller.livemode
                )
                if idem and idem.took_over and idem.resource_id
                else None
            )
            settled: Outcome | None = None
            if resumed is not None:
                pi = resumed
                if pi.pending_operation_id:
                    op = await tx.repo.get_operation(pi.pending_operation_id)
                else:
                    settled = settled_outcome(pi)
            else:
                if cmd.customer is not None and (
                    await tx.repo.get_customer(
                        caller.merchant_id, cmd.customer, livemode=caller.livemode
                    )
                    is None
                ):
                    raise ResourceMissing(f"No such customer: '{cmd.customer}'", param="customer")
                pi = PaymentIntent(
                    id=pi_id,
                    merchant_id=caller.merchant_id,
                    amount=amount,
                    currency=currency,
                    status=(
                        PIStatus.REQUIRES_CONFIRMATION
                        if cmd.payment_method
                        else PIStatus.REQUIRES_PAYMENT_METHOD
                    ),
                    capture_method=cmd.capture_method,
                    livemode=caller.livemode,
                    created_at=now,
                    customer_id=cmd.customer,
                    payment_method=cmd.payment_method,
                    gateway=self.gateways.builtin.name,  # until routing picks one
                    metadata=cmd.metadata,
                )
                if cmd.confirm and not bank:
                    op = self._confirm_operation(pi, None, now, plan)
                pi.raise_event(EventType.PAYMENT_INTENT_CREATED)
                # A bank debit makes no gateway call: it is recorded with the intent.
                debit = pi.begin_bank_debit(pi.payment_method or "") if bank else []
                # One INSERT of the intent in its final phase-1 state, then its operation.
                await tx.repo.add_payment_intent(pi, now)
                if debit:
                    await tx.repo.post(pi.merchant_id, debit, now)
                    await self._bank_debits().record(tx, pi, now)
                await self._audit_request(
                    tx,
                    caller,
                    op,
                    AuditTag.PAYMENT_INTENT_CREATE,
                    ("payment_intent", pi.id),
                    {"amount": amount, "currency": currency, "confirm": cmd.confirm},
                )
                if op is not None:
                    await tx.repo.add_operation(op)
            if op is None and idem:
                await idem.finish(tx, settled or pi)
            await tx.commit()
        if op is not None:
            return await self._drive_intent(op, idem, first_call=resumed is None)
        if isinstance(settled, StrongroomError):
            raise settled
        return pi

    def _bank_debits(self) -> BankDebits:
        if self.debits is None:
            raise InvalidRequest("Bank debits are not set up here.", param="payment_method")
        return self.debits

    async def get_payment_intent(self, caller: c.Caller, pi_id: str) -> PaymentIntent:
        async with self.uow.reading() as repo:
            pi = await repo.get_payment_intent(caller.merchant_id, pi_id, livemode=caller.livemode)
        if pi is None:
            raise ResourceMissing(f"No such payment_intent: '{pi_id}'", param="id")
        await self.authz.require(caller, "payment_intents.read", _resource(pi))
        return pi

    async def list_payment_intents(
        self, caller: c.Caller, *, limit: int, starting_after: str | None
    ) -> tuple[list[PaymentIntent], bool]:
        async with self.uow.reading() as repo:
            page = await repo.list_payment_intents(
                caller.merchant_id,
                caller.livemode,
                limit=limit,
                starting_after=starting_after,
            )
        if page is None:
            raise ResourceMissing(
                f"No such payment_intent: '{starting_after}'", param="starting_after"
            )
        return page

    async def confirm(
        self, caller: c.Caller, cmd: c.ConfirmPaymentIntent, idem: IdempotentRequest | None
    ) -> PaymentIntent | Replayed:
        # Routing reads (and the card's facts) happen before the transaction: phase 1 holds a
        # connection and must not wait for a second one. What they depend on (the payment
        # method, amount and currency) is checked again under the lock.
        async with self.uow.reading() as repo:
            seen = await repo.get_payment_intent(
                caller.merchant_id, cmd.payment_intent, livemode=caller.livemode
            )
        method = cmd.payment_method or (seen.payment_method if seen else None)
        bank = is_bank_account(method)
        if bank and seen is not None and method is not None:
            await self._bank_debits().check_debitable(caller, method, seen.currency)
        plan = (
            await self._plan(caller, method, seen.currency, seen.amount)
            if seen and not bank
            else None
        )

        async def start(
            tx: Transaction, pi: PaymentIntent, now: datetime
        ) -> GatewayOperation | None:
            if (cmd.payment_method or pi.payment_method) != method:
                raise IllegalTransition(
                    "This PaymentIntent changed while it was being confirmed; retry.",
                    status=pi.status,
                )
            if bank:  # no gateway call: the debit is recorded with the intent's change
                await tx.repo.post(pi.merchant_id, pi.begin_bank_debit(method or ""), now)
                await self._bank_debits().record(tx, pi, now)
                return None
            return self._confirm_operation(pi, cmd.payment_method, now, plan)

        return await self._on_intent(
            caller,
            cmd.payment_intent,
            idem,
            start,
            AuditTag.PAYMENT_INTENT_CONFIRM,
            "payment_intents.confirm",
        )

    async def capture(
        self, caller: c.Caller, cmd: c.CapturePaymentIntent, idem: IdempotentRequest | None
    ) -> PaymentIntent | Replayed:
        async def start(tx: Transaction, pi: PaymentIntent, now: datetime) -> GatewayOperation:
            amount = pi.begin_capture(cmd.amount_to_capture)
            return self._operation(
                pi, OperationKind.CAPTURE, amount, {"reference": pi.gateway_reference}, now
            )

        return await self._on_intent(
            caller,
            cmd.payment_intent,
            idem,
            start,
            AuditTag.PAYMENT_INTENT_CAPTURE,
            "payment_intents.capture",
        )

    async def cancel(
        self, caller: c.Caller, cmd: c.CancelPaymentIntent, idem: IdempotentRequest | None
    ) -> PaymentIntent | Replayed:
        async def start(
            tx: Transaction, pi: PaymentIntent, now: datetime
        ) -> GatewayOperation | None:
            if pi.needs_void():
                request: dict[str, object] = {
                    "reference": pi.gateway_reference,
                    "reason": cmd.cancellation_reason,
                }
                return self._operation(pi, OperationKind.VOID, pi.amount_capturable, request, now)
            await tx.repo.post(pi.merchant_id, pi.cancel(cmd.cancellation_reason, now), now)
            return None

        return await self._on_intent(
            caller,
            cmd.payment_intent,
            idem,
            start,
            AuditTag.PAYMENT_INTENT_CANCEL,
            "payment_intents.cancel",
        )

    async def _on_intent(
        self,
        caller: c.Caller,
        pi_id: str,
        idem: IdempotentRequest | None,
        start: Starter,
        tag: AuditTag,
        action: str,
    ) -> PaymentIntent | Replayed:
        """The shape shared by confirm, capture and cancel: phase 1 of this request's gateway
        call, then the call itself. While another call on the intent is in flight the request
        is refused; a retry with the same Idempotency-Key finishes its own."""
        now = self.clock.now()
        settled: Outcome | None = None
        async with self.authz.refusals(), self.uow.transaction() as tx:
            if idem and await self._claimed_replay(idem, tx, now):
                return Replayed()
            took_over = idem is not None and idem.took_over
            # A takeover does not lock the intent (see create_payment_intent).
            pi = await tx.repo.get_payment_intent(
                caller.merchant_id, pi_id, livemode=caller.livemode, for_update=not took_over
            )
            if pi is None:
                raise ResourceMissing(f"No such payment_intent: '{pi_id}'", param="id")
            caller = self.authz.check(caller, action, _resource(pi))
            if took_over:
                # The request that died committed its phase 1 (the key is claimed there), so
                # its work exists: finish it, or answer with what it already did.
                op = (
                    await tx.repo.get_operation(pi.pending_operation_id)
                    if pi.pending_operation_id
                    else None
                )
                if op is None:
                    settled = settled_outcome(pi)
            elif pi.pending_operation_id:
                raise IllegalTransition(
                    f"This PaymentIntent's status is {pi.status} and another request on it is "
                    "in progress; retry once it has finished.",
                    status=pi.status,
                )
            else:
                op = await start(tx, pi, now)
                await tx.repo.save_payment_intent(pi, now)
                await self._audit_request(tx, caller, op, tag, ("payment_intent", pi.id))
                if op is not None:
                    await tx.repo.add_operation(op)
            if op is None and idem:
                await idem.finish(tx, settled or pi)
            await tx.commit()
        if op is not None:
            return await self._drive_intent(op, idem, first_call=not took_over)
        if isinstance(settled, StrongroomError):
            raise settled
        return pi

    async def _plan(
        self, caller: c.Caller, payment_method: str | None, currency: str, amount: int
    ) -> list[Candidate] | None:
        if payment_method is None:
            return None  # confirming will refuse: there is nothing to route
        facts = await self.gateways.facts(payment_method, currency, amount)
        return await self.gateways.plan(caller.merchant_id, caller.livemode, facts)

    def _confirm_operation(
        self,
        pi: PaymentIntent,
        payment_method: str | None,
        now: datetime,
        plan: list[Candidate] | None,
    ) -> GatewayOperation:
        """A fresh authorization goes to the first account of `plan` (the merchant's rules,
        read before the transaction), the others kept in order as fallbacks. Finishing a 3-D
        Secure challenge stays with the gateway that asked for it."""
        reference = pi.gateway_reference if pi.status is PIStatus.REQUIRES_ACTION else None
        pi.begin_confirm(payment_method)
        request: dict[str, object] = {"capture": pi.capture_method is CaptureMethod.AUTOMATIC}
        if reference is not None:
            request["resume"] = reference
        else:
            assert plan, "a fresh confirmation is routed before its transaction"
            request["payment_method"] = pi.payment_method
            first, *rest = plan
            pi.gateway, pi.gateway_account_id = first.provider, first.account_id
            request["fallbacks"] = [c.account_id for c in rest]
        return self._operation(pi, OperationKind.AUTHORIZE, pi.amount, request, now)

    @staticmethod
    def _operation(
        pi: PaymentIntent,
        kind: OperationKind,
        amount: int,
        request: dict[str, object],
        now: datetime,
        refund_id: str | None = None,
    ) -> GatewayOperation:
        """Phase 1's recovery point: the operation row the caller inserts before the call.
        Intent-level operations also mark the intent, so no other one starts meanwhile. The
        request names the gateway account, so whoever drives it calls the same one."""
        request.setdefault("account", pi.gateway_account_id)
        op = GatewayOperation(
            id=new_id("gop"),
            merchant_id=pi.merchant_id,
            payment_intent_id=pi.id,
            refund_id=refund_id,
            kind=kind,
            amount=amount,
            currency=pi.currency,
            status=OperationStatus.STARTED,
            request=request,
            created_at=now,
            updated_at=now,
        )
        if refund_id is None:
            pi.pending_operation_id = op.id
        return op

    # --- refunds -------------------------------------------------------------------------------
    async def create_refund(
        self, caller: c.Caller, cmd: c.CreateRefund, idem: IdempotentRequest | None
    ) -> Refund | Replayed:
        now = self.clock.now()
        if cmd.amount is not None:
            check_amount(cmd.amount, maximum=self.max_amount)
        refund_id = new_id("re")
        op: GatewayOperation | None = None
        async with self.authz.refusals(), self.uow.transaction() as tx:
            if idem and await self._claimed_replay(idem, tx, now, refund_id):
                return Replayed()
            resumed = (
                await tx.repo.get_refund(
                    caller.merchant_id, idem.resource_id, livemode=caller.livemode
                )
                if idem and idem.took_over and idem.resource_id
                else None
            )
            if resumed is not None:  # a retry taking over a request that died
                refund = resumed
                if refund.status is RefundStatus.PENDING:
                    op = await tx.repo.operation_for_refund(refund.id)
            else:
                refund, op = await self._begin_refund(tx, caller, cmd, refund_id, now)
            if op is None and idem:
                await idem.finish(tx, refund)
            await tx.commit()
        if op is not None:
            result = await self._drive(op, idem)
            assert isinstance(result, Refund)
            return result
        return refund

    async def _begin_refund(
        self, tx: Transaction, caller: c.Caller, cmd: c.CreateRefund, refund_id: str, now: datetime
    ) -> tuple[Refund, GatewayOperation]:
        pi = await tx.repo.get_payment_intent(
            caller.merchant_id, cmd.payment_intent, livemode=caller.livemode, for_update=True
        )
        if pi is None:
            raise ResourceMissing(
                f"No such payment_intent: '{cmd.payment_intent}'", param="payment_intent"
            )
        if pi.gateway == BANK_DEBIT:
            raise InvalidRequest(
                "Bank debits cannot be refunded through Strongroom yet.",
                param="payment_intent",
                code="refund_not_supported",
            )
        amount = pi.reserve_refund(cmd.amount)
        caller = self.authz.check(
            caller,
            "refunds.create",
            Resource("refund", refund_id, pi.merchant_id, amount, pi.currency),
            # Operators' large refunds need more (see the policy); keys' need only the scope.
            {"refund_step_up_amount": await tx.repo.refund_step_up_amount(pi.merchant_id)}
            if caller.operator_id is not None
            else None,
        )
        refund = Refund(
            id=refund_id,
            merchant_id=caller.merchant_id,
            payment_intent_id=pi.id,
            amount=amount,
            currency=pi.currency,
            status=RefundStatus.PENDING,
            livemode=pi.livemode,
            created_at=now,
            reason=cmd.reason,
            metadata=cmd.metadata,
        )
        op = self._operation(
            pi, OperationKind.REFUND, amount, {"reference": pi.gateway_reference}, now, refund.id
        )
        refund.raise_event(EventType.REFUND_CREATED)
        await tx.repo.save_payment_intent(pi, now)
        await tx.repo.add_refund(refund, now)
        await self._audit_request(
            tx,
            caller,
            op,
            AuditTag.REFUND_CREATE,
            ("refund", refund.id),
            {"payment_intent": pi.id, "amount": amount, "currency": pi.currency},
        )
        await tx.repo.add_operation(op)
        return refund, op

    async def get_refund(self, caller: c.Caller, refund_id: str) -> Refund:
        async with self.uow.reading() as repo:
            refund = await repo.get_refund(caller.merchant_id, refund_id, livemode=caller.livemode)
        if refund is None:
            raise ResourceMissing(f"No such refund: '{refund_id}'", param="id")
        await self.authz.require(
            caller,
            "refunds.read",
            Resource("refund", refund.id, refund.merchant_id, refund.amount, refund.currency),
        )
        return refund

    # --- gateway webhooks ----------------------------------------------------------------------
    async def sync_with_gateway(
        self, merchant_id: str, account_id: str | None, reference: str
    ) -> PaymentIntent | None:
        """A gateway webhook's handler. The webhook is only a trigger: the charge's current
        state is read from the gateway and the intent brought in line with it, so a repeated,
        late or out-of-order event changes nothing that a newer one has not. A terminal intent
        never moves. None when no intent of the merchant has this charge (yet).

        - requires_action, and the charge has moved on: the 3-D Secure confirmation is finished
          through the usual operation (the same path as the customer's own confirm);
        - requires_capture, and the charge was captured or released at the gateway itself: the
          capture or cancellation is applied here."""
        async with self.uow.reading() as repo:
            pi = await repo.find_payment_intent_by_reference(merchant_id, account_id, reference)
        if pi is None or pi.status in TERMINAL:
            return pi
        gateway = await self.gateways.get(merchant_id, account_id)
        charge = await gateway.retrieve(reference=reference)
        if (
            pi.status is PIStatus.REQUIRES_ACTION
            and charge.state is not ChargeState.REQUIRES_ACTION
        ):
            return await self._finish_challenge(pi)
        if pi.status is PIStatus.REQUIRES_CAPTURE and charge.state in (
            ChargeState.CAPTURED,
            ChargeState.CANCELED,
        ):
            return await self._settled_at_gateway(pi, charge)
        return pi

    async def _finish_challenge(self, seen: PaymentIntent) -> PaymentIntent:
        now = self.clock.now()
        async with self.uow.transaction() as tx:
            pi = await tx.repo.get_payment_intent(seen.merchant_id, seen.id, for_update=True)
            assert pi is not None
            if pi.status is not PIStatus.REQUIRES_ACTION or pi.pending_operation_id:
                return pi  # someone else is finishing it, or has
            op = self._confirm_operation(pi, None, now, None)
            await tx.repo.save_payment_intent(pi, now)
            await tx.repo.add_operation(op)
            await tx.commit()
        try:
            return await self._drive_intent(op, None)
        except CardError:
            # The challenge failed: the intent records the decline, as for the customer.
            async with self.uow.reading() as repo:
                failed = await repo.get_payment_intent(seen.merchant_id, seen.id)
            assert failed is not None
            return failed

    async def _settled_at_gateway(self, seen: PaymentIntent, charge: ChargeStatus) -> PaymentIntent:
        now = self.clock.now()
        async with self.uow.transaction() as tx:
            pi = await tx.repo.get_payment_intent(seen.merchant_id, seen.id, for_update=True)
            assert pi is not None
            if pi.status is not PIStatus.REQUIRES_CAPTURE or pi.pending_operation_id:
                return pi
            if charge.state is ChargeState.CAPTURED:
                txs = pi.apply_capture(min(charge.amount_captured, pi.amount_capturable))
            else:
                txs = pi.cancel("automatic", now)
            await tx.repo.post(pi.merchant_id, txs, now)
            await tx.repo.save_payment_intent(pi, now)
            await tx.commit()
        log.info("payment settled at the gateway", payment_intent=pi.id, status=pi.status)
        return pi

    # --- driving gateway operations ------------------------------------------------------------
    async def _drive_intent(
        self, op: GatewayOperation, idem: IdempotentRequest | None, *, first_call: bool = False
    ) -> PaymentIntent:
        result = await self._drive(op, idem, first_call=first_call)
        assert isinstance(result, PaymentIntent)
        return result

    async def _drive(
        self, op: GatewayOperation, idem: IdempotentRequest | None, *, first_call: bool = False
    ) -> PaymentIntent | Refund:
        """Call the gateway for `op` and run phase 2. Safe to call any number of times, from
        any process: the gateway dedupes on the key, phase 2 applies the answer once.

        `first_call`: this is the operation's first call, made by the request that created it.
        Only then may it fail over: a later call (a retry, recovery) cannot know that an
        earlier one, which timed out, did not charge at the first gateway."""
        try:
            answer = await self._call_routed(op, may_fail_over=first_call)
        except (GatewayOutcomeUnknown, GatewayNotReached) as exc:
            log.warning("gateway outcome unknown", operation=op.id, kind=op.kind, error=str(exc))
            if idem and idem.row_id is not None:
                async with self.uow.transaction() as tx:
                    await idem.release(tx, self.clock.now())
                    await tx.commit()
            raise GatewayUnavailable(GATEWAY_UNAVAILABLE) from exc
        now = self.clock.now()
        async with self.uow.transaction() as tx:
            outcome = await self._apply(tx, op, answer, now)
            if idem:
                await idem.finish(tx, outcome)
            await tx.commit()
        if isinstance(outcome, StrongroomError):
            raise outcome
        return outcome

    async def _call_routed(self, op: GatewayOperation, *, may_fail_over: bool) -> GatewayAnswer:
        """Call the operation's gateway; when it was certainly not reached (refused, or its
        breaker open), this is the operation's first call and the authorization has
        fallbacks, move it to the next one first."""
        while True:
            gateway = await self.gateways.get(op.merchant_id, _account(op))
            try:
                with self.tracing.gateway_call(gateway.name, op.kind, op.id) as span:
                    answer = await self._call(gateway, op)
                    span.set_attribute("strongroom.gateway.outcome", type(answer).__name__)
                return answer
            except GatewayNotReached as exc:
                moved = await self._fail_over(op) if may_fail_over else None
                if moved is None:
                    raise
                log.warning(
                    "gateway not reached; failing over",
                    operation=op.id,
                    frm=_account(op) or "sandbox",
                    to=_account(moved) or "sandbox",
                    error=str(exc),
                )
                op = moved

    async def _fail_over(self, op: GatewayOperation) -> GatewayOperation | None:
        """The operation pointed at its next fallback, committed before that gateway is
        called (so recovery drives the same one); None when there is none to go to. Only a
        fresh authorization moves: anything else acts on a charge that one gateway holds."""
        fallbacks = [a for a in op.request.get("fallbacks") or [] if isinstance(a, str)]
        if op.kind is not OperationKind.AUTHORIZE or "resume" in op.request or not fallbacks:
            return None
        account, rest = fallbacks[0], fallbacks[1:]
        provider = (await self.gateways.get(op.merchant_id, account)).name
        request = {**op.request, "account": account, "fallbacks": rest}
        now = self.clock.now()
        async with self.uow.transaction() as tx:
            if not await tx.repo.reroute_operation(op.id, request, now):
                return None  # finished meanwhile: phase 2 will find its answer
            pi = await tx.repo.get_payment_intent(
                op.merchant_id, op.payment_intent_id, for_update=True
            )
            assert pi is not None
            pi.gateway, pi.gateway_account_id = provider, account
            await tx.repo.save_payment_intent(pi, now)
            await tx.commit()
        return dataclasses.replace(op, request=request)

    async def _call(self, gateway: Gateway, op: GatewayOperation) -> GatewayAnswer:
        key = op.gateway_idempotency_key
        req = op.request
        match op.kind:
            case OperationKind.AUTHORIZE if "resume" in req:
                return await gateway.confirm_action(
                    reference=str(req["resume"]), capture=bool(req["capture"]), idempotency_key=key
                )
            case OperationKind.AUTHORIZE:
                return await gateway.authorize(
                    payment_method=str(req["payment_method"]),
                    amount=op.amount,
                    currency=op.currency,
                    capture=bool(req["capture"]),
                    idempotency_key=key,
                )
            case OperationKind.CAPTURE:
                return await gateway.capture(
                    reference=str(req["reference"]), amount=op.amount, idempotency_key=key
                )
            case OperationKind.VOID:
                return await gateway.void(reference=str(req["reference"]), idempotency_key=key)
            case OperationKind.REFUND:
                return await gateway.refund(
                    reference=str(req["reference"]), amount=op.amount, idempotency_key=key
                )

    async def _apply(
        self, tx: Transaction, stale: GatewayOperation, answer: GatewayAnswer, now: datetime
    ) -> Outcome:
        op = stale  # its fields never change; only its status does, guarded just below
        final = (
            OperationStatus.FAILED if isinstance(answer, Declined) else OperationStatus.SUCCEEDED
        )
        first = await tx.repo.finish_operation(op.id, final, now)
        pi = await tx.repo.get_payment_intent(op.merchant_id, op.payment_intent_id, for_update=True)
        assert pi is not None
        refund = (
            await tx.repo.get_refund(op.merchant_id, op.refund_id, for_update=True)
            if op.refund_id
            else None
        )
        if not first:  # another process finished it first; its result stands
            return refund or settled_outcome(pi)
        outcome: Outcome
        if op.kind is OperationKind.REFUND:
            assert refund is not None
            txs = refund.apply(answer)
            if refund.status is RefundStatus.FAILED:
                pi.release_refund(refund.amount)
            await tx.repo.save_refund(refund, now)
            outcome = refund
        elif op.kind is OperationKind.AUTHORIZE:
            txs = pi.apply_authorization(answer)
            outcome = pi
            if isinstance(answer, Declined):
                outcome = CardError(
                    answer.message,
                    code=answer.code,
                    decline_code=answer.decline_code,
                    payment_intent_id=pi.id,
                )
        elif isinstance(answer, Approved):
            txs = (
                pi.apply_capture(op.amount)
                if op.kind is OperationKind.CAPTURE
                else pi.cancel(str(op.request.get("reason") or "") or None, now)
            )
            outcome = pi
        else:
            assert not isinstance(answer, ActionRequired)
            pi.pending_operation_id = None
            txs = []
            outcome = IllegalTransition(answer.message, status=pi.status, code=answer.code)
        await tx.repo.post(op.merchant_id, txs, now)
        await tx.repo.save_payment_intent(pi, now)
        await self._record_result(tx, op, pi, answer)
        return outcome

    async def _audit_request(
        self,
        tx: Transaction,
        caller: c.Caller,
        op: GatewayOperation | None,
        tag: AuditTag,
        resource: tuple[str, str],
        details: dict[str, object] | None = None,
    ) -> None:
        """One audit event per request, with its real outcome. A request that calls the
        gateway is recorded where the answer is applied (phase 2, by the request or by the
        recovery loop), so the event says what came of it; who asked, and from where, travel
        with the operation until then. Any other request is recorded now, in its transaction.
        Refunds are always recorded; other payment operations per audit_payment_events."""
        if tag is not AuditTag.REFUND_CREATE and not self.audit.payment_events:
            return
        if op is None:
            event = self.audit.by_caller(caller, tag, resource=resource, details=details)
            await tx.repo.add_audit_event(event)
            return
        op.request[_AUDIT] = {
            "tag": str(tag),
            "key_id": caller.key_id,
            "ip": caller.origin.ip,
            "request_id": caller.origin.request_id,
            "resource": list(resource),
            "details": details or {},
        }

    async def _record_result(
        self, tx: Transaction, op: GatewayOperation, pi: PaymentIntent, answer: GatewayAnswer
    ) -> None:
        """The request's audit event, now that the gateway's answer is applied: a decline is a
        failure, with its codes."""
        asked = op.request.get(_AUDIT)
        if not isinstance(asked, dict):
            return  # not audited (audit_payment_events off when the request came in)
        details = {**asked["details"], "operation": op.id, "status": str(pi.status)}
        if op.refund_id:
            details["status"] = "failed" if isinstance(answer, Declined) else "succeeded"
        if isinstance(answer, Declined):
            details |= {"code": answer.code, "decline_code": answer.decline_code}
        resource_type, resource_id = asked["resource"]
        await tx.repo.add_audit_event(
            self.audit.event(
                AuditTag(asked["tag"]),
                actor=Actor(ActorType.API_KEY, asked["key_id"]),
                outcome=AuditOutcome.FAILURE
                if isinstance(answer, Declined)
                else AuditOutcome.SUCCESS,
                merchant_id=op.merchant_id,
                livemode=pi.livemode,
                origin=Origin(asked["ip"], asked["request_id"]),
                resource=(resource_type, resource_id),
                details={k: v for k, v in details.items() if v is not None},
            )
        )

    # --- recovery ------------------------------------------------------------------------------
    async def recover(self, limit: int = 100) -> int:
        """Finish operations left between the gateway call and phase 2 (a crash, a timeout).
        Returns how many were finished; the rest are retried on a later pass."""
        now = self.clock.now()
        async with self.uow.transaction() as tx:
            ops = await tx.repo.lease_stale_operations(
                now=now,
                older_than=now - self.recovery_grace,
                lease_until=now + self.recovery_lease,
                limit=limit,
            )
            await tx.commit()
        finished = 0
        for op in ops:
            try:
                await self._drive(op, None)
            except GatewayUnavailable:
                continue
            except StrongroomError:
                pass  # a decline is a finished operation too
            finished += 1
            log.info("recovered gateway operation", operation=op.id, kind=op.kind)
        return finished

    async def _claimed_replay(
        self,
        idem: IdempotentRequest,
        tx: Transaction,
        now: datetime,
        resource_id: str | None = None,
    ) -> bool:
        await idem.claim(tx, now, resource_id)
        return idem.replay is not None


def settled_outcome(pi: PaymentIntent) -> PaymentIntent | CardError:
    """The answer for a request whose gateway call someone else finished (the worker, or the
    request it was retrying): the card error the intent recorded, else the intent itself."""
    error = pi.last_payment_error
    if pi.status is PIStatus.REQUIRES_PAYMENT_METHOD and error is not None:
        return CardError(
            error["message"],
            code=error["code"],
            decline_code=error["decline_code"],
            payment_intent_id=pi.id,
        )
    return pi


def _account(op: GatewayOperation) -> str | None:
    account = op.request.get("account")
    return account if isinstance(account, str) else None


def _resource(pi: PaymentIntent) -> Resource:
    return Resource("payment_intent", pi.id, pi.merchant_id, pi.amount, pi.currency)
