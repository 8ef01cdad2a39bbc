"""Turn one benchmark run's raw outputs into the table the issue asks for.

    python bench/report.py RESULTS_DIR

Reads, from RESULTS_DIR (written by bench/run.sh): wrk-key.txt and wrk-nokey.txt (wrk's output,
with the BENCH_RESULT line bench/result.lua prints), the alternating slices' wrk-*-N.txt,
wrk-webhooks.txt and pgbench-insert.txt (webhook ingest and its baseline), pgbench.txt,
cpu-*.json (bench/cpustat.py) and meta.txt (key=value). Prints the table, writes
summary.json beside the inputs.

Exit status: 2 when a measured run had errors (non-200 responses, socket errors) or an output
could not be parsed, since its numbers then mean nothing; 1 when BENCH_STRICT=1 and a target
was missed; 0 otherwise.
"""

from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TARGET_RATIO = 0.25  # payments/s (with key) / pgbench tps
TARGET_P99_MS = 50.0
TARGET_KEY_RATIO = 0.9  # payments/s with key / without
TARGET_AUDIT_RATIO = 0.85  # payments/s with payment audit events / without
TARGET_LAG_S = 2.0  # the audit sequencer's lag behind committed events
TARGET_REPORTS_RATIO = 0.85  # payments/s while a reporting dashboard loads / without
TARGET_AUTHZ_RATIO = 0.9  # payments/s with the policy and rate limits (Redis) / without
TARGET_WEBHOOKS_RATIO = 0.3  # inbound webhooks ingested/s / pgbench one-row inserts tps

RUNS = (("key", "with Idempotency-Key"), ("nokey", "without key"))
CPU_GROUPS = ("server", "postgres", "postgres_other", "wrk", "pgbench", "py-spy")
BUSY_ELSEWHERE = 0.25  # cores of other work on the machine that make a run suspect


class ParseError(Exception):
    pass


def alternating(
    results: Path, off: str, on: str, problems: list[str]
) -> tuple[dict[str, list[WrkRun]], dict[str, float], float | None]:
    """Slices run alternately with something off and on: each side's runs, its payments/s
    over all its runs, and the on/off ratio (None when either side did not run)."""
    slices = {
        side: [parse_wrk(path) for path in sorted(results.glob(f"wrk-{side}-*.txt"))]
        for side in (off, on)
    }
    for side_runs in slices.values():
        for run in side_runs:
            if run.errors:
                problems.append(f"wrk {run.label}: {run.errors} errors")
    rates = {
        side: sum(r.ok for r in side_runs) / sum(r.seconds for r in side_runs)
        for side, side_runs in slices.items()
        if side_runs
    }
    ratio = rates[on] / rates[off] if len(rates) == 2 else None
    return slices, rates, ratio


@dataclass
class WrkRun:
    label: str
    seconds: float
    requests: int
    ok: int
    non_200: int
    statuses: dict[str, int]
    socket_errors: dict[str, int]
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float

    @property
    def payments_per_s(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def errors(self) -> int:
        return self.non_200 + sum(self.socket_errors.values())


def parse_wrk(path: Path) -> WrkRun:
    if not path.exists():
        raise ParseError(f"{path.name} is missing")
    for line in path.read_text().splitlines():
        if line.startswith("BENCH_RESULT "):
            data = json.loads(line.removeprefix("BENCH_RESULT "))
            break
    else:
        raise ParseError(f"{path.name} has no BENCH_RESULT line (did wrk run the Lua script?)")
    lat = data["latency_us"]
    return WrkRun(
        label=data["label"],
        seconds=data["duration_us"] / 1e6,
        requests=data["requests"],
        ok=data["ok"],
        non_200=data["non_200"],
        statuses=data["statuses"],
        socket_errors=data["socket_errors"],
        p50_ms=lat["p50"] / 1000,
        p90_ms=lat["p90"] / 1000,
        p99_ms=lat["p99"] / 1000,
        mean_ms=lat["mean"] / 1000,
        max_ms=lat["max"] / 1000,
    )


_TPS = re.compile(
    r"^tps = ([0-9.]+) \((?:without initial connection time|excluding connections establishing)\)",
    re.MULTILINE,
)
_PG_LATENCY = re.compile(r"^latency average = ([0-9.]+) ms", re.MULTILINE)
_PG_FAILED = re.compile(r"^number of failed transactions: (\d+)", re.MULTILINE)


def parse_pgbench(path: Path) -> dict[str, float]:
    if not path.exists():
        raise ParseError(f"{path.name} is missing")
    text = path.read_text()
    tps = _TPS.search(text)
    if tps is None:
        raise ParseError(f"{path.name}: no 'tps = … (without initial connection time)' line")
    out = {"tps": float(tps.group(1))}
    if m := _PG_LATENCY.search(text):
        out["latency_avg_ms"] = float(m.group(1))
    if m := _PG_FAILED.search(text):
        out["failed"] = float(m.group(1))
    return out


def parse_cpu(path: Path) -> dict[str, float] | None:
    """Cores used by each group over the window (1.0 = one core busy the whole time)."""
    if not path.exists():
        return None
    data = json.loads(path.read_text())
    before, after = data["before"], data["after"]
    seconds = after["time"] - before["time"]
    if seconds <= 0:
        return None
    hz = after["clk_tck"]
    cores: dict[str, float] = dict.fromkeys(CPU_GROUPS, 0.0)
    # Per process, so a backend that connected mid-window counts from zero, in the group the
    # later snapshot put it in. A process that exited within the window is lost.
    for pid, (group, ticks) in after["procs"].items():
        _, earlier = before["procs"].get(pid, (group, 0))
        cores[group] = cores.get(group, 0.0) + (ticks - earlier) / hz / seconds
    total = after["machine_total"] - before["machine_total"]
    idle = after["machine_idle"] - before["machine_idle"]
    ncpu = after["ncpu"]
    cores["machine_busy"] = (total - idle) / total * ncpu if total else 0.0
    cores["unaccounted"] = max(cores["machine_busy"] - sum(cores[g] for g in CPU_GROUPS), 0.0)
    cores["ncpu"] = ncpu
    return cores


def parse_meta(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    return {k.strip(): v.strip() for k, v in pairs}


def _webhooks(results: Path, problems: list[str]) -> tuple[WrkRun | None, float | None]:
    """The webhook-ingest run and its pgbench baseline's tps (None where either is missing)."""
    path, baseline = results / "wrk-webhooks.txt", results / "pgbench-insert.txt"
    if not path.exists() or not baseline.exists():
        problems.append("the webhook-ingest run or its pgbench baseline is missing")
        return None, None
    try:
        run, pgbench = parse_wrk(path), parse_pgbench(baseline)
    except (ParseError, ValueError, KeyError) as exc:
        problems.append(f"webhook ingest: {exc}")
        return None, None
    if run.errors:
        problems.append(f"wrk webhooks: {run.errors} errors (by status: {run.statuses})")
    if pgbench.get("failed"):
        problems.append(f"pgbench inserts: {int(pgbench['failed'])} failed transactions")
    return run, pgbench["tps"]


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__)
        return 2
    results = Path(sys.argv[1])
    meta = parse_meta(results / "meta.txt")
    problems: list[str] = []
    runs: dict[str, WrkRun] = {}
    for name, _ in RUNS:
        try:
            runs[name] = parse_wrk(results / f"wrk-{name}.txt")
        except (ParseError, ValueError, KeyError) as exc:
            problems.append(f"wrk {name}: {exc}")
    try:
        pgbench: dict[str, float] | None = parse_pgbench(results / "pgbench.txt")
    except ParseError as exc:
        pgbench = None
        problems.append(f"pgbench: {exc}")

    for name, run in runs.items():
        if run.non_200:
            problems.append(
                f"wrk {name}: {run.non_200} of {run.requests} responses were not 200 "
                f"(by status: {run.statuses})"
            )
        if sum(run.socket_errors.values()):
            problems.append(f"wrk {name}: socket errors {run.socket_errors}")
        if run.ok == 0:
            problems.append(f"wrk {name}: no successful payment at all")
    if pgbench and pgbench.get("failed"):
        problems.append(f"pgbench: {int(pgbench['failed'])} failed transactions")

    width = 72
    print()
    print("=" * width)
    print("Strongroom create-and-confirm benchmark (PostgreSQL)".center(width))
    print("=" * width)
    if meta:
        print(
            f"server workers {meta.get('workers', '?')}, {meta.get('connections', '?')} "
            f"connections / {meta.get('threads', '?')} wrk threads, "
            f"{meta.get('seconds', '?')} s per run, pgbench scale {meta.get('scale', '?')}"
        )
        print(f"{meta.get('postgres', '')}")
        print(f"git {meta.get('git', '?')}  results in {results}")
    print("-" * width)
    header = f"{'':<28}" + "".join(f"{title:>22}" for _, title in RUNS)
    print(header)

    def row(label: str, fmt: str, get: Any) -> None:
        cells = "".join(
            f"{(fmt.format(get(runs[n])) if n in runs else 'n/a'):>22}" for n, _ in RUNS
        )
        print(f"{label:<28}{cells}")

    row("payments/s (200 OK)", "{:.1f}", lambda r: r.payments_per_s)
    row("requests/s (any status)", "{:.1f}", lambda r: r.requests_per_s)
    row("latency p50 (ms)", "{:.2f}", lambda r: r.p50_ms)
    row("latency p90 (ms)", "{:.2f}", lambda r: r.p90_ms)
    row("latency p99 (ms)", "{:.2f}", lambda r: r.p99_ms)
    row("latency max (ms)", "{:.2f}", lambda r: r.max_ms)
    row("non-200 responses", "{}", lambda r: r.non_200)
    row("socket errors", "{}", lambda r: sum(r.socket_errors.values()))

    cpu = {name: parse_cpu(results / f"cpu-{name}.json") for name in (*dict(RUNS), "pgbench")}
    warnings: list[str] = []
    if any(cpu.values()):
        ncpu = next(c for c in cpu.values() if c)["ncpu"]
        print("-" * width)
        print(f"CPU in cores over each run's steady state (machine: {ncpu:.0f} cores)")
        print(
            f"  {'':<22}{'server':>8}{'our pg':>8}{'wrk':>6}{'pgbench':>8}"
            f"{'other pg':>9}{'other':>7}{'busy':>6}"
        )
        for name, title in (*RUNS, ("pgbench", "pgbench")):
            c = cpu[name]
            if c is None:
                continue
            print(
                f"  {title:<22}{c['server']:>8.2f}{c['postgres']:>8.2f}{c['wrk']:>6.2f}"
                f"{c['pgbench']:>8.2f}{c['postgres_other']:>9.2f}{c['unaccounted']:>7.2f}"
                f"{c['machine_busy']:>6.2f}"
            )
            elsewhere = c["postgres_other"] + c["unaccounted"]
            if elsewhere > BUSY_ELSEWHERE:
                warnings.append(
                    f"during '{title}' other work used {elsewhere:.2f} cores of {ncpu:.0f} "
                    "(other databases' backends and other processes): its numbers are low"
                )
        print("  server = uvicorn workers (Python); our pg = backends of the bench databases")
        print("  and PostgreSQL's background processes; other = anything else on the machine")

    print("-" * width)
    if pgbench:
        extra = (
            f" (avg latency {pgbench['latency_avg_ms']:.2f} ms)"
            if "latency_avg_ms" in pgbench
            else ""
        )
        print(
            f"pgbench TPC-B tps, {meta.get('connections', '16')} clients: "
            f"{pgbench['tps']:.1f}{extra}"
        )
    else:
        print("pgbench TPC-B tps: n/a")

    targets: list[tuple[str, float | None, str, bool | None]] = []
    key, nokey = runs.get("key"), runs.get("nokey")
    ratio = key.payments_per_s / pgbench["tps"] if key and pgbench and pgbench["tps"] else None
    targets.append(
        (
            "payments/s (with key) / pgbench tps",
            ratio,
            f">= {TARGET_RATIO}",
            None if ratio is None else ratio >= TARGET_RATIO,
        )
    )
    for name, title in RUNS[:2]:
        run = runs.get(name)
        targets.append(
            (
                f"p99 latency {title} (ms)",
                run.p99_ms if run else None,
                f"<= {TARGET_P99_MS:g}",
                None if run is None else run.p99_ms <= TARGET_P99_MS,
            )
        )
    key_ratio = key.payments_per_s / nokey.payments_per_s if key and nokey and nokey.ok else None
    targets.append(
        (
            "payments/s with key / without",
            key_ratio,
            f">= {TARGET_KEY_RATIO}",
            None if key_ratio is None else key_ratio >= TARGET_KEY_RATIO,
        )
    )

    slices, rates, audit_ratio = alternating(results, "noaudit", "audit", problems)
    report_slices, report_rates, reports_ratio = alternating(
        results, "noreports", "reports", problems
    )
    targets.append(
        (
            "payments/s while reports run / without",
            reports_ratio,
            f">= {TARGET_REPORTS_RATIO}",
            None if reports_ratio is None else reports_ratio >= TARGET_REPORTS_RATIO,
        )
    )
    targets.append(
        (
            "payments/s audit events on / off",
            audit_ratio,
            f">= {TARGET_AUDIT_RATIO}",
            None if audit_ratio is None else audit_ratio >= TARGET_AUDIT_RATIO,
        )
    )
    authz_slices, authz_rates, authz_ratio = alternating(results, "noauthz", "authz", problems)
    targets.append(
        (
            "payments/s policy+rate limits on / off",
            authz_ratio,
            f">= {TARGET_AUTHZ_RATIO}",
            None if authz_ratio is None else authz_ratio >= TARGET_AUTHZ_RATIO,
        )
    )
    policy_path = results / "policy.json"
    policy = json.loads(policy_path.read_text()) if policy_path.exists() else None
    webhooks, insert_tps = _webhooks(results, problems)
    webhooks_ratio = webhooks.payments_per_s / insert_tps if webhooks and insert_tps else None
    targets.append(
        (
            "webhooks ingested/s / pgbench inserts",
            webhooks_ratio,
            f">= {TARGET_WEBHOOKS_RATIO}",
            None if webhooks_ratio is None else webhooks_ratio >= TARGET_WEBHOOKS_RATIO,
        )
    )
    lag_path = results / "audit-lag.json"
    lag = json.loads(lag_path.read_text()) if lag_path.exists() else None
    if lag is None:
        problems.append("audit-lag.json is missing")
    targets.append(
        (
            "audit sequencer lag, max (s)",
            lag["max_s"] if lag else None,
            f"< {TARGET_LAG_S:g}",
            None if lag is None else lag["max_s"] < TARGET_LAG_S,
        )
    )
    verify_path = results / "audit-verify.json"
    verify = json.loads(verify_path.read_text()) if verify_path.exists() else None
    print("-" * width)
    if audit_ratio is not None:
        pairs = zip(slices["noaudit"], slices["audit"], strict=False)
        shown = ", ".join(f"{a.payments_per_s:.0f}/{b.payments_per_s:.0f}" for a, b in pairs)
        print(
            f"audit events off/on, alternating {len(slices['audit'])} rounds: "
            f"{rates['noaudit']:.1f} / {rates['audit']:.1f} payments/s (rounds: {shown})"
        )
    if reports_ratio is not None:
        pairs = zip(report_slices["noreports"], report_slices["reports"], strict=False)
        shown = ", ".join(f"{a.payments_per_s:.0f}/{b.payments_per_s:.0f}" for a, b in pairs)
        print(
            f"reports off/on, alternating {len(report_slices['reports'])} rounds: "
            f"{report_rates['noreports']:.1f} / {report_rates['reports']:.1f} payments/s "
            f"(rounds: {shown})"
        )
    if authz_ratio is not None:
        longrun = alternating(results, "noauthz", "longrun", problems)[0]["longrun"]
        rounds = zip(authz_slices["noauthz"], authz_slices["authz"], longrun, strict=False)
        shown = ", ".join(
            f"{a.payments_per_s:.0f}/{b.payments_per_s:.0f}/{c.payments_per_s:.0f}"
            for a, b, c in rounds
        )
        seconds = sum(r.seconds for r in longrun)
        longrun_rate = sum(r.ok for r in longrun) / seconds if seconds else float("nan")
        print(
            f"policy+rate limits off/on (fresh servers)/on (serving since the start), "
            f"alternating {len(authz_slices['authz'])} rounds: {authz_rates['noauthz']:.1f} / "
            f"{authz_rates['authz']:.1f} / {longrun_rate:.1f} payments/s (rounds: {shown})"
        )
    if policy:
        print(
            f"policy evaluation: {policy['decisions']:,} decisions, p50 {policy['p50_us']:.0f} us, "
            f"p99 {policy['p99_us']:.0f} us per decision"
        )
    if webhooks and insert_tps:
        stored = results / "webhooks-stored.txt"
        print(
            f"inbound Stripe webhooks (verify + store + dedupe, 10% repeats): "
            f"{webhooks.payments_per_s:.1f}/s, p99 {webhooks.p99_ms:.1f} ms; pgbench one-row "
            f"inserts: {insert_tps:.1f} tps"
            + (f"; rows stored: {stored.read_text().strip()}" if stored.exists() else "")
        )
    if lag:
        print(
            f"audit sequencer lag during 'with Idempotency-Key': max {lag['max_s']:.2f} s, "
            f"p99 {lag['p99_s']:.2f} s ({lag['samples']} samples)"
        )
    if verify:
        print(
            f"audit verify: {verify['entries']:,} entries, {verify['tree_heads']:,} tree heads "
            f"in {verify['seconds']:.1f} s = {verify['entries_per_second']:,.0f} entries/s "
            f"({'ok' if verify['ok'] else 'FAILED: ' + str(verify['problem'])})"
        )
        if not verify["ok"]:
            problems.append(f"audit verify failed on the generated log: {verify['problem']}")
    else:
        print("audit verify: n/a")

    print("-" * width)
    print(f"{'target':<40}{'value':>10}{'goal':>12}{'':>4}result")
    for label, value, goal, passed in targets:
        shown = "n/a" if value is None else f"{value:.3f}" if value < 10 else f"{value:.1f}"
        result = "n/a" if passed is None else verdict(passed)
        if problems:
            result = "INVALID (errors)"
        print(f"{label:<40}{shown:>10}{goal:>12}{'':>4}{result}")
    print("=" * width)

    for warning in warnings:
        print(f"WARNING: {warning}")
    if problems:
        bar = "!" * width
        print(bar)
        print("!!! THIS BENCHMARK RUN HAD ERRORS; ITS NUMBERS ARE NOT VALID:")
        for problem in problems:
            print(f"!!!   {problem}")
        print(bar)

    summary = {
        "meta": meta,
        "runs": {
            name: {**vars(run), "payments_per_s": run.payments_per_s} for name, run in runs.items()
        },
        "pgbench": pgbench,
        "audit_rates": rates,
        "reports_rates": report_rates,
        "authz_rates": authz_rates,
        "policy": policy,
        "webhooks": vars(webhooks) if webhooks else None,
        "pgbench_insert_tps": insert_tps,
        "audit_lag": {k: v for k, v in (lag or {}).items() if k != "values"},
        "audit_verify": verify,
        "cpu_cores": cpu,
        "targets": [
            {"target": label, "value": value, "goal": goal, "pass": passed}
            for label, value, goal, passed in targets
        ],
        "problems": problems,
        "warnings": warnings,
    }
    (results / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")

    if problems:
        return 2
    missed = any(passed is False for *_, passed in targets)
    if missed and os.environ.get("BENCH_STRICT") == "1":
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
