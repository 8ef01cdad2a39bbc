"""Signed Stripe webhook deliveries for bench/webhooks.lua, one request per line.

    python bench/webhook_requests.py ACCOUNT_ID WEBHOOK_SECRET COUNT OUT [DUPLICATE_SHARE]

Each line is `<path>\\t<Stripe-Signature>\\t<body>`: a `payment_intent.succeeded` event for
POST /v1/webhooks/stripe/ACCOUNT_ID, signed now with the account's secret by the Stripe stand-in's
signer (tests/standins/stripe_server.py), so wrk replays them inside Stripe's 300 s tolerance.
DUPLICATE_SHARE (0.1) of the lines repeat an earlier line's event, as a gateway's retries do,
so the dedupe path is part of what is measured. Event and payment ids are alphanumeric: no run
of digits in them looks like a card number to the leak scan.
"""

from __future__ import annotations

import json
import random
import secrets
import string
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.standins.stripe_server import sign_webhook

_ALPHABET = string.ascii_letters


def main() -> int:
    if len(sys.argv) not in (5, 6):
        print(__doc__, file=sys.stderr)
        return 2
    account, secret, count, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])
    duplicate_share = float(sys.argv[5]) if len(sys.argv) == 6 else 0.1
    rng = random.Random(7)
    run = "".join(secrets.choice(_ALPHABET) for _ in range(8))
    now = int(time.time())
    path = f"/v1/webhooks/stripe/{account}"
    lines: list[str] = []
    for n in range(count):
        if lines and rng.random() < duplicate_share:
            lines.append(lines[rng.randrange(len(lines))])
            continue
        suffix = run + _letters(n)
        body = json.dumps(
            {
                "id": f"evt_{suffix}",
                "object": "event",
                "type": "payment_intent.succeeded",
                "created": now,
                "livemode": False,
                "data": {
                    "object": {
                        "id": f"pi_{suffix}",
                        "object": "payment_intent",
                        "amount": 2000,
                        "currency": "usd",
                        "status": "succeeded",
                    }
                },
            },
            separators=(",", ":"),
        )
        lines.append(f"{path}\t{sign_webhook(body.encode(), secret, timestamp=now)}\t{body}")
    out.write_text("\n".join(lines) + "\n")
    return 0


def _letters(n: int) -> str:
    """n in base 52 letters: unique per line and digit-free."""
    digits = []
    while True:
        n, r = divmod(n, len(_ALPHABET))
        digits.append(_ALPHABET[r])
        if n == 0:
            return "".join(reversed(digits))


if __name__ == "__main__":
    sys.exit(main())
