"""Policy evaluation time: the shipped Rego bundle (regopy, in-process), one decision at a time.

    python bench/policy.py OUT.json

Times BENCH_POLICY_DECISIONS (default 20,000) decisions over a mix of the inputs the service
asks (a key creating a payment, a restricted key refused, another merchant's object, an
operator's large refund needing a second factor), after a warm-up; prints p50 and p99 in
microseconds and writes them to OUT.json. The same work the Authorizer does per decision:
set the input, run the bundle's plan, read the answer.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path

from strongroom.adapters.policy import RegoPolicy

KEY = {"type": "api_key", "merchant": "acct_a"}  # what the Authorizer sends for a full key
INPUTS = [
    {
        "principal": KEY,
        "action": "payment_intents.create",
        "resource": {"type": "payment_intent", "merchant": "acct_a", "amount": 2000},
    },
    {
        "principal": KEY | {"scopes": ["payments:read"]},
        "action": "refunds.create",
        "resource": {"type": "refund", "merchant": "acct_a", "amount": 500},
        "context": {},
    },
    {
        "principal": KEY,
        "action": "payment_intents.read",
        "resource": {"type": "payment_intent", "id": "pi_1", "merchant": "acct_b"},
        "context": {},
    },
    {
        "principal": {
            "type": "operator",
            "merchant": "acct_a",
            "role": "finance",
            "mfa_age_seconds": 900.0,
        },
        "action": "refunds.create",
        "resource": {"type": "refund", "merchant": "acct_a", "amount": 50_000},
        "context": {"refund_step_up_amount": 10_000},
    },
]


def main(out: Path) -> None:
    decisions = int(os.environ.get("BENCH_POLICY_DECISIONS", "20000"))
    policy = RegoPolicy()
    for i in range(1000):  # warm-up
        policy.decide(INPUTS[i % len(INPUTS)])
    timings = []
    for i in range(decisions):
        started = time.perf_counter_ns()
        policy.decide(INPUTS[i % len(INPUTS)])
        timings.append((time.perf_counter_ns() - started) / 1000)
    timings.sort()
    result = {
        "decisions": decisions,
        "p50_us": statistics.median(timings),
        "p99_us": timings[int(len(timings) * 0.99) - 1],
        "mean_us": statistics.fmean(timings),
        "bundle": policy.bundle_hash,
    }
    print(
        f"    policy: {decisions:,} decisions, p50 {result['p50_us']:.0f} us, "
        f"p99 {result['p99_us']:.0f} us"
    )
    out.write_text(json.dumps(result))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
