"""status webhooks to enterprises: endpoints, the outbox of messages, and their attempts

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-27

- `webhook_endpoint`: an enterprise's receivers (URL, event types, signing secret kept in
  clear as Svix keeps it: signing needs it, and only the enterprise's own transactions see the
  row), with what decides when the workers disable it (docs/architecture.md, "Status
  webhooks").
- `webhook_message`: the outbox, one row per event and endpoint with a stable `msg_...` id
  (every attempt's `webhook-id`), its payload, and its retry state; `claim_id`/`locked_until`
  are a worker task's lease.
- `webhook_attempt`: each HTTP request of a message (status code, answer excerpt, duration,
  error).
- All three carry enterprise_id under the row-level security of migration 0003.
- `webhook_fan_out`: a statement-level trigger on the timeline (`ent_notification_event`,
  migration 0007) that writes one message per new event of a subscribed kind and per enabled
  endpoint of its enterprise subscribed to it, in the transaction (and at the end of the very
  statement) that appended the event: a state change and its webhooks commit together or not
  at all. A statement with no such event, or whose enterprises have no enabled endpoint,
  costs one probe of the new rows. SECURITY DEFINER (the owner's rights, a fixed
  search_path): events are appended by enterprise transactions (`xnovu_app`) and by system
  ones alike, and the function writes messages only for the inserted events' own enterprise.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

APP_ROLE = "xnovu_app"
CURRENT_ENTERPRISE = "nullif(current_setting('xnovu.enterprise_id', true), '')::uuid"
TABLES = ("webhook_endpoint", "webhook_message", "webhook_attempt")

# Timeline kind -> event type (shared/webhooks/events.py TIMELINE_KINDS; a test compares them).
KINDS = (
    ("sent", "notification.sent"),
    ("failed", "notification.failed"),
    ("retracted", "notification.retracted"),
    ("delivery.message.sent", "message.sent"),
    ("delivery.message.delivered", "message.delivered"),
    ("delivery.message.failed", "message.failed"),
    ("delivery.message.seen", "message.seen"),
    ("delivery.message.read", "message.read"),
)
# The delivery event's fields a message event carries (the timeline detail of
# shared/novu/delivery_events.py).
MESSAGE_FIELDS = (
    "channel",
    "subscriberId",
    "stepId",
    "providerId",
    "occurredAt",
    "errorId",
    "errorText",
)


def _fan_out_sql() -> str:
    kinds = ", ".join(f"('{kind}', '{event}')" for kind, event in KINDS)
    kind_list = ", ".join(f"'{kind}'" for kind, _ in KINDS)
    fields = ", ".join(f"'{field}'" for field in MESSAGE_FIELDS)
    return f"""
    CREATE FUNCTION notify.webhook_fan_out() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    BEGIN
        IF NOT EXISTS (
            SELECT 1 FROM new_events ev
            WHERE ev.kind IN ({kind_list})
              AND EXISTS (SELECT 1 FROM notify.webhook_endpoint e
                          WHERE e.enterprise_id = ev.enterprise_id AND e.enabled)
        ) THEN
            RETURN NULL;
        END IF;
        INSERT INTO notify.webhook_message
            (msg_id, enterprise_id, endpoint_id, event_type, notification_id, payload)
        SELECT 'msg_' || replace(gen_random_uuid()::text, '-', ''),
               ev.enterprise_id, e.id, k.event_type, ev.notification_id,
               jsonb_build_object(
                   'type', k.event_type,
                   'timestamp', to_jsonb(ev.created_at),
                   'data', jsonb_strip_nulls(jsonb_build_object(
                       'notificationId', n.id,
                       'transactionId', n.transaction_id,
                       'workflowId', n.workflow_key,
                       'enterpriseId', n.enterprise_id,
                       'status', CASE ev.kind WHEN 'sent' THEN 'SENT'
                                              WHEN 'failed' THEN 'FAILED'
                                              WHEN 'retracted' THEN 'RETRACTED'
                                              ELSE n.notification_status::text END,
                       'attempt', ev.attempt,
                       'error', CASE WHEN ev.kind = 'failed' THEN jsonb_strip_nulls(
                                    jsonb_build_object('code', ev.detail -> 'code',
                                                       'message', ev.detail -> 'message'))
                                END,
                       'reason', CASE WHEN ev.kind = 'retracted' THEN ev.detail -> 'reason' END
                   )) || CASE WHEN ev.kind LIKE 'delivery.%' THEN coalesce(
                       (SELECT jsonb_object_agg(d.key, d.value)
                        FROM jsonb_each(ev.detail) AS d(key, value)
                        WHERE d.key IN ({fields})),
                       '{{}}'::jsonb) ELSE '{{}}'::jsonb END
               )
        FROM new_events ev
        JOIN (VALUES {kinds}) AS k(kind, event_type) ON k.kind = ev.kind
        JOIN notify.webhook_endpoint e
          ON e.enterprise_id = ev.enterprise_id AND e.enabled
         AND k.event_type = ANY(e.event_types)
        JOIN notify.ent_notification n
          ON n.id = ev.notification_id AND n.enterprise_id = ev.enterprise_id
        ORDER BY ev.id, e.id;
        RETURN NULL;
    END
    $$
    """


def _created_at(name: str = "created_at") -> sa.Column[sa.DateTime]:
    return sa.Column(
        name, sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
    )


def upgrade() -> None:
    op.create_table(
        "webhook_endpoint",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("enterprise_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("event_types", postgresql.ARRAY(sa.Text()), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("secret", sa.Text(), nullable=False),
        sa.Column("previous_secret", sa.Text(), nullable=True),
        sa.Column("previous_secret_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("enabled", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("disabled_reason", sa.Text(), nullable=True),
        sa.Column("disabled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("failing_since", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "consecutive_failures", sa.Integer(), server_default=sa.text("0"), nullable=False
        ),
        _created_at(),
        _created_at("updated_at"),
        sa.CheckConstraint("char_length(url) <= 2048", name=op.f("ck_webhook_endpoint_url_length")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_endpoint")),
        schema="notify",
    )
    op.create_index(
        op.f("ix_webhook_endpoint_enterprise_id_id"),
        "webhook_endpoint",
        ["enterprise_id", "id"],
        schema="notify",
    )
    op.create_table(
        "webhook_message",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("msg_id", sa.Text(), nullable=False),
        sa.Column("enterprise_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("endpoint_id", sa.BigInteger(), nullable=False),
        sa.Column("event_type", sa.Text(), nullable=False),
        sa.Column("notification_id", sa.BigInteger(), nullable=True),
        sa.Column("payload", postgresql.JSONB(), nullable=False),
        sa.Column("status", sa.Text(), server_default=sa.text("'pending'"), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        _created_at("next_attempt_at"),
        sa.Column("claim_id", postgresql.UUID(as_uuid=True), nullable=True),
        sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True),
        _created_at(),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('pending', 'delivered', 'failed')",
            name=op.f("ck_webhook_message_status_known"),
        ),
        sa.ForeignKeyConstraint(
            ["endpoint_id"],
            ["notify.webhook_endpoint.id"],
            name=op.f("fk_webhook_message_endpoint_id_webhook_endpoint"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_message")),
        sa.UniqueConstraint("msg_id", name=op.f("uq_webhook_message_msg_id")),
        schema="notify",
    )
    op.create_index(
        "ix_webhook_message_pending_due",
        "webhook_message",
        ["endpoint_id", "next_attempt_at"],
        schema="notify",
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.create_index(
        "ix_webhook_message_claimed",
        "webhook_message",
        ["endpoint_id", "claim_id"],
        schema="notify",
        postgresql_where=sa.text("claim_id IS NOT NULL"),
    )
    op.create_index(
        op.f("ix_webhook_message_enterprise_id_notification_id"),
        "webhook_message",
        ["enterprise_id", "notification_id"],
        schema="notify",
    )
    op.create_table(
        "webhook_attempt",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("enterprise_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("endpoint_id", sa.BigInteger(), nullable=False),
        sa.Column("message_id", sa.BigInteger(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("attempted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("duration_ms", sa.Integer(), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("response_excerpt", sa.Text(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("succeeded", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["endpoint_id"],
            ["notify.webhook_endpoint.id"],
            name=op.f("fk_webhook_attempt_endpoint_id_webhook_endpoint"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["notify.webhook_message.id"],
            name=op.f("fk_webhook_attempt_message_id_webhook_message"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_attempt")),
        schema="notify",
    )
    op.create_index(
        op.f("ix_webhook_attempt_enterprise_id_endpoint_id_id"),
        "webhook_attempt",
        ["enterprise_id", "endpoint_id", sa.text("id DESC")],
        schema="notify",
    )
    op.create_index(
        op.f("ix_webhook_attempt_message_id"), "webhook_attempt", ["message_id"], schema="notify"
    )
    for table in TABLES:
        op.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON notify.{table} TO {APP_ROLE}")
        op.execute(f"ALTER TABLE notify.{table} ENABLE ROW LEVEL SECURITY")
        op.execute(
            f"CREATE POLICY enterprise_isolation ON notify.{table} TO {APP_ROLE} "
            f"USING (enterprise_id = {CURRENT_ENTERPRISE}) "
            f"WITH CHECK (enterprise_id = {CURRENT_ENTERPRISE})"
        )
    op.execute(f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA notify TO {APP_ROLE}")
    op.execute(_fan_out_sql())
    op.execute(
        "CREATE TRIGGER webhook_fan_out AFTER INSERT ON notify.ent_notification_event"
        " REFERENCING NEW TABLE AS new_events FOR EACH STATEMENT"
        " EXECUTE FUNCTION notify.webhook_fan_out()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS webhook_fan_out ON notify.ent_notification_event")
    op.execute("DROP FUNCTION IF EXISTS notify.webhook_fan_out()")
    for table in reversed(TABLES):
        op.drop_table(table, schema="notify")
