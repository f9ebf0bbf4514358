"""the notification timeline: an append-only history of events per notification

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-27

- `ent_notification_event`: one row per thing that happened to a notification (accepted,
  each attempt and its answer, retries, cancels, Novu's delivery events, webhook deliveries;
  the kinds are listed in shared/notifications/timeline.py), written in the transaction of
  the transition it records (docs/architecture.md, "Timeline"). `created_at` is the
  database's clock; `id` orders the events of one notification.
- Append-only: `xnovu_app` (enterprise transactions) may only read and insert its own
  enterprise's rows (row-level security as migration 0003), and `xnovu_service` (where the
  deployment's roles exist, deploy/postgres) loses the UPDATE and DELETE its default
  privileges gave it. The owner (migrations, retention) is unaffected.
- No foreign key to `ent_notification`: every event is inserted by the statement that moves
  or reads that very row (it always exists), and a key would add a per-row check to the
  delivery path's batch statements.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

APP_ROLE = "xnovu_app"
SERVICE_ROLE = "xnovu_service"
TABLE = "notify.ent_notification_event"
CURRENT_ENTERPRISE = "nullif(current_setting('xnovu.enterprise_id', true), '')::uuid"


def upgrade() -> None:
    op.create_table(
        "ent_notification_event",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("enterprise_id", sa.UUID(), nullable=False),
        sa.Column("notification_id", sa.BigInteger(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("clock_timestamp()"),
            nullable=False,
        ),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=True),
        sa.Column("detail", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.CheckConstraint(
            "kind ~ '^[a-z][a-z0-9_]*([.][a-z0-9_]+)*$' AND length(kind) <= 64",
            name=op.f("ck_ent_notification_event_kind_format"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ent_notification_event")),
        schema="notify",
    )
    op.create_index(
        op.f("ix_ent_notification_event_enterprise_id_notification_id_id"),
        "ent_notification_event",
        ["enterprise_id", "notification_id", "id"],
        unique=False,
        schema="notify",
    )
    op.execute(f"REVOKE ALL ON {TABLE} FROM {APP_ROLE}")
    op.execute(f"GRANT SELECT, INSERT ON {TABLE} TO {APP_ROLE}")
    op.execute(f"GRANT USAGE ON SEQUENCE notify.ent_notification_event_id_seq TO {APP_ROLE}")
    op.execute(
        f"""
        DO $$
        BEGIN
            IF EXISTS (SELECT FROM pg_roles WHERE rolname = '{SERVICE_ROLE}') THEN
                REVOKE UPDATE, DELETE, TRUNCATE ON {TABLE} FROM {SERVICE_ROLE};
            END IF;
        END $$;
        """
    )
    op.execute(f"ALTER TABLE {TABLE} ENABLE ROW LEVEL SECURITY")
    op.execute(
        f"CREATE POLICY enterprise_isolation ON {TABLE} TO {APP_ROLE} "
        f"USING (enterprise_id = {CURRENT_ENTERPRISE}) "
        f"WITH CHECK (enterprise_id = {CURRENT_ENTERPRISE})"
    )


def downgrade() -> None:
    op.drop_table("ent_notification_event", schema="notify")
