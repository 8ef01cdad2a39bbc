"""Use cases: command handlers, the unit of work, idempotency, recovery."""
