"""rows written by other services: notifications inserted with the original XNovu's columns

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-27

Other services of the original XNovu insert PENDING rows straight into `ent_notification`
with its columns only (`notification_workflow_id`, `payload`, `recipients`, `enterprise_id`,
optional `scheduled_for`, `name`, ...). docs/architecture.md, "Rows written by other services".

- `intake_checked`: true on the rows intake recorded (its INSERT says so), false on every
  other insert (the column's default). The claim checks the false ones against their workflow
  (published, active, the payload schema, the recipients) before their first Novu call; the
  intake's rows are not checked twice. Existing rows are marked true (they were recorded by
  intake): added with DEFAULT true, a change of the catalog only, then the default turned false.
- `transaction_id` defaults to `'xn-' || gen_random_uuid()`, the form intake writes.
- `adopt_direct_notification`, BEFORE INSERT FOR EACH ROW WHEN (NEW.workflow_key IS NULL), the
  original's rows (its schema has no workflow_key): derives `workflow_key` from the workflow
  row `notification_workflow_id` names, which must be the row's enterprise's or a shared one
  (enterprise_id NULL), else the insert is refused (foreign_key_violation; not_null_violation
  when it names none). Rows that give `workflow_key` never run it (intake's, and a bulk
  insert of 50,000 rows paid 10 us a row for a function that had nothing to do): the WHEN
  condition is evaluated without calling the function. Whatever they name is checked at the
  claim instead (an id of another enterprise's workflow is not visible there, so the row
  FAILS, never sent).
- No timeline event is written here: a notification's `accepted` event is its own row
  (shared/notifications/timeline.py), whoever inserted it.
- The original's columns this schema lacked, kept and not used, so that the original's
  inserts naming them work: `typ_notification_category_id`, `typ_notification_priority_id`
  (their tables are not part of XNovu), `workflow_version`.

The function runs with the inserting role's rights: a service inserting as `xnovu_app` in
its enterprise's transaction sees, under row-level security, only its own and the shared
workflows, and the function checks the enterprise explicitly besides, for a role that
bypasses row-level security.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NOTIFICATIONS = "notify.ent_notification"
WORKFLOWS = "notify.ent_notification_workflow"

_ADOPT = f"""
CREATE OR REPLACE FUNCTION notify.adopt_direct_notification() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.notification_workflow_id IS NULL THEN
        RAISE EXCEPTION 'a notification names its workflow (notification_workflow_id)'
            USING ERRCODE = 'not_null_violation';
    END IF;
    SELECT w.workflow_key INTO NEW.workflow_key FROM {WORKFLOWS} AS w
    WHERE w.id = NEW.notification_workflow_id
      AND (w.enterprise_id = NEW.enterprise_id OR w.enterprise_id IS NULL);
    IF NEW.workflow_key IS NULL THEN
        RAISE EXCEPTION 'notification_workflow_id % is not a workflow of enterprise %',
            NEW.notification_workflow_id, NEW.enterprise_id
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN NEW;
END $$
"""


def _original_columns() -> list[sa.Column[object]]:
    return [
        sa.Column("typ_notification_category_id", sa.BigInteger(), nullable=True),
        sa.Column("typ_notification_priority_id", sa.BigInteger(), nullable=True),
        sa.Column("workflow_version", sa.Integer(), server_default=sa.text("1"), nullable=True),
    ]


def upgrade() -> None:
    op.add_column(
        "ent_notification",
        sa.Column("intake_checked", sa.Boolean(), server_default=sa.true(), nullable=False),
        schema="notify",
    )
    op.alter_column(
        "ent_notification", "intake_checked", server_default=sa.false(), schema="notify"
    )
    op.alter_column(
        "ent_notification",
        "transaction_id",
        server_default=sa.text("'xn-' || gen_random_uuid()"),
        schema="notify",
    )
    for column in _original_columns():
        op.add_column("ent_notification", column, schema="notify")
    op.execute(_ADOPT)
    op.execute(
        f"CREATE TRIGGER adopt_direct_notification BEFORE INSERT ON {NOTIFICATIONS} "
        "FOR EACH ROW WHEN (NEW.workflow_key IS NULL) "
        "EXECUTE FUNCTION notify.adopt_direct_notification()"
    )


def downgrade() -> None:
    op.execute(f"DROP TRIGGER IF EXISTS adopt_direct_notification ON {NOTIFICATIONS}")
    op.execute("DROP FUNCTION IF EXISTS notify.adopt_direct_notification()")
    for column in reversed(_original_columns()):
        op.drop_column("ent_notification", column.name, schema="notify")
    op.alter_column("ent_notification", "transaction_id", server_default=None, schema="notify")
    op.drop_column("ent_notification", "intake_checked", schema="notify")
