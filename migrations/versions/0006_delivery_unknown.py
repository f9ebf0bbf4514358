"""when a delivery attempt's outcome became unknown (Novu may hold the event)

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-27

- `ent_notification.outcome_unknown_at`: set when a call to Novu was sent and its answer never
  came (a dropped connection, a timeout, a 5xx, a worker whose lease ran out): Novu may hold
  the event. A cancel then asks Novu and retracts only when Novu confirms
  (docs/architecture.md, "Cancel"); cleared when Novu accepts the notification (SENT).
  A plain nullable column: the row-level security policies of migration 0003 cover it.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "ent_notification",
        sa.Column("outcome_unknown_at", sa.DateTime(timezone=True), nullable=True),
        schema="notify",
    )


def downgrade() -> None:
    op.drop_column("ent_notification", "outcome_unknown_at", schema="notify")
