"""The `strongroom` command. Every command takes --json for scripts."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, TypeVar

import click
import structlog

from strongroom.bootstrap import Container, bootstrap
from strongroom.domain.errors import StrongroomError
from strongroom.entrypoints import logs
from strongroom.service_layer.merchants import IssuedKey, KeyKind
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
    """Run the background loops (recovery, pruning) until SIGTERM or SIGINT."""
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


@main.group()
def keys() -> None:
    """API keys."""


@keys.command("create")
@click.option("--merchant", "merchant_id", required=True)
@click.option("--publishable", is_flag=True, help="A pk_ key instead of an sk_ key.")
@click.option("--live", is_flag=True, help="A live-mode key instead of a test-mode key.")
@json_option
def keys_create(merchant_id: str, publishable: bool, live: bool, as_json: bool) -> None:
    """Create an API key; the secret is printed once and never stored."""
    kind = KeyKind.PUBLISHABLE if publishable else KeyKind.SECRET
    key = _run(lambda c: c.merchants.create_key(merchant_id, kind, livemode=live))
    _emit(as_json, _key_data(key), f"{key.id}: {key.secret}")


@keys.command("revoke")
@click.argument("key_id")
@json_option
def keys_revoke(key_id: str, as_json: bool) -> None:
    """Revoke an API key at once."""
    _run(lambda c: c.merchants.revoke_key(key_id))
    _emit(as_json, {"id": key_id, "revoked": True}, f"Revoked {key_id}.")


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
