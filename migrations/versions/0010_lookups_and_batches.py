"""notification lookups and bulk batches (issue 13, part H4)

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-27

- `ent_notification.batch_id`: the id `POST /api/trigger/bulk` answers as `batchId`, on every
  row that request created (NULL for single triggers). A plain nullable column: the
  row-level security policies of migration 0003 cover it.
- `ent_notification_key`: one row per recipient (`r:<subscriberId or topicKey>`) and per tag
  (`t:<tag>`) of each notification, keyed (enterprise_id, key, notification_id), so that a
  lookup by recipient or tag reads its enterprise's matching ids newest first from a b-tree
  and stops at the page's end (docs/architecture.md, "Listing and lookups"). Not a GIN index
  on the arrays: under row-level security PostgreSQL may not use an index for `@>`, which is
  not leakproof (it would scan the enterprise's rows), while b-tree equality is. Kept by
  statement-level triggers on `ent_notification` from its transition tables: one INSERT of
  the keys per statement that inserts notifications, whatever its rows (every path that
  records notifications fills it; recipients and tags never change afterwards), one DELETE
  per statement that deletes some (retention, migration 0011). Not a foreign key with ON
  DELETE CASCADE: that checks each key row on the insert path. Row-level security as the
  other tables. Existing rows are backfilled here, in the migration's transaction: inserts
  into `ent_notification` wait for it (about 20 s per million notifications on a 2-core
  machine; 1.4 million with 2.1 million keys took 26 s).
- Indexes for created-at ranges and batches, within the enterprise. A lookup by
  transactionId uses the existing unique index on `transaction_id`.

Those two indexes are built CONCURRENTLY, outside the migration's transaction (Alembic's
autocommit block): on a table of millions of rows a plain CREATE INDEX blocks every trigger
and delivery for as long as the build takes, CONCURRENTLY blocks none. Its price: what came
before is committed first, and a build that fails leaves an INVALID index behind, which the
next run drops and builds again.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

APP_ROLE = "xnovu_app"
NOTIFICATIONS = "notify.ent_notification"
KEYS = "notify.ent_notification_key"
CURRENT_ENTERPRISE = "nullif(current_setting('xnovu.enterprise_id', true), '')::uuid"

# The keys of the notifications in the transition table `changed`, each once.
_KEYS_OF_CHANGED = """
    SELECT DISTINCT c.enterprise_id, k.key, c.id
    FROM changed AS c
    CROSS JOIN LATERAL (
        SELECT 'r:' || r FROM unnest(c.recipients) AS r
        UNION ALL
        SELECT 't:' || t FROM unnest(c.tags) AS t
    ) AS k(key)
"""

# Must read as shared/db/models.py's Notification.__table_args__ declare them.
INDEXES = {
    "ix_ent_notification_enterprise_created": "(enterprise_id, created_at)",
    "ix_ent_notification_enterprise_batch": "(enterprise_id, batch_id) WHERE batch_id IS NOT NULL",
}


def upgrade() -> None:
    op.execute(f"ALTER TABLE {NOTIFICATIONS} ADD COLUMN IF NOT EXISTS batch_id uuid")
    op.create_table(
        "ent_notification_key",
        sa.Column("enterprise_id", sa.UUID(), nullable=False),
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("notification_id", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(
            "enterprise_id", "key", "notification_id", name=op.f("pk_ent_notification_key")
        ),
        schema="notify",
        if_not_exists=True,
    )
    op.execute(f"GRANT SELECT, INSERT ON {KEYS} TO {APP_ROLE}")
    op.execute(f"ALTER TABLE {KEYS} ENABLE ROW LEVEL SECURITY")
    op.execute(f"DROP POLICY IF EXISTS enterprise_isolation ON {KEYS}")
    op.execute(
        f"CREATE POLICY enterprise_isolation ON {KEYS} TO {APP_ROLE} "
        f"USING (enterprise_id = {CURRENT_ENTERPRISE}) "
        f"WITH CHECK (enterprise_id = {CURRENT_ENTERPRISE})"
    )
    op.execute(
        f"""
        CREATE OR REPLACE FUNCTION notify.maintain_notification_keys() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP = 'INSERT' THEN
                INSERT INTO {KEYS} (enterprise_id, key, notification_id) {_KEYS_OF_CHANGED};
            ELSE
                DELETE FROM {KEYS} AS k USING ({_KEYS_OF_CHANGED}) AS d(enterprise_id, key, id)
                WHERE k.enterprise_id = d.enterprise_id AND k.key = d.key
                  AND k.notification_id = d.id;
            END IF;
            RETURN NULL;
        END $$
        """
    )
    for event, table in (("INSERT", "NEW"), ("DELETE", "OLD")):
        name = f"notification_keys_on_{event.lower()}"
        op.execute(f"DROP TRIGGER IF EXISTS {name} ON {NOTIFICATIONS}")
        op.execute(
            f"CREATE TRIGGER {name} AFTER {event} ON {NOTIFICATIONS} "
            f"REFERENCING {table} TABLE AS changed FOR EACH STATEMENT "
            "EXECUTE FUNCTION notify.maintain_notification_keys()"
        )
    backfill = _KEYS_OF_CHANGED.replace("FROM changed AS c", f"FROM {NOTIFICATIONS} AS c")
    op.execute(
        f"INSERT INTO {KEYS} (enterprise_id, key, notification_id) {backfill}"
        " ON CONFLICT DO NOTHING"
    )
    with op.get_context().autocommit_block():
        for name, definition in INDEXES.items():
            invalid = op.get_bind().execute(
                sa.text(
                    "SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
                    " JOIN pg_namespace n ON n.oid = c.relnamespace"
                    " WHERE n.nspname = 'notify' AND c.relname = :name AND NOT i.indisvalid"
                ),
                {"name": name},
            )
            if invalid.first() is not None:  # left by a build that failed
                op.execute(f"DROP INDEX CONCURRENTLY notify.{name}")
            op.execute(
                f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {name} ON {NOTIFICATIONS} {definition}"
            )


def downgrade() -> None:
    for name in INDEXES:
        op.execute(f"DROP INDEX IF EXISTS notify.{name}")
    for event in ("insert", "delete"):
        op.execute(f"DROP TRIGGER IF EXISTS notification_keys_on_{event} ON {NOTIFICATIONS}")
    op.execute("DROP FUNCTION IF EXISTS notify.maintain_notification_keys()")
    op.execute(f"DROP TABLE IF EXISTS {KEYS}")
    op.execute(f"ALTER TABLE {NOTIFICATIONS} DROP COLUMN IF EXISTS batch_id")
