"""Novu's delivery events: what Novu's message webhooks said each channel did

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-27

- `novu_delivery_event`: one row per verified webhook of Novu's (`message.sent`,
  `message.delivered`, `message.failed`, `message.seen`, `message.read`, ...) that names a
  notification of ours by its transactionId (docs/architecture.md, "Delivery events from
  Novu"; shared/novu/webhooks.py). `svix_id` is the webhook's `svix-id`, unique: a second
  delivery of the same message (Svix retries, replays) is recorded once. `occurred_at` is
  the event's own timestamp (Novu's clock), `received_at` ours.
- Enterprise rows as everywhere: `xnovu_app` (enterprise transactions) reads and inserts its
  own enterprise's rows only (row-level security as migration 0003); nothing updates or
  deletes them but the owner.
- A foreign key to `ent_notification` ON DELETE CASCADE, so that the rows go with their
  notification when retention removes it; one webhook inserts one row, off the delivery
  path, so the key's check costs nothing that is measured. The index leads with
  `notification_id` for the cascade and for reading one notification's events (a
  notification belongs to one enterprise).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

APP_ROLE = "xnovu_app"
SERVICE_ROLE = "xnovu_service"
TABLE = "notify.novu_delivery_event"
CURRENT_ENTERPRISE = "nullif(current_setting('xnovu.enterprise_id', true), '')::uuid"


def upgrade() -> None:
    op.create_table(
        "novu_delivery_event",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("enterprise_id", sa.UUID(), nullable=False),
        sa.Column(
            "notification_id",
            sa.BigInteger(),
            sa.ForeignKey(
                "notify.ent_notification.id",
                name=op.f("fk_novu_delivery_event_notification_id_ent_notification"),
                ondelete="CASCADE",
            ),
            nullable=False,
        ),
        sa.Column("svix_id", sa.Text(), nullable=False),
        sa.Column("event_type", sa.Text(), nullable=False),
        sa.Column("channel", sa.Text(), nullable=True),
        sa.Column("subscriber_id", sa.Text(), nullable=True),
        sa.Column("step_id", sa.Text(), nullable=True),
        sa.Column("provider_id", sa.Text(), nullable=True),
        sa.Column("novu_message_id", sa.Text(), nullable=True),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "received_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("detail", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_novu_delivery_event")),
        sa.UniqueConstraint("svix_id", name=op.f("uq_novu_delivery_event_svix_id")),
        schema="notify",
    )
    op.create_index(
        op.f("ix_novu_delivery_event_notification_id_id"),
        "novu_delivery_event",
        ["notification_id", "id"],
        unique=False,
        schema="notify",
    )
    op.execute(f"REVOKE ALL ON {TABLE} FROM {APP_ROLE}")
    op.execute(f"GRANT SELECT, INSERT ON {TABLE} TO {APP_ROLE}")
    op.execute(f"GRANT USAGE ON SEQUENCE notify.novu_delivery_event_id_seq TO {APP_ROLE}")
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
    op.drop_table("novu_delivery_event", schema="notify")
