"""operators: the people who run a merchant's account, their earlier passwords' hashes, their
TOTP seeds and recovery codes, the merchant's refund step-up threshold, their console sessions, their apps' tokens, invitations and WebAuthn credentials

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-24 19:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from strongroom.adapters.db.types import Sealed, UTCDateTime

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Id = sa.String(length=40)
AutoId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("merchants") as batch:
        batch.add_column(
            sa.Column(
                "refund_step_up_amount",
                sa.BigInteger(),
                server_default=sa.text("10000"),
                nullable=False,
            )
        )
    op.create_table(
        "operators",
        sa.Column("id", Id, nullable=False),
        sa.Column("merchant_id", Id, nullable=False),
        sa.Column("email", sa.String(length=254), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("password_hash", sa.String(length=255), nullable=False),
        sa.Column("password_changed_at", UTCDateTime(), nullable=False),
        sa.Column("failed_sign_ins", sa.Integer(), nullable=False),
        sa.Column("locked_until", UTCDateTime(), nullable=True),
        sa.Column("totp_seed", Sealed(), nullable=True),
        sa.Column("totp_confirmed_at", UTCDateTime(), nullable=True),
        sa.Column("totp_last_step", sa.BigInteger(), nullable=True),
        sa.Column(
            "second_factor_failures", sa.Integer(), server_default=sa.text("0"), nullable=False
        ),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["merchant_id"], ["merchants.id"], name=op.f("fk_operators_merchant_id_merchants")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_operators")),
        sa.UniqueConstraint("email", name=op.f("uq_operators_email")),
    )
    op.create_index(op.f("ix_operators_merchant_id"), "operators", ["merchant_id"], unique=False)
    op.create_table(
        "operator_password_history",
        sa.Column("id", AutoId, autoincrement=True, nullable=False),
        sa.Column("operator_id", Id, nullable=False),
        sa.Column("password_hash", sa.String(length=255), nullable=False),
        sa.Column("replaced_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["operator_id"],
            ["operators.id"],
            name=op.f("fk_operator_password_history_operator_id_operators"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_operator_password_history")),
    )
    op.create_index(
        op.f("ix_operator_password_history_operator_id_id"),
        "operator_password_history",
        ["operator_id", "id"],
        unique=False,
    )
    op.create_table(
        "operator_recovery_codes",
        sa.Column("id", AutoId, autoincrement=True, nullable=False),
        sa.Column("operator_id", Id, nullable=False),
        sa.Column("code_hash", sa.String(length=64), nullable=False),
        sa.Column("used_at", UTCDateTime(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["operator_id"],
            ["operators.id"],
            name=op.f("fk_operator_recovery_codes_operator_id_operators"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_operator_recovery_codes")),
        sa.UniqueConstraint("code_hash", name=op.f("uq_operator_recovery_codes_code_hash")),
    )
    op.create_index(
        op.f("ix_operator_recovery_codes_operator_id"),
        "operator_recovery_codes",
        ["operator_id"],
        unique=False,
    )
    op.create_table(
        "operator_sessions",
        sa.Column("id", Id, nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("operator_id", Id, nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("last_seen_at", UTCDateTime(), nullable=False),
        sa.Column("second_factor_at", UTCDateTime(), nullable=True),
        sa.Column("revoked_at", UTCDateTime(), nullable=True),
        sa.Column("ip", sa.String(length=45), nullable=True),
        sa.Column("user_agent", sa.String(length=255), nullable=True),
        sa.Column("webauthn_challenge", sa.String(length=128), nullable=True),
        sa.Column("webauthn_challenge_at", UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["operator_id"],
            ["operators.id"],
            name=op.f("fk_operator_sessions_operator_id_operators"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_operator_sessions")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_operator_sessions_token_hash")),
    )
    op.create_index(
        op.f("ix_operator_sessions_operator_id_revoked_at"),
        "operator_sessions",
        ["operator_id", "revoked_at"],
        unique=False,
    )
    op.create_table(
        "operator_tokens",
        sa.Column("id", Id, nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("family_id", Id, nullable=False),
        sa.Column("operator_id", Id, nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.Column("used_at", UTCDateTime(), nullable=True),
        sa.Column("revoked_at", UTCDateTime(), nullable=True),
        sa.Column("family_expires_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["operator_id"], ["operators.id"], name=op.f("fk_operator_tokens_operator_id_operators")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_operator_tokens")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_operator_tokens_token_hash")),
    )
    op.create_index(
        op.f("ix_operator_tokens_family_id"), "operator_tokens", ["family_id"], unique=False
    )
    op.create_index(
        op.f("ix_operator_tokens_operator_id"), "operator_tokens", ["operator_id"], unique=False
    )
    op.create_table(
        "operator_invitations",
        sa.Column("id", Id, nullable=False),
        sa.Column("merchant_id", Id, nullable=False),
        sa.Column("email", sa.String(length=254), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("invited_by", Id, nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.Column("accepted_at", UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["invited_by"],
            ["operators.id"],
            name=op.f("fk_operator_invitations_invited_by_operators"),
        ),
        sa.ForeignKeyConstraint(
            ["merchant_id"],
            ["merchants.id"],
            name=op.f("fk_operator_invitations_merchant_id_merchants"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_operator_invitations")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_operator_invitations_token_hash")),
    )
    op.create_index(
        op.f("ix_operator_invitations_merchant_id_created_at"),
        "operator_invitations",
        ["merchant_id", "created_at"],
        unique=False,
    )
    op.create_table(
        "operator_webauthn_credentials",
        sa.Column("id", Id, nullable=False),
        sa.Column("operator_id", Id, nullable=False),
        sa.Column("credential_id", sa.String(length=1400), nullable=False),
        sa.Column("public_key", sa.Text(), nullable=False),
        sa.Column("sign_count", sa.BigInteger(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("last_used_at", UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["operator_id"],
            ["operators.id"],
            name=op.f("fk_operator_webauthn_credentials_operator_id_operators"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_operator_webauthn_credentials")),
        sa.UniqueConstraint(
            "credential_id", name=op.f("uq_operator_webauthn_credentials_credential_id")
        ),
    )
    op.create_index(
        op.f("ix_operator_webauthn_credentials_operator_id"),
        "operator_webauthn_credentials",
        ["operator_id"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index(
        op.f("ix_operator_webauthn_credentials_operator_id"),
        table_name="operator_webauthn_credentials",
    )
    op.drop_table("operator_webauthn_credentials")
    op.drop_index(
        op.f("ix_operator_invitations_merchant_id_created_at"), table_name="operator_invitations"
    )
    op.drop_table("operator_invitations")
    op.drop_index(op.f("ix_operator_tokens_operator_id"), table_name="operator_tokens")
    op.drop_index(op.f("ix_operator_tokens_family_id"), table_name="operator_tokens")
    op.drop_table("operator_tokens")
    op.drop_index(
        op.f("ix_operator_sessions_operator_id_revoked_at"), table_name="operator_sessions"
    )
    op.drop_table("operator_sessions")
    op.drop_index(
        op.f("ix_operator_recovery_codes_operator_id"), table_name="operator_recovery_codes"
    )
    op.drop_table("operator_recovery_codes")
    op.drop_index(
        op.f("ix_operator_password_history_operator_id_id"), table_name="operator_password_history"
    )
    op.drop_table("operator_password_history")
    op.drop_index(op.f("ix_operators_merchant_id"), table_name="operators")
    op.drop_table("operators")
    with op.batch_alter_table("merchants") as batch:
        batch.drop_column("refund_step_up_amount")
