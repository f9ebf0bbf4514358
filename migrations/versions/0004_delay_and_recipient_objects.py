"""workflow delay step and recipients given as subscriber objects or topics

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27

- `ent_notification_workflow.delay_seconds`: a dynamic workflow's delay step, which Novu holds
  before the channel steps run (the window in which a SENT notification can still be
  cancelled, docs/architecture.md "Novu").
- `ent_notification.recipient_objects`: the recipients exactly as given, when any of them is a
  subscriber object or a topic; `recipients` keeps their subscriberIds / topicKeys (the hot
  path and the listing read the text array; NULL here means every recipient is a bare id).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "ent_notification_workflow",
        sa.Column("delay_seconds", sa.Integer(), nullable=True),
        schema="notify",
    )
    op.create_check_constraint(
        op.f("ck_ent_notification_workflow_delay_seconds_range"),
        "ent_notification_workflow",
        "delay_seconds IS NULL OR delay_seconds BETWEEN 1 AND 2592000",
        schema="notify",
    )
    op.add_column(
        "ent_notification",
        sa.Column("recipient_objects", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        schema="notify",
    )


def downgrade() -> None:
    op.drop_column("ent_notification", "recipient_objects", schema="notify")
    op.drop_constraint(
        op.f("ck_ent_notification_workflow_delay_seconds_range"),
        "ent_notification_workflow",
        type_="check",
        schema="notify",
    )
    op.drop_column("ent_notification_workflow", "delay_seconds", schema="notify")
