"""restricted API keys' scopes, and each merchant's own API rate limits

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-24 22:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Json = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("scopes", Json, nullable=True))  # None: a full key
    with op.batch_alter_table("merchants") as batch:
        batch.add_column(sa.Column("rate_limits", Json, nullable=True))  # None: the defaults


def downgrade() -> None:
    with op.batch_alter_table("merchants") as batch:
        batch.drop_column("rate_limits")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("scopes")
