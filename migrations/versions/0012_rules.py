"""rules: scheduled (CRON) rules fire through beat, once per rule and fire time

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-27

- `ent_notification_rule` keeps the original's columns (other services write them) and gains
  the scheduler's: `next_fire_at` (the next fire time in UTC; NULL: not armed yet),
  `schedule_changed_at` (when its schedule last changed: a rule is armed with its first cron
  time after it), `last_fired_at` (the last fire time handled) and `last_error` (why the last
  fire, or arming, produced no notification; NULL when it did).
- A trigger on the rule table disarms a rule (`next_fire_at` NULL, `schedule_changed_at`
  now()) whenever its `trigger_config`, `trigger_type`, `publish_status` or `deactivated`
  changes, or it is inserted, whoever writes it: the API or another service's plain SQL. The
  scheduler arms it again at its next tick (docs/architecture.md, "Rules").
- `ix_ent_notification_rule_schedule`: the active CRON rules by `next_fire_at`, so that a tick
  reads the due (and the unarmed) rules without reading the others.
- `ent_notification.rule_fire_at` and the unique index on (`notification_rule_id`,
  `rule_fire_at`): one notification per rule and fire time, enforced by the database however
  many schedulers run. Partial (rows with a fire time only), so a trigger's insert does not
  touch it; built CONCURRENTLY outside the migration's transaction as in 0010, since building
  it reads the whole notification table.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

RULES = "notify.ent_notification_rule"
NOTIFICATIONS = "notify.ent_notification"
ACTIVE = "trigger_type = 'CRON' AND publish_status = 'PUBLISH' AND NOT deactivated"
FIRE_INDEX = "ux_ent_notification_rule_fire"


def upgrade() -> None:
    for column in (
        sa.Column("next_fire_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "schedule_changed_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("last_fired_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    ):
        op.add_column("ent_notification_rule", column, schema="notify")
    op.add_column(
        "ent_notification",
        sa.Column("rule_fire_at", sa.DateTime(timezone=True), nullable=True),
        schema="notify",
    )
    op.create_index(
        "ix_ent_notification_rule_schedule",
        "ent_notification_rule",
        ["next_fire_at"],
        schema="notify",
        postgresql_where=sa.text(ACTIVE),
    )
    op.execute(
        """
        CREATE FUNCTION notify.disarm_changed_rule() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP = 'INSERT'
               OR NEW.trigger_config IS DISTINCT FROM OLD.trigger_config
               OR NEW.trigger_type IS DISTINCT FROM OLD.trigger_type
               OR NEW.publish_status IS DISTINCT FROM OLD.publish_status
               OR NEW.deactivated IS DISTINCT FROM OLD.deactivated THEN
                NEW.next_fire_at := NULL;
                NEW.schedule_changed_at := now();
                NEW.last_error := NULL;
            END IF;
            RETURN NEW;
        END
        $$
        """
    )
    op.execute(
        f"CREATE TRIGGER disarm_changed_rule BEFORE INSERT OR UPDATE ON {RULES} "
        "FOR EACH ROW EXECUTE FUNCTION notify.disarm_changed_rule()"
    )
    with op.get_context().autocommit_block():
        invalid = op.get_bind().execute(
            sa.text(
                "SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
                " JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE n.nspname = 'notify' AND c.relname = :name AND NOT i.indisvalid"
            ),
            {"name": FIRE_INDEX},
        )
        if invalid.first() is not None:  # left by a build that failed
            op.execute(f"DROP INDEX CONCURRENTLY notify.{FIRE_INDEX}")
        op.execute(
            f"CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS {FIRE_INDEX} ON {NOTIFICATIONS} "
            "(notification_rule_id, rule_fire_at) WHERE rule_fire_at IS NOT NULL"
        )


def downgrade() -> None:
    op.execute(f"DROP INDEX IF EXISTS notify.{FIRE_INDEX}")
    op.execute(f"DROP TRIGGER IF EXISTS disarm_changed_rule ON {RULES}")
    op.execute("DROP FUNCTION IF EXISTS notify.disarm_changed_rule()")
    op.drop_index("ix_ent_notification_rule_schedule", "ent_notification_rule", schema="notify")
    op.drop_column("ent_notification", "rule_fire_at", schema="notify")
    for column in ("last_error", "last_fired_at", "schedule_changed_at", "next_fire_at"):
        op.drop_column("ent_notification_rule", column, schema="notify")
