"""Gateway accounts over the real app: credentials are checked, stored sealed (never in clear in
the database, never in an answer), audited, and private to their merchant; routing rules name
only the merchant's own accounts."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select, text

from strongroom.adapters.db import tables as t
from strongroom.adapters.kms.envelope import DecryptionFailed
from strongroom.bootstrap import Container
from strongroom.entrypoints.api.app import create_app
from strongroom.service_layer.merchants import KeyKind
from tests.integration.test_cli import cli

STRIPE_SECRET = "sk_test_" + "51Hx" * 8
STRIPE_WEBHOOK_SECRET = "whsec_" + "c2VjcmV0" * 4


def stripe_account(**extra: Any) -> dict[str, Any]:
    credentials = {
        "secret_key": STRIPE_SECRET,
        "publishable_key": "pk_test_abc",
        "webhook_secrets": [STRIPE_WEBHOOK_SECRET],
    }
    return {"provider": "stripe", "credentials": credentials | extra}


@pytest.fixture
async def other_client(container: Container) -> AsyncIterator[httpx.AsyncClient]:
    merchant = await container.merchants.create_merchant("Globex")
    key = await container.merchants.create_key(merchant.id, KeyKind.SECRET, livemode=False)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(container)),
        base_url="http://strongroom.test",
        headers={"Authorization": f"Bearer {key.secret}"},
    ) as http:
        yield http


async def test_credentials_are_sealed_and_never_shown(
    client: httpx.AsyncClient, container: Container
) -> None:
    created = await client.post("/v1/gateway_accounts", json=stripe_account())
    assert created.status_code == 200, created.text
    assert created.headers["cache-control"] == "no-store"
    account = created.json()
    assert account["provider"] == "stripe"
    assert account["publishable_key"] == "pk_test_abc"
    assert account["webhook_url"].endswith(f"/v1/webhooks/stripe/{account['id']}")
    assert account["webhook_secret"] is None  # Stripe's is the merchant's own
    for answer in (created, await client.get(f"/v1/gateway_accounts/{account['id']}")):
        assert STRIPE_SECRET not in answer.text
        assert STRIPE_WEBHOOK_SECRET not in answer.text

    async with container.engines.write.connect() as conn:
        row = (await conn.execute(select(t.gateway_accounts))).one()
        dump = " ".join(str(v) for v in row)
        audit = (
            await conn.execute(
                text("SELECT details FROM audit_events WHERE event_type = :a"),
                {"a": "api:gateway_account:create"},
            )
        ).all()
    assert STRIPE_SECRET not in dump
    assert STRIPE_WEBHOOK_SECRET not in dump
    assert len(audit) == 1
    assert STRIPE_SECRET not in str(audit)

    opened = await container.gateway_accounts.credentials(row.merchant_id, account["id"])
    assert opened.fields["secret_key"] == STRIPE_SECRET
    assert opened.fields["webhook_secrets"] == [STRIPE_WEBHOOK_SECRET]


async def test_a_sealed_value_moved_to_another_row_does_not_open(
    client: httpx.AsyncClient, container: Container
) -> None:
    first = (await client.post("/v1/gateway_accounts", json=stripe_account())).json()
    second = (await client.post("/v1/gateway_accounts", json={"provider": "sandbox"})).json()
    async with container.engines.write.begin() as conn:
        sealed = (
            await conn.execute(
                select(t.gateway_accounts.c.credentials, t.gateway_accounts.c.merchant_id).where(
                    t.gateway_accounts.c.id == first["id"]
                )
            )
        ).one()
    # Both opened once, so each process has them cached: the cache must not vouch for a row
    # whose sealed value changed.
    for account in (first, second):
        await container.gateway_accounts.credentials(sealed.merchant_id, account["id"])
    async with container.engines.write.begin() as conn:
        await conn.execute(
            t.gateway_accounts.update()
            .where(t.gateway_accounts.c.id == second["id"])
            .values(credentials=sealed.credentials)
        )
    with pytest.raises(DecryptionFailed):
        await container.gateway_accounts.credentials(sealed.merchant_id, second["id"])


async def test_the_sandbox_signing_secret_is_shown_once(client: httpx.AsyncClient) -> None:
    created = await client.post("/v1/gateway_accounts", json={"provider": "sandbox"})
    assert created.status_code == 200
    secret = created.json()["webhook_secret"]
    assert secret.startswith("whsec_")
    listed = await client.get("/v1/gateway_accounts")
    assert [a["id"] for a in listed.json()["data"]] == [created.json()["id"]]
    assert secret not in listed.text


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"provider": "adyen"}, "provider"),
        ({"provider": "stripe", "credentials": {}}, "credentials.secret_key"),
        (stripe_account(secret_key="sk_live_" + "x" * 24), "credentials.secret_key"),
        (stripe_account(secret_key=123), "credentials.secret_key"),
        (stripe_account(publishable_key="pk_live_x"), "credentials.publishable_key"),
        (stripe_account(webhook_secrets=["nope"]), "credentials.webhook_secrets[0]"),
        (stripe_account(scret_key="typo"), "credentials"),
        (stripe_account(base_url="ftp://127.0.0.1"), "credentials.base_url"),
        (
            {"provider": "braintree", "credentials": {"merchant_id": "m", "public_key": "p"}},
            "credentials.private_key",
        ),
        (
            {
                "provider": "braintree",
                "credentials": {
                    "merchant_id": "m",
                    "public_key": "p",
                    "private_key": "s",
                    "environment": "production",
                },
            },
            "credentials.environment",
        ),
    ],
)
async def test_bad_credentials_are_refused_without_echoing_them(
    client: httpx.AsyncClient, container: Container, body: dict[str, Any], param: str
) -> None:
    refused = await client.post("/v1/gateway_accounts", json=body)
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"]["param"] == param
    assert "x" * 24 not in refused.text
    async with container.engines.write.connect() as conn:
        assert (await conn.execute(select(t.gateway_accounts))).first() is None


async def test_accounts_and_routing_are_private_to_their_merchant(
    client: httpx.AsyncClient, other_client: httpx.AsyncClient
) -> None:
    mine = (await client.post("/v1/gateway_accounts", json=stripe_account())).json()
    theirs = (await other_client.post("/v1/gateway_accounts", json={"provider": "sandbox"})).json()

    assert (await other_client.get(f"/v1/gateway_accounts/{mine['id']}")).status_code == 404
    assert (await other_client.delete(f"/v1/gateway_accounts/{mine['id']}")).status_code == 404
    assert [a["id"] for a in (await other_client.get("/v1/gateway_accounts")).json()["data"]] == [
        theirs["id"]
    ]
    # Routing can name only one's own accounts.
    refused = await client.post("/v1/gateway_routing", json={"default": [theirs["id"]]})
    assert refused.status_code == 400
    assert refused.json()["error"]["param"] == "default"


async def test_routing_is_stored_and_guards_the_accounts_it_names(
    client: httpx.AsyncClient,
) -> None:
    stripe = (await client.post("/v1/gateway_accounts", json=stripe_account())).json()
    sandbox = (await client.post("/v1/gateway_accounts", json={"provider": "sandbox"})).json()
    doc = {
        "rules": [{"card_country": ["FR", "de"], "gateways": [sandbox["id"]]}],
        "default": [stripe["id"], sandbox["id"]],
    }
    stored = await client.post("/v1/gateway_routing", json=doc)
    assert stored.status_code == 200, stored.text
    assert (await client.get("/v1/gateway_routing")).json() == {
        "object": "gateway_routing",
        "rules": [{"gateways": [sandbox["id"]], "card_country": ["DE", "FR"]}],
        "default": [stripe["id"], sandbox["id"]],
    }
    # An account the rules name cannot be deleted from under them.
    refused = await client.delete(f"/v1/gateway_accounts/{stripe['id']}")
    assert refused.status_code == 400
    await client.post("/v1/gateway_routing", json={"default": [sandbox["id"]]})
    deleted = await client.delete(f"/v1/gateway_accounts/{stripe['id']}")
    assert deleted.json() == {"id": stripe["id"], "object": "gateway_account", "deleted": True}
    assert (await client.get(f"/v1/gateway_accounts/{stripe['id']}")).status_code == 404


async def test_status_lists_each_account_with_a_closed_breaker(client: httpx.AsyncClient) -> None:
    sandbox = (await client.post("/v1/gateway_accounts", json={"provider": "sandbox"})).json()
    status = (await client.get("/v1/gateways/status")).json()
    assert status["data"] == [
        {
            "gateway_account": None,
            "provider": "sandbox",
            "state": "closed",
            "consecutive_failures": 0,
        },
        {
            "gateway_account": sandbox["id"],
            "provider": "sandbox",
            "state": "closed",
            "consecutive_failures": 0,
        },
    ]


# SQLite only: the command's parsing and output do not depend on the store, the service
# layer under it runs on both stores in the tests above, and each run starts several processes.
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_the_cli_adds_lists_and_removes_accounts(
    client: httpx.AsyncClient,
    container: Container,
    database_url: str,
    kms_url: str,
    tmp_path: Path,
) -> None:
    """`strongroom gateway-accounts` as a subprocess on the same database and keyring: the
    credentials come from a file (never arguments), are sealed, and open for the API."""
    env = {"STRONGROOM_KMS_URL": kms_url}
    merchant = (await client.get("/v1/gateway_accounts")).json()  # the client's merchant
    assert merchant["data"] == []
    async with container.engines.write.connect() as conn:
        merchant_id = (await conn.execute(select(t.merchants.c.id))).scalar_one()
    creds = tmp_path / "stripe.json"
    creds.write_text(json.dumps(stripe_account()["credentials"]))

    added = cli(
        database_url, "gateway-accounts", "add", "--merchant", merchant_id,
        "--provider", "stripe", "--credentials", str(creds), "--json", env=env,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    account = json.loads(added.stdout)
    assert account["provider"] == "stripe"
    assert account["webhook_url"].endswith(f"/v1/webhooks/stripe/{account['id']}")
    assert STRIPE_SECRET not in added.stdout + added.stderr

    via_api = (await client.get(f"/v1/gateway_accounts/{account['id']}")).json()
    assert via_api["publishable_key"] == "pk_test_abc"
    opened = await container.gateway_accounts.credentials(merchant_id, account["id"])
    assert opened.fields["secret_key"] == STRIPE_SECRET
    async with container.engines.write.connect() as conn:
        actor = (
            await conn.execute(
                text("SELECT actor_type, actor_id FROM audit_events WHERE event_type = :a"),
                {"a": "api:gateway_account:create"},
            )
        ).one()
    assert tuple(actor) == ("system", "cli")

    sandbox = cli(
        database_url, "gateway-accounts", "add", "--merchant", merchant_id,
        "--provider", "sandbox", env=env,
    )  # fmt: skip
    assert sandbox.returncode == 0, sandbox.stderr
    assert "webhook signing secret (shown once): whsec_" in sandbox.stdout

    listed = cli(database_url, "gateway-accounts", "list", "--merchant", merchant_id, "--json",
                 env=env)  # fmt: skip
    assert sorted(a["provider"] for a in json.loads(listed.stdout)) == ["sandbox", "stripe"]
    assert "whsec_" not in listed.stdout, "a secret is shown only when made"

    removed = cli(database_url, "gateway-accounts", "remove", account["id"],
                  "--merchant", merchant_id, env=env)  # fmt: skip
    assert removed.returncode == 0, removed.stderr
    assert (await client.get(f"/v1/gateway_accounts/{account['id']}")).status_code == 404


# SQLite only: refusing bad input happens before the store is touched.
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--merchant", "acct_missing", "--provider", "sandbox"], "No such merchant"),
        (["--provider", "stripe", "--credentials", "-"], "not JSON"),
        (["--provider", "stripe"], "secret_key"),
        (["--provider", "paypal"], "Invalid value for '--provider'"),
    ],
)
async def test_the_cli_refuses_bad_input_and_adds_nothing(
    container: Container, database_url: str, kms_url: str, args: list[str], says: str
) -> None:
    merchant = await container.merchants.create_merchant("Cli Gateways")
    if "--merchant" not in args:
        args = ["--merchant", merchant.id, *args]
    env = {"STRONGROOM_KMS_URL": kms_url}
    result = cli(database_url, "gateway-accounts", "add", *args, env=env, stdin="{not json")
    assert result.returncode != 0
    assert says in result.stderr
    async with container.engines.write.connect() as conn:
        assert (await conn.execute(select(t.gateway_accounts))).all() == []
