"""what Novu knows of our workflows: one row per synced workflow key, and a log of syncs

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27

- `novu_workflow_sync`: per workflow key, when a sync last registered it with Novu, the hash
  of its discover entry then, and the last attempt's error. The workflow API shows it to
  enterprises (`novu_sync`), so `xnovu_app` may read it, and only the rows of keys its
  enterprise has a workflow of (row-level security, as migration 0003).
- `novu_sync_run`: every sync attempt; beat compares the latest successful one with the
  discover document now (docs/architecture.md, "Novu").
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

APP_ROLE = "xnovu_app"


def upgrade() -> None:
    op.create_table(
        "novu_workflow_sync",
        sa.Column("workflow_key", sa.Text(), nullable=False),
        sa.Column("discover_hash", sa.Text(), nullable=True),
        sa.Column("synced_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("workflow_key", name=op.f("pk_novu_workflow_sync")),
        schema="notify",
    )
    op.create_table(
        "novu_sync_run",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "finished_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("novu_api_url", sa.Text(), nullable=False),
        sa.Column("bridge_url", sa.Text(), nullable=False),
        sa.Column("discover_hash", sa.Text(), nullable=False),
        sa.Column("workflow_keys", postgresql.ARRAY(sa.Text()), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_novu_sync_run")),
        schema="notify",
    )
    op.execute(f"GRANT SELECT ON notify.novu_workflow_sync TO {APP_ROLE}")
    op.execute("ALTER TABLE notify.novu_workflow_sync ENABLE ROW LEVEL SECURITY")
    # The subquery is itself confined by ent_notification_workflow's policy: the enterprise's
    # own workflows and the static ones.
    op.execute(
        f"CREATE POLICY enterprise_keys ON notify.novu_workflow_sync TO {APP_ROLE} "
        "USING (EXISTS (SELECT 1 FROM notify.ent_notification_workflow w "
        "WHERE w.workflow_key = novu_workflow_sync.workflow_key))"
    )


def downgrade() -> None:
    op.drop_table("novu_sync_run", schema="notify")
    op.drop_table("novu_workflow_sync", schema="notify")
