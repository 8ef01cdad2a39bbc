"""How far the audit sequencer trails the events being written, sampled during a load run.

    python bench/audit_lag.py DATABASE SECONDS OUT.json

Every 250 ms it asks PostgreSQL for the age of the oldest committed audit event that is not yet
in the tree (0 when all are): the time an event waits before a signed tree head covers it.
Writes the samples and their max and p99 (in seconds) to OUT.json. Connection settings come
from the PG* environment variables that bench/run.sh exports.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path

import asyncpg

# Events waiting for the sequencer sit just above the newest integrated one, so each sample
# looks only at the last few thousand sequence numbers: an index range, not a table scan, so the
# sampler itself takes almost nothing from the load it measures.
LAG_SQL = """
SELECT COALESCE(EXTRACT(EPOCH FROM clock_timestamp() - MIN(e.occurred_at)), 0)
FROM audit_events e
WHERE e.seq > (SELECT COALESCE(MAX(event_seq), 0) - 5000 FROM audit_leaves)
  AND NOT EXISTS (SELECT 1 FROM audit_leaves l WHERE l.event_seq = e.seq)
"""


async def sample(database: str, seconds: float) -> list[float]:
    conn = await asyncpg.connect(
        host=os.environ.get("PGHOST", "127.0.0.1"),
        port=int(os.environ.get("PGPORT", "5432")),
        user=os.environ.get("PGUSER", "postgres"),
        database=database,
    )
    samples: list[float] = []
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            samples.append(float(await conn.fetchval(LAG_SQL)))
            await asyncio.sleep(0.25)
    finally:
        await conn.close()
    return samples


def main() -> None:
    database, seconds, out = sys.argv[1], float(sys.argv[2]), Path(sys.argv[3])
    samples = asyncio.run(sample(database, seconds))
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] if ordered else 0.0
    summary = {"samples": len(samples), "max_s": max(samples, default=0.0), "p99_s": p99}
    out.write_text(json.dumps({**summary, "values": samples}))
    print(f"audit sequencer lag: max {summary['max_s']:.2f} s, p99 {p99:.2f} s")


if __name__ == "__main__":
    main()
