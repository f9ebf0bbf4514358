"""retention: finished notifications and their history removed after RETENTION_DAYS

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-27

- `ix_ent_notification_finished`: the finished (SENT, FAILED, RETRACTED) rows by creation
  time, so that the oldest of them are found without reading the others. A row enters it
  when it finishes, in the statement that finishes it.
- `notify.purge_finished(cutoff, batch)`: removes up to `batch` finished notifications
  created, finished and due before `cutoff`, with their timeline events and their finished
  status webhook messages (and so those messages' attempts), in one statement, skipping rows
  another transaction holds; answers how many notifications it removed. A webhook message
  still pending is left to finish (its notification's id is only a number there). The timeline is
  append-only for the roles the services connect as (migration 0007), so the function runs
  with its owner's rights (SECURITY DEFINER, with a fixed search_path), and is the one way
  they can delete history: it refuses a cutoff less than a day old or a batch over 10,000.
  Rows that reference a notification with ON DELETE CASCADE go with it.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FINISHED = "notification_status IN ('SENT', 'FAILED', 'RETRACTED')"
SERVICE_ROLE = "xnovu_service"


def upgrade() -> None:
    op.create_index(
        "ix_ent_notification_finished",
        "ent_notification",
        ["created_at"],
        schema="notify",
        postgresql_where=sa.text(FINISHED),
    )
    op.execute(
        f"""
        CREATE FUNCTION notify.purge_finished(cutoff timestamptz, batch integer)
        RETURNS integer
        LANGUAGE plpgsql
        SECURITY DEFINER
        SET search_path = pg_catalog, pg_temp
        AS $$
        DECLARE
            removed integer;
        BEGIN
            IF cutoff > now() - interval '1 day' THEN
                RAISE EXCEPTION 'retention keeps at least a day of notifications'
                    USING ERRCODE = 'invalid_parameter_value';
            END IF;
            IF batch < 1 OR batch > 10000 THEN
                RAISE EXCEPTION 'a purge batch is 1 to 10000 notifications'
                    USING ERRCODE = 'invalid_parameter_value';
            END IF;
            WITH doomed AS (
                SELECT id, enterprise_id
                FROM notify.ent_notification
                WHERE {FINISHED}
                  AND created_at < cutoff
                  AND updated_at < cutoff
                  AND coalesce(scheduled_for, created_at) < cutoff
                ORDER BY created_at
                LIMIT batch
                FOR UPDATE SKIP LOCKED
            ), events AS (
                DELETE FROM notify.ent_notification_event AS e
                USING doomed
                WHERE e.enterprise_id = doomed.enterprise_id
                  AND e.notification_id = doomed.id
            ), hooks AS (
                DELETE FROM notify.webhook_message AS w
                USING doomed
                WHERE w.enterprise_id = doomed.enterprise_id
                  AND w.notification_id = doomed.id
                  AND w.status <> 'pending'
            ), gone AS (
                DELETE FROM notify.ent_notification AS n
                USING doomed
                WHERE n.id = doomed.id
                RETURNING 1
            )
            SELECT count(*) INTO removed FROM gone;
            RETURN removed;
        END
        $$
        """
    )
    op.execute("REVOKE ALL ON FUNCTION notify.purge_finished(timestamptz, integer) FROM PUBLIC")
    op.execute(
        f"""
        DO $$
        BEGIN
            IF EXISTS (SELECT FROM pg_roles WHERE rolname = '{SERVICE_ROLE}') THEN
                GRANT EXECUTE ON FUNCTION notify.purge_finished(timestamptz, integer)
                    TO {SERVICE_ROLE};
            END IF;
        END $$;
        """
    )


def downgrade() -> None:
    op.execute("DROP FUNCTION notify.purge_finished(timestamptz, integer)")
    op.drop_index("ix_ent_notification_finished", "ent_notification", schema="notify")
