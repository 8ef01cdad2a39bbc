"""gateways: merchants' gateway accounts, routing rules, inbound webhooks, sandbox card tokens

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-26 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from strongroom.adapters.db.types import Json, Sealed, UTCDateTime

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Id = sa.String(length=40)


def upgrade() -> None:
    op.create_table(
        "gateway_accounts",
        sa.Column("id", Id, nullable=False),
        sa.Column("merchant_id", Id, nullable=False),
        sa.Column("livemode", sa.Boolean(), nullable=False),
        sa.Column("provider", sa.String(length=16), nullable=False),
        sa.Column("credentials", Sealed(), nullable=False),
        sa.Column("publishable_key", sa.String(length=255), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["merchant_id"],
            ["merchants.id"],
            name=op.f("fk_gateway_accounts_merchant_id_merchants"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_gateway_accounts")),
    )
    op.create_index(
        op.f("ix_gateway_accounts_merchant_id_livemode_created_at"),
        "gateway_accounts",
        ["merchant_id", "livemode", "created_at"],
        unique=False,
    )
    op.create_table(
        "gateway_routing",
        sa.Column("merchant_id", Id, nullable=False),
        sa.Column("livemode", sa.Boolean(), nullable=False),
        sa.Column("rules", Json, nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["merchant_id"], ["merchants.id"], name=op.f("fk_gateway_routing_merchant_id_merchants")
        ),
        sa.PrimaryKeyConstraint("merchant_id", "livemode", name=op.f("pk_gateway_routing")),
    )
    op.create_table(
        "inbound_webhooks",
        sa.Column("id", Id, nullable=False),
        sa.Column("provider", sa.String(length=16), nullable=False),
        sa.Column("account_id", Id, nullable=False),
        sa.Column("merchant_id", Id, nullable=False),
        sa.Column("livemode", sa.Boolean(), nullable=False),
        sa.Column("event_id", sa.String(length=255), nullable=False),
        sa.Column("event_type", sa.String(length=128), nullable=False),
        sa.Column("subject", sa.String(length=255), nullable=True),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempt_count", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", UTCDateTime(), nullable=True),
        sa.Column("locked_until", UTCDateTime(), nullable=True),
        sa.Column("last_error", sa.String(length=500), nullable=True),
        sa.Column("received_at", UTCDateTime(), nullable=False),
        sa.Column("processed_at", UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["merchant_id"],
            ["merchants.id"],
            name=op.f("fk_inbound_webhooks_merchant_id_merchants"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_inbound_webhooks")),
        sa.UniqueConstraint(
            "provider",
            "account_id",
            "event_id",
            name=op.f("uq_inbound_webhooks_provider_account_id_event_id"),
        ),
    )
    op.create_index(
        "ix_inbound_webhooks_due",
        "inbound_webhooks",
        ["next_attempt_at"],
        unique=False,
        postgresql_where=sa.text("status = 'pending'"),
        sqlite_where=sa.text("status = 'pending'"),
    )
    op.create_index(
        op.f("ix_inbound_webhooks_merchant_id_status_received_at"),
        "inbound_webhooks",
        ["merchant_id", "status", "received_at"],
        unique=False,
    )
    op.create_table(
        "sandbox_tokens",
        sa.Column("id", Id, nullable=False),
        sa.Column("merchant_id", Id, nullable=False),
        sa.Column("behaves_as", sa.String(length=64), nullable=False),
        sa.Column("brand", sa.String(length=16), nullable=False),
        sa.Column("last4", sa.String(length=4), nullable=False),
        sa.Column("country", sa.String(length=2), nullable=True),
        sa.Column("exp_month", sa.Integer(), nullable=False),
        sa.Column("exp_year", sa.Integer(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["merchant_id"], ["merchants.id"], name=op.f("fk_sandbox_tokens_merchant_id_merchants")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sandbox_tokens")),
    )
    op.add_column("payment_intents", sa.Column("gateway_account_id", Id, nullable=True))
    op.create_index(
        op.f("ix_payment_intents_gateway_reference"),
        "payment_intents",
        ["gateway_reference"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_payment_intents_gateway_reference"), table_name="payment_intents")
    op.drop_column("payment_intents", "gateway_account_id")
    op.drop_table("sandbox_tokens")
    op.drop_index(
        op.f("ix_inbound_webhooks_merchant_id_status_received_at"), table_name="inbound_webhooks"
    )
    op.drop_index(
        "ix_inbound_webhooks_due",
        table_name="inbound_webhooks",
        postgresql_where=sa.text("status = 'pending'"),
        sqlite_where=sa.text("status = 'pending'"),
    )
    op.drop_table("inbound_webhooks")
    op.drop_table("gateway_routing")
    op.drop_index(
        op.f("ix_gateway_accounts_merchant_id_livemode_created_at"), table_name="gateway_accounts"
    )
    op.drop_table("gateway_accounts")
