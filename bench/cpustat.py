"""CPU time by who spent it, over a load run, so the reporter can tell Python from PostgreSQL.

    python bench/cpustat.py SERVER_PGID SECONDS OUT.json [DATABASE ...]

Started alongside a load generator that runs for SECONDS: it snapshots one second in and one
second before the end (steady state, and while the load generator is still alive so its own
ticks count), then writes both snapshots.

Reads /proc only (Linux). Groups: `server` (every process in the server's process group: the
uvicorn supervisor and its workers), `postgres` (every process named postgres, so any other
load on the same cluster shows up here too), `wrk`, `pgbench`, and the machine-wide busy and
total ticks from /proc/stat. bench/report.py turns two snapshots into cores used.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path


def _proc_stat(pid: str) -> tuple[str, int, int] | None:
    """(comm, process group, utime + stime in ticks), or None if the process is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # comm is in parentheses and may hold spaces; the fields after it are space-separated.
    comm = raw[raw.index("(") + 1 : raw.rindex(")")]
    fields = raw[raw.rindex(")") + 2 :].split()
    # After comm: state(0) ppid(1) pgrp(2) ... utime(11) stime(12).
    return comm, int(fields[2]), int(fields[11]) + int(fields[12])


def _our_backends(databases: list[str]) -> set[str]:
    """Pids of the backends on `databases` and of the background processes (PG* env vars)."""
    if not databases:
        return set()
    query = "SELECT pid, coalesce(datname, ''), backend_type FROM pg_stat_activity"
    try:
        out = subprocess.run(
            ["psql", "-X", "-At", "-F", "\t", "-d", "postgres", "-c", query],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return set()
    pids = set()
    for line in out.splitlines():
        pid, datname, backend_type = [*line.split("\t"), "", ""][:3]
        if datname in databases or backend_type != "client backend":
            pids.add(pid)
    return pids


def snapshot(server_pgid: int, databases: list[str]) -> dict[str, object]:
    """Every process of interest as pid -> [group, ticks], plus the machine's ticks."""
    ours = _our_backends(databases)
    procs: dict[str, tuple[str, int]] = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        info = _proc_stat(pid)
        if info is None:
            continue
        comm, pgrp, ticks = info
        if server_pgid > 0 and pgrp == server_pgid:
            procs[pid] = ("server", ticks)
        elif comm.startswith("postgres"):
            other = bool(ours) and pid not in ours
            procs[pid] = ("postgres_other" if other else "postgres", ticks)
        elif comm in ("wrk", "pgbench", "py-spy"):
            procs[pid] = (comm, ticks)
    cpu = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    values = [int(v) for v in cpu]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    return {
        "time": time.monotonic(),
        "clk_tck": os.sysconf("SC_CLK_TCK"),
        "ncpu": os.cpu_count(),
        "procs": procs,
        "machine_total": sum(values[:8]),
        "machine_idle": idle,
    }


def main() -> None:
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    pgid, seconds, out = int(sys.argv[1]), float(sys.argv[2]), Path(sys.argv[3])
    databases = sys.argv[4:]
    margin = 1.0 if seconds > 4 else seconds / 4
    time.sleep(margin)
    before = snapshot(pgid, databases)
    time.sleep(max(seconds - 2 * margin, 0.1))
    after = snapshot(pgid, databases)
    out.write_text(json.dumps({"before": before, "after": after}))


if __name__ == "__main__":
    main()
