"""registry generation and render fallbacks

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "registry_generation",
        sa.Column("enterprise_id", sa.UUID(), nullable=False),
        sa.Column("generation", sa.BigInteger(), server_default=sa.text("1"), nullable=False),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("enterprise_id", name=op.f("pk_registry_generation")),
        schema="notify",
    )
    op.add_column(
        "ent_notification",
        sa.Column("render_fallbacks", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        schema="notify",
    )


def downgrade() -> None:
    op.drop_column("ent_notification", "render_fallbacks", schema="notify")
    op.drop_table("registry_generation", schema="notify")
