"""The `strongroom` command. Every command takes --json for scripts."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any, TextIO, TypeVar

import click
import structlog

from strongroom.adapters.reporting.port import ReportName
from strongroom.bootstrap import Container, bootstrap
from strongroom.domain.errors import StrongroomError
from strongroom.entrypoints import logs
from strongroom.service_layer.commands import Caller
from strongroom.service_layer.gateway_accounts import GatewayAccount
from strongroom.service_layer.keyring import DEFAULT_BATCH_SIZE, KeyRotation
from strongroom.service_layer.merchants import IssuedKey, KeyKind
from strongroom.service_layer.operators import Role
from strongroom.service_layer.reporting import BACKFILL_BATCH, to_csv
from strongroom.service_layer.reporting import COLUMNS as REPORT_COLUMNS
from strongroom.settings import Settings

T = TypeVar("T")
DEMO_MERCHANT_NAME = "Demo merchant"


def _run(work: Callable[[Container], Awaitable[T]]) -> T:
    async def main() -> T:
        container = bootstrap()
        try:
            return await work(container)
        finally:
            await container.aclose()

    try:
        return asyncio.run(main())
    except StrongroomError as exc:
        raise click.ClickException(exc.message) from exc


def _emit(as_json: bool, data: Any, text: str) -> None:
    def default(value: object) -> str:
        return value.isoformat() if isinstance(value, datetime) else str(value)

    click.echo(json.dumps(data, indent=2, default=default) if as_json else text)


def _key_data(key: IssuedKey) -> dict[str, Any]:
    return {"id": key.id, "kind": key.kind, "livemode": key.livemode, "secret": key.secret}


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
merchant_option = click.option("--merchant", "merchant_id", required=True)


@click.group()
def main() -> None:
    """Strongroom: a self-hosted, secure-by-design payments backend."""
    logs.configure(Settings().log_level)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--workers", default=1, show_default=True, type=int, help="Server processes.")
@click.option("--no-worker", is_flag=True, help="Do not run the worker loops in-process.")
def serve(host: str, port: int, workers: int, no_worker: bool) -> None:
    """Serve the API (and, in embedded mode, the worker loops)."""
    import uvicorn

    if no_worker:
        os.environ["STRONGROOM_SERVE_WORKER"] = "false"
    uvicorn.run(
        "strongroom.entrypoints.api.app:app_from_environment",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        access_log=False,
        log_level="warning",
    )


@main.command()
def worker() -> None:
    """Run the background loops (outbox relay, event consumers, webhook deliveries, recovery,
    audit sequencer, pruning) until SIGTERM or SIGINT; any number may run side by side."""
    from strongroom.entrypoints.worker import run_forever

    async def work(container: Container) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        structlog.get_logger(__name__).info("worker started", pid=os.getpid())
        await run_forever(container, stop)
        structlog.get_logger(__name__).info("worker stopped", pid=os.getpid())

    _run(work)


@main.group()
def db() -> None:
    """Database schema."""


@db.command()
@json_option
def upgrade(as_json: bool) -> None:
    """Migrate the database to the newest schema."""
    from strongroom.adapters.db.migrate import upgrade as run_upgrade

    url = Settings().database_url
    run_upgrade(url)
    _emit(as_json, {"upgraded": True}, "Database is up to date.")


@main.group()
def merchants() -> None:
    """Merchants (tenants)."""


async def _new_merchant(
    container: Container, name: str, legal_name: str | None, country: str
) -> dict[str, Any]:
    merchant = await container.merchants.create_merchant(
        name, legal_name=legal_name, country=country
    )
    secret = await container.merchants.create_key(merchant.id, KeyKind.SECRET, livemode=False)
    publishable = await container.merchants.create_key(
        merchant.id, KeyKind.PUBLISHABLE, livemode=False
    )
    return {
        "id": merchant.id,
        "name": merchant.name,
        "secret_key": secret.secret,
        "publishable_key": publishable.secret,
    }


def _merchant_text(data: dict[str, Any]) -> str:
    return (
        f"Merchant {data['id']} ({data['name']})\n"
        f"  secret key:      {data['secret_key']}\n"
        f"  publishable key: {data['publishable_key']}\n"
        "Keys are shown only now; store the secret key somewhere safe."
    )


@merchants.command("create")
@click.option("--name", required=True)
@click.option("--legal-name", default=None, help="Defaults to --name.")
@click.option("--country", default="US", show_default=True, help="ISO 3166-1 alpha-2.")
@json_option
def merchants_create(name: str, legal_name: str | None, country: str, as_json: bool) -> None:
    """Create a merchant with a test secret key and a test publishable key."""
    data = _run(lambda c: _new_merchant(c, name, legal_name, country))
    _emit(as_json, data, _merchant_text(data))


@merchants.command("demo")
@json_option
def merchants_demo(as_json: bool) -> None:
    """Create the demo merchant on first run and print its keys (later runs say it exists)."""

    async def work(container: Container) -> dict[str, Any]:
        existing = await container.merchants.find_by_name(DEMO_MERCHANT_NAME)
        if existing is not None:
            return {"id": existing.id, "name": existing.name, "created": False}
        data = await _new_merchant(container, DEMO_MERCHANT_NAME, None, "US")
        return {**data, "created": True}

    data = _run(work)
    if data["created"]:
        text = _merchant_text(data)
    else:
        text = (
            f"Demo merchant {data['id']} exists; its keys were printed when it was made.\n"
            f"Make another: strongroom keys create --merchant {data['id']}"
        )
    _emit(as_json, data, text)


@merchants.command("rate-limits")
@click.argument("merchant_id")
@click.option("--reads", default=None, help="Per key, e.g. 100/second; 'default' to clear.")
@click.option("--writes", default=None, help="Per key, e.g. 50/second; 'default' to clear.")
@json_option
def merchants_rate_limits(
    merchant_id: str, reads: str | None, writes: str | None, as_json: bool
) -> None:
    """Set the merchant's own API rate limits (per key); the rest stay the installation's."""
    changes = {
        name: None if value == "default" else value
        for name, value in (("reads", reads), ("writes", writes))
        if value is not None
    }
    limits = _run(lambda c: c.merchants.set_rate_limits(merchant_id, changes))
    text = ", ".join(f"{k} {v}" for k, v in limits.items()) or "the defaults"
    _emit(as_json, {"merchant": merchant_id, "rate_limits": limits}, f"{merchant_id}: {text}")


@main.group()
def keys() -> None:
    """API keys, and the master keys that encrypt secrets at rest."""


@keys.command("create")
@click.option("--merchant", "merchant_id", required=True)
@click.option("--publishable", is_flag=True, help="A pk_ key instead of an sk_ key.")
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    help="Makes a restricted rk_ key with this scope (repeat it), e.g. payments:read.",
)
@click.option("--live", is_flag=True, help="A live-mode key instead of a test-mode key.")
@json_option
def keys_create(
    merchant_id: str, publishable: bool, scopes: tuple[str, ...], live: bool, as_json: bool
) -> None:
    """Create an API key; the secret is printed once and never stored."""
    if publishable and scopes:
        raise click.UsageError("A publishable key takes no scopes.")
    kind = KeyKind.PUBLISHABLE if publishable else KeyKind.RESTRICTED if scopes else KeyKind.SECRET
    key = _run(lambda c: c.merchants.create_key(merchant_id, kind, livemode=live, scopes=scopes))
    _emit(as_json, _key_data(key), f"{key.id}: {key.secret}")


@keys.command("revoke")
@click.argument("key_id")
@json_option
def keys_revoke(key_id: str, as_json: bool) -> None:
    """Revoke an API key at once."""
    _run(lambda c: c.merchants.revoke_key(key_id))
    _emit(as_json, {"id": key_id, "revoked": True}, f"Revoked {key_id}.")


def _key_rotation(container: Container, batch_size: int = DEFAULT_BATCH_SIZE) -> KeyRotation:
    return KeyRotation(
        container.uow,
        container.envelope,
        audit=container.audit,
        batch_size=batch_size,
        clock=container.clock,
    )


@keys.command("rotate")
@click.option(
    "--resume",
    is_flag=True,
    help="Finish an interrupted rotation: re-wrap what is not on the current version, "
    "without making another.",
)
@click.option(
    "--batch-size", default=DEFAULT_BATCH_SIZE, show_default=True, type=click.IntRange(min=1)
)
@json_option
def keys_rotate(resume: bool, batch_size: int, as_json: bool) -> None:
    """Make a new master key version and re-wrap every stored data key under it, online, in
    small batches. Older versions keep decrypting until `strongroom keys retire VERSION`."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn

    from strongroom.service_layer.keyring import RotationProgress

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        console=Console(stderr=True),
        disable=as_json,
    ) as bar:
        tasks: dict[str, TaskID] = {}

        def progress(step: RotationProgress) -> None:
            if step.column not in tasks:
                tasks[step.column] = bar.add_task(step.column, total=step.total)
            bar.update(tasks[step.column], completed=step.checked, total=step.total)

        try:
            summary = _run(
                lambda c: _key_rotation(c, batch_size).rotate(resume=resume, progress=progress)
            )
        except (click.ClickException, KeyboardInterrupt) as exc:
            why = exc.message if isinstance(exc, click.ClickException) else "Interrupted"
            raise click.ClickException(
                f"{why}\nBatches already re-wrapped are kept; "
                "`strongroom keys rotate --resume` finishes the rotation."
            ) from exc
    lines = [
        f"Key version {summary.version} is {'now ' if summary.created else ''}current: "
        f"re-wrapped {summary.rewrapped} stored value(s).",
        "Older versions still decrypt until `strongroom keys retire VERSION`.",
    ]
    if summary.changed_concurrently:
        lines.append(
            f"{summary.changed_concurrently} value(s) changed while being re-wrapped; "
            "run `strongroom keys rotate --resume`."
        )
    if summary.unreadable:
        lines.append(f"{len(summary.unreadable)} value(s) could not be opened and were left:")
        lines.extend(f"  {where}" for where in summary.unreadable)
    _emit(as_json, summary.as_dict(), "\n".join(lines))
    if summary.changed_concurrently or summary.unreadable:
        raise SystemExit(1)


@keys.command("retire")
@click.argument("version")
@json_option
def keys_retire(version: str, as_json: bool) -> None:
    """Destroy master key VERSION; refused while it is current, while any stored value uses it,
    and until the version that replaced it has been current for five minutes."""
    _run(lambda c: _key_rotation(c).retire(version))
    _emit(
        as_json,
        {"version": version, "retired": True},
        f"Retired key version {version}; nothing stored used it.",
    )


@keys.command("versions")
@json_option
def keys_versions(as_json: bool) -> None:
    """Master key versions and how many stored values each one wraps."""
    usage = _run(lambda c: _key_rotation(c).usage())
    lines = [f"{'VERSION':<8} {'STATUS':<9} {'VALUES':>7}  COLUMNS"]
    for entry in usage.versions:
        status = "current" if entry.current else "active" if entry.available else "MISSING"
        columns = ", ".join(f"{name}={count}" for name, count in sorted(entry.columns.items()))
        lines.append(f"{entry.version:<8} {status:<9} {entry.values:>7}  {columns}")
    if not usage.versions:
        lines = ["No master key versions yet; the first is made when a secret is first sealed."]
    for name, count in sorted(usage.malformed.items()):
        lines.append(f"{name}: {count} stored value(s) are not sealed values")
    _emit(as_json, usage.as_dict(), "\n".join(lines))


@main.group("bank")
def bank_group() -> None:
    """Bank accounts linked through the bank provider."""


@bank_group.command("rotate-tokens")
@click.option(
    "--not-since",
    default=24,
    show_default=True,
    type=click.IntRange(min=0),
    help="Rotate the items whose token was not rotated in this many hours: running it again "
    "after an interruption resumes where it stopped.",
)
@json_option
def bank_rotate_tokens(not_since: int, as_json: bool) -> None:
    """Rotate every bank item's access token at its provider and store the new one sealed."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    with Progress(
        TextColumn("bank items"),
        BarColumn(),
        MofNCompleteColumn(),
        console=Console(stderr=True),
        disable=as_json,
    ) as bar:
        task = bar.add_task("rotate", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        try:
            summary = _run(
                lambda c: c.bank_tokens.rotate(
                    not_since=timedelta(hours=not_since), progress=progress
                )
            )
        except KeyboardInterrupt as exc:
            raise click.ClickException(
                "Interrupted. Items already rotated are kept; run `strongroom bank "
                "rotate-tokens` again to finish."
            ) from exc
    lines = [f"Rotated {summary.rotated} bank item token(s) of {summary.total}."]
    if summary.failed:
        lines.append(f"{len(summary.failed)} item(s) were refused by the provider:")
        lines.extend(f"  {item}: {code}" for item, code in summary.failed.items())
    _emit(as_json, summary.as_dict(), "\n".join(lines))
    if summary.failed:
        raise SystemExit(1)


@main.group("sandbox")
def sandbox_group() -> None:
    """The sandbox gateway."""


@sandbox_group.command("charges")
@json_option
def sandbox_charges(as_json: bool) -> None:
    """List the charges the sandbox gateway has recorded."""
    charges = _run(lambda c: c.sandbox.list_charges())
    lines = [
        f"{ch['id']}  {ch['status']:<16} {ch['amount']:>10} {ch['currency']}  "
        f"{ch['payment_method']}"
        for ch in charges
    ]
    _emit(as_json, charges, "\n".join(lines) or "No charges.")


@main.group("operators")
def operators_group() -> None:
    """The people who run a merchant's account (there is no self sign-up)."""


@operators_group.command("create")
@merchant_option
@click.option("--email", required=True)
@click.option(
    "--role", type=click.Choice([r.value for r in Role]), default="owner", show_default=True
)
@json_option
def operators_create(merchant_id: str, email: str, role: str, as_json: bool) -> None:
    """Create an operator (a merchant's first owner). The password is asked for twice, hidden;
    from a pipe, the first two lines of standard input."""
    password = click.prompt("Password", hide_input=True, confirmation_prompt=True, err=True)
    operator = _run(lambda c: c.operators.create(merchant_id, email, role, password))
    data = {
        "id": operator.id,
        "merchant": operator.merchant_id,
        "email": operator.email,
        "role": operator.role.value,
        "created": operator.created_at,
    }
    _emit(as_json, data, f"{operator.id}: {operator.email} ({operator.role.value})")


@main.group("gateway-accounts")
def gateway_accounts_group() -> None:
    """A merchant's own Stripe, Braintree or sandbox accounts (as /v1/gateway_accounts)."""


def _gateway_account_data(account: GatewayAccount, public_url: str) -> dict[str, Any]:
    return {
        "id": account.id,
        "merchant": account.merchant_id,
        "provider": account.provider.value,
        "livemode": account.livemode,
        "publishable_key": account.publishable_key,
        "webhook_url": account.webhook_url(public_url),
        "created": account.created_at,
    }


def _read_credentials(source: TextIO | None) -> dict[str, Any]:
    if source is None:
        return {}
    try:
        credentials = json.loads(source.read())
    except ValueError:
        raise click.BadParameter("not JSON", param_hint="--credentials") from None
    if not isinstance(credentials, dict):
        raise click.BadParameter("must be a JSON object", param_hint="--credentials")
    return credentials


live_option = click.option("--live", is_flag=True, help="Live mode instead of test mode.")


@gateway_accounts_group.command("add")
@merchant_option
@click.option("--provider", type=click.Choice(["stripe", "braintree", "sandbox"]), required=True)
@click.option(
    "--credentials",
    "credentials_file",
    type=click.File("r"),
    help="A JSON file of the provider's credentials, or - for standard input; never "
    "arguments, which ps and shell history would keep. stripe: secret_key, publishable_key, "
    "webhook_secrets. braintree: merchant_id, public_key, private_key, environment, "
    "merchant_accounts, tokenization_key. sandbox: none.",
)
@live_option
@json_option
def gateway_accounts_add(
    merchant_id: str,
    provider: str,
    credentials_file: TextIO | None,
    live: bool,
    as_json: bool,
) -> None:
    """Connect a gateway account; its credentials are sealed with the keyring. The sandbox's
    webhook signing secret is printed once."""
    credentials = _read_credentials(credentials_file)

    async def work(c: Container) -> dict[str, Any]:
        await c.merchants.get_merchant(merchant_id)  # an unknown merchant says so
        caller = Caller(merchant_id=merchant_id, livemode=live)
        created = await c.gateway_accounts.create(caller, provider, credentials)
        data = _gateway_account_data(created.account, c.settings.public_url)
        return data | {"webhook_secret": created.webhook_secret}

    data = _run(work)
    text = f"{data['id']} ({provider}): point its webhooks at {data['webhook_url']}"
    if data["webhook_secret"]:
        text += f"\nwebhook signing secret (shown once): {data['webhook_secret']}"
    _emit(as_json, data, text)


@gateway_accounts_group.command("list")
@merchant_option
@live_option
@json_option
def gateway_accounts_list(merchant_id: str, live: bool, as_json: bool) -> None:
    """A merchant's active gateway accounts in one mode."""

    async def work(c: Container) -> list[dict[str, Any]]:
        accounts = await c.gateway_accounts.list(Caller(merchant_id=merchant_id, livemode=live))
        return [_gateway_account_data(a, c.settings.public_url) for a in accounts]

    data = _run(work)
    lines = [f"{a['id']}  {a['provider']:<9} {a['webhook_url']}" for a in data]
    _emit(as_json, data, "\n".join(lines) or "No gateway accounts.")


@gateway_accounts_group.command("remove")
@click.argument("account_id")
@merchant_option
@live_option
@json_option
def gateway_accounts_remove(account_id: str, merchant_id: str, live: bool, as_json: bool) -> None:
    """Stop routing payments to an account (refused while routing names it); payments made
    through it keep it for their refunds."""
    caller = Caller(merchant_id=merchant_id, livemode=live)
    _run(lambda c: c.gateway_accounts.delete(caller, account_id))
    _emit(as_json, {"id": account_id, "deleted": True}, f"Removed {account_id}.")


@main.group("webhooks")
def webhooks_group() -> None:
    """Gateways' inbound webhooks that could not be processed."""


@webhooks_group.command("failed")
@json_option
def webhooks_failed(as_json: bool) -> None:
    """List inbound gateway webhooks whose processing ran out of retries."""
    failed = _run(lambda c: c.inbound.list_failed())
    lines = [
        f"{w.id}  {w.provider:<9} {w.event_type:<32} {w.event_id}  "
        f"attempts={w.attempt_count}  {w.last_error or ''}"
        for w in failed
    ]
    _emit(as_json, [dataclasses.asdict(w) for w in failed], "\n".join(lines) or "None failed.")


@webhooks_group.command("replay")
@click.argument("ids", nargs=-1)
@click.option("--all-failed", is_flag=True, help="Replay every failed webhook.")
@json_option
def webhooks_replay(ids: tuple[str, ...], all_failed: bool, as_json: bool) -> None:
    """Queue failed inbound webhooks again (by id, or --all-failed), due now with a fresh
    retry schedule; the worker processes them."""
    if not ids and not all_failed:
        raise click.UsageError("Name webhook ids or pass --all-failed.")
    count = _run(lambda c: c.inbound.replay(ids, all_failed=all_failed))
    _emit(as_json, {"replayed": count}, f"Queued {count} webhook(s) again.")


@main.group("audit")
def audit_group() -> None:
    """The tamper-evident audit log."""


@audit_group.command("verify")
@click.option(
    "--tree-size",
    type=click.IntRange(min=1),
    help="With --root-hash: a tree head you saved earlier, which the log must still contain.",
)
@click.option("--root-hash", help="That head's root hash (hex).")
@json_option
def audit_verify(tree_size: int | None, root_hash: str | None, as_json: bool) -> None:
    """Recompute the audit tree from its rows and check every signed tree head. Exits 1 naming
    the first bad entry.

    The log alone cannot show it was not cut back to an older state that is consistent in
    itself: pass a head saved earlier (GET /v1/audit/tree_heads/latest) to rule that out."""
    from rich.progress import Progress

    from strongroom.service_layer.audit_verify import KnownHead, VerifyReport, verify_log

    if (tree_size is None) != (root_hash is None):
        raise click.UsageError("--tree-size and --root-hash go together.")
    known = None
    if tree_size is not None and root_hash is not None:
        try:
            known = KnownHead(tree_size, bytes.fromhex(root_hash))
        except ValueError as exc:
            raise click.BadParameter("not hex", param_hint="--root-hash") from exc

    started = time.perf_counter()
    with Progress(transient=True, disable=as_json) as bar:
        task = bar.add_task("Verifying the audit log", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        report: VerifyReport = _run(lambda c: verify_log(c.uow, c.envelope, progress, known=known))
    seconds = time.perf_counter() - started
    rate = report.entries / seconds if seconds > 0 else 0.0
    data = {
        "ok": report.ok,
        "entries": report.entries,
        "tree_heads": report.tree_heads,
        "pending": report.pending,
        "problem": report.problem,
        "seconds": round(seconds, 3),
        "entries_per_second": round(rate, 1),
    }
    if report.ok:
        text = (
            f"Audit log verified: {report.entries} entries, {report.tree_heads} signed tree "
            f"heads, {report.pending} events awaiting the sequencer "
            f"({rate:,.0f} entries/s)."
        )
    else:
        text = f"Audit log verification FAILED: {report.problem}"
    _emit(as_json, data, text)
    if not report.ok:
        raise SystemExit(1)


# --- reports ------------------------------------------------------------------------------------


@main.group("report")
def report_group() -> None:
    """The standard reports, from the reporting store (STRONGROOM_REPORTING_URL), and
    `report backfill`, which rebuilds that store from the database."""


def _report_command(name: ReportName) -> click.Command:
    day = click.DateTime(formats=["%Y-%m-%d"])

    @click.command(str(name), help=f"The {name} report (a table; --json or --csv for scripts).")
    @click.option("--merchant", "merchant_id", help="One merchant's (default: every merchant).")
    @click.option("--livemode", is_flag=True, help="Live-mode payments instead of test-mode.")
    @click.option("--from", "start", type=day, help="First UTC day, YYYY-MM-DD.")
    @click.option("--to", "end", type=day, help="Last UTC day, YYYY-MM-DD (included).")
    @json_option
    @click.option("--csv", "as_csv", is_flag=True, help="Print CSV with a header row.")
    def command(
        merchant_id: str | None,
        livemode: bool,
        start: datetime | None,
        end: datetime | None,
        as_json: bool,
        as_csv: bool,
    ) -> None:
        from strongroom.adapters.reporting.port import ReportingUnavailable, ReportQuery

        if as_json and as_csv:
            raise click.UsageError("--json and --csv go one at a time.")
        query = ReportQuery(
            livemode=livemode,
            merchant_id=merchant_id,
            start=start.date() if start else None,
            end=end.date() if end else None,
        )
        try:
            report = _run(lambda c: c.reporting.report(name, query, fresh=True))
        except ReportingUnavailable as exc:
            raise click.ClickException(str(exc)) from exc
        if as_json:
            _emit(True, report.as_dict(), "")
        elif as_csv:
            click.echo(to_csv(name, report.rows), nl=False)
        else:
            _print_report_table(name, query, report.rows)

    return command


def _print_report_table(name: ReportName, query: Any, rows: list[dict[str, Any]]) -> None:
    import shutil

    from rich.console import Console
    from rich.table import Table

    whose = query.merchant_id or "every merchant"
    mode = "live" if query.livemode else "test"
    table = Table(title=f"{name}: {whose}, {mode} mode")
    for column in REPORT_COLUMNS[name]:
        numeric = column not in ("day", "currency", "gateway", "status", "code", "decline_code")
        table.add_column(column, justify="right" if numeric else "left", no_wrap=True)
    for row in rows:
        table.add_row(*("" if row[c] is None else str(row[c]) for c in REPORT_COLUMNS[name]))
    # Wide enough for every column when the output is not a terminal (a file, a pipe).
    Console(width=shutil.get_terminal_size((160, 24)).columns).print(table)
    if not rows:
        click.echo("No rows.")


for _name in ReportName:
    report_group.add_command(_report_command(_name))


@report_group.command("backfill")
@click.option(
    "--batch-size",
    default=BACKFILL_BATCH,
    show_default=True,
    type=click.IntRange(min=1),
    help="Payment intents read (and locked, on PostgreSQL) per batch.",
)
@json_option
def report_backfill(batch_size: int, as_json: bool) -> None:
    """Rebuild the reporting store from the database's payment intents, refunds and
    authorization attempts. Safe to repeat, and to run while payments and events go on:
    what it writes never overrides a newer event, nor counts one twice."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    with Progress(
        "{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        disable=as_json,
    ) as bar:
        task = bar.add_task("Payment intents", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        summary = _run(lambda c: c.reporting.backfill(progress, batch_size=batch_size))
    text = (
        f"Rebuilt the reporting store: {summary.payment_intents} payment intents, "
        f"{summary.refunds} refunds, {summary.authorization_attempts} authorization attempts "
        f"(watermark seq {summary.through})."
    )
    _emit(as_json, summary.as_dict(), text)
