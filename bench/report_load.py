"""A reporting dashboard's load on a running server, for the "payments while reports run" ratio.

    python bench/report_load.py URL SECRET_KEY SECONDS OUT.json

Asks for every standard report in turn, BENCH_REPORT_RATE requests a second (default 4: a
dashboard of four panels refreshed each second), for SECONDS; writes how many it made, how many
failed and their latency to OUT.json. Run beside wrk by bench/run.sh.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path

import httpx

REPORTS = ("volume", "authorization_rate", "decline_reasons", "refund_rate")


async def main(url: str, secret_key: str, seconds: float) -> dict[str, object]:
    rate = float(os.environ.get("BENCH_REPORT_RATE", "4"))
    latencies: list[float] = []
    failures: dict[str, int] = {}
    async with httpx.AsyncClient(
        base_url=url, headers={"Authorization": f"Bearer {secret_key}"}, timeout=30
    ) as http:
        started = time.perf_counter()
        sent = 0
        while (now := time.perf_counter()) < started + seconds:
            due = started + sent / rate
            if due > now:
                await asyncio.sleep(due - now)  # pacing the load, not waiting for a result
            name = REPORTS[sent % len(REPORTS)]
            sent += 1
            t0 = time.perf_counter()
            response = await http.get(f"/v1/reports/{name}")
            latencies.append((time.perf_counter() - t0) * 1000)
            if response.status_code != 200:
                key = f"{name}:{response.status_code}"
                failures[key] = failures.get(key, 0) + 1
    summary = {
        "requests": len(latencies),
        "failures": failures,
        "p50_ms": statistics.median(latencies) if latencies else None,
        "max_ms": max(latencies) if latencies else None,
    }
    print(
        f"    reports: {summary['requests']} requests, p50 {summary['p50_ms']:.1f} ms, "
        f"failures {failures or 'none'}"
    )
    return summary


if __name__ == "__main__":
    result = asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3])))
    Path(sys.argv[4]).write_text(json.dumps(result))
