"""bank accounts: aggregator items with sealed access tokens, linked accounts, bank debits

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-25 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from strongroom.adapters.db.types import Sealed, UTCDateTime

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Id = sa.String(length=40)


def upgrade() -> None:
    op.create_table(
        "bank_items",
        sa.Column("id", Id, nullable=False),
        sa.Column("merchant_id", Id, nullable=False),
        sa.Column("livemode", sa.Boolean(), nullable=False),
        sa.Column("provider", sa.String(length=16), nullable=False),
        sa.Column("provider_item_id", sa.String(length=255), nullable=False),
        sa.Column("institution", sa.String(length=255), nullable=True),
        sa.Column("access_token", Sealed(), nullable=False),
        sa.Column("token_rotated_at", UTCDateTime(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["merchant_id"], ["merchants.id"], name=op.f("fk_bank_items_merchant_id_merchants")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_bank_items")),
        sa.UniqueConstraint(
            "provider", "provider_item_id", name=op.f("uq_bank_items_provider_provider_item_id")
        ),
    )
    op.create_index(
        op.f("ix_bank_items_merchant_id_livemode"), "bank_items", ["merchant_id", "livemode"]
    )
    op.create_table(
        "bank_accounts",
        sa.Column("id", Id, nullable=False),
        sa.Column("merchant_id", Id, nullable=False),
        sa.Column("livemode", sa.Boolean(), nullable=False),
        sa.Column("item_id", Id, nullable=False),
        sa.Column("provider_account_id", sa.String(length=255), nullable=False),
        sa.Column("customer_id", Id, nullable=True),
        sa.Column("institution", sa.String(length=255), nullable=True),
        sa.Column("account_type", sa.String(length=16), nullable=False),
        sa.Column("last4", sa.String(length=4), nullable=False),
        sa.Column("numbers", Sealed(), nullable=True),
        sa.Column("micro_deposits", Sealed(), nullable=True),
        sa.Column("micro_deposits_sent_at", UTCDateTime(), nullable=True),
        sa.Column("verification_status", sa.String(length=40), nullable=False),
        sa.Column("verification_attempts", sa.Integer(), nullable=False),
        sa.Column("verify_by", UTCDateTime(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["merchant_id"], ["merchants.id"], name=op.f("fk_bank_accounts_merchant_id_merchants")
        ),
        sa.ForeignKeyConstraint(
            ["item_id"], ["bank_items.id"], name=op.f("fk_bank_accounts_item_id_bank_items")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_bank_accounts")),
        sa.UniqueConstraint(
            "item_id",
            "provider_account_id",
            name=op.f("uq_bank_accounts_item_id_provider_account_id"),
        ),
    )
    op.create_index(
        op.f("ix_bank_accounts_merchant_id_livemode_created_at"),
        "bank_accounts",
        ["merchant_id", "livemode", "created_at"],
    )
    op.create_index(
        op.f("ix_bank_accounts_verification_status_verify_by"),
        "bank_accounts",
        ["verification_status", "verify_by"],
    )
    op.create_table(
        "bank_debits",
        sa.Column("id", Id, nullable=False),
        sa.Column("merchant_id", Id, nullable=False),
        sa.Column("livemode", sa.Boolean(), nullable=False),
        sa.Column("payment_intent_id", Id, nullable=False),
        sa.Column("bank_account_id", Id, nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("return_code", sa.String(length=3), nullable=True),
        sa.Column("settles_at", UTCDateTime(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["merchant_id"], ["merchants.id"], name=op.f("fk_bank_debits_merchant_id_merchants")
        ),
        sa.ForeignKeyConstraint(
            ["payment_intent_id"],
            ["payment_intents.id"],
            name=op.f("fk_bank_debits_payment_intent_id_payment_intents"),
        ),
        sa.ForeignKeyConstraint(
            ["bank_account_id"],
            ["bank_accounts.id"],
            name=op.f("fk_bank_debits_bank_account_id_bank_accounts"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_bank_debits")),
    )
    op.create_index(
        op.f("ix_bank_debits_status_settles_at"), "bank_debits", ["status", "settles_at"]
    )
    op.create_index(op.f("ix_bank_debits_payment_intent_id"), "bank_debits", ["payment_intent_id"])


def downgrade() -> None:
    op.drop_table("bank_debits")
    op.drop_table("bank_accounts")
    op.drop_table("bank_items")
