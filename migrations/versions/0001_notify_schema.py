"""notify schema

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _enum(name: str, *values: str) -> postgresql.ENUM:
    return postgresql.ENUM(*values, name=name, schema=SCHEMA, create_type=False)


SCHEMA = "notify"
PUBLISH_STATUS = _enum("publish_status", "NONE", "DRAFT", "DISCARD", "PUBLISH", "DELETED", "REVIEW")
CHANNEL_TYPE = _enum("channel_type", "EMAIL", "IN_APP", "SMS", "PUSH", "CHAT")
WORKFLOW_TYPE = _enum("workflow_type", "STATIC", "DYNAMIC")
TRIGGER_TYPE = _enum("trigger_type", "CRON")
NOTIFICATION_STATUS = _enum(
    "notification_status", "PENDING", "PROCESSING", "SENT", "FAILED", "RETRACTED"
)
API_KEY_SCOPE = _enum("api_key_scope", "enterprise", "service")
ENUMS = (
    PUBLISH_STATUS,
    CHANNEL_TYPE,
    WORKFLOW_TYPE,
    TRIGGER_TYPE,
    NOTIFICATION_STATUS,
    API_KEY_SCOPE,
)


def _audited_columns() -> list[sa.Column[object]]:
    """The columns every XNovu table carries."""
    return [
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("name", sa.Text(), nullable=True),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("publish_status", PUBLISH_STATUS, server_default="NONE", nullable=False),
        sa.Column("deactivated", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("enterprise_id", sa.UUID(), nullable=True),
        sa.Column("business_id", sa.Text(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("created_by", sa.Text(), nullable=True),
        sa.Column("updated_by", sa.Text(), nullable=True),
    ]


def upgrade() -> None:
    op.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
    bind = op.get_bind()
    for enum in ENUMS:
        enum.create(bind, checkfirst=True)
    op.create_table(
        "ent_api_key",
        sa.Column("key_prefix", sa.Text(), nullable=False),
        sa.Column("key_hash", sa.Text(), nullable=False),
        sa.Column("scope", API_KEY_SCOPE, nullable=False),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        *_audited_columns(),
        sa.CheckConstraint(
            "(scope = 'enterprise' AND enterprise_id IS NOT NULL) OR scope = 'service'",
            name=op.f("ck_ent_api_key_enterprise_scope_has_enterprise"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ent_api_key")),
        sa.UniqueConstraint("key_hash", name=op.f("uq_ent_api_key_key_hash")),
        schema="notify",
    )
    op.create_index(
        op.f("ix_ent_api_key_enterprise_id"),
        "ent_api_key",
        ["enterprise_id"],
        unique=False,
        schema="notify",
    )
    op.create_table(
        "ent_notification_template",
        sa.Column("template_key", sa.Text(), nullable=False),
        sa.Column("channel_type", CHANNEL_TYPE, nullable=False),
        sa.Column("subject_template", sa.Text(), nullable=True),
        sa.Column("body_template", sa.Text(), nullable=False),
        sa.Column("variables_description", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        *_audited_columns(),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ent_notification_template")),
        sa.UniqueConstraint(
            "enterprise_id",
            "template_key",
            name=op.f("uq_ent_notification_template_enterprise_id_template_key"),
        ),
        schema="notify",
    )
    op.create_index(
        op.f("ix_ent_notification_template_enterprise_id_channel_type"),
        "ent_notification_template",
        ["enterprise_id", "channel_type"],
        unique=False,
        schema="notify",
    )
    op.create_table(
        "ent_notification_workflow",
        sa.Column("workflow_key", sa.Text(), nullable=False),
        sa.Column("workflow_type", WORKFLOW_TYPE, nullable=False),
        sa.Column(
            "default_channels",
            postgresql.ARRAY(CHANNEL_TYPE),
            server_default=sa.text("'{}'"),
            nullable=False,
        ),
        sa.Column("template_overrides", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("payload_schema", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("control_schema", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("tags", postgresql.ARRAY(sa.Text()), nullable=True),
        *_audited_columns(),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ent_notification_workflow")),
        sa.UniqueConstraint(
            "enterprise_id",
            "workflow_key",
            name=op.f("uq_ent_notification_workflow_enterprise_id_workflow_key"),
            postgresql_nulls_not_distinct=True,
        ),
        schema="notify",
    )
    op.create_index(
        op.f("ix_ent_notification_workflow_enterprise_id_publish_status_workflow_type"),
        "ent_notification_workflow",
        ["enterprise_id", "publish_status", "workflow_type"],
        unique=False,
        schema="notify",
    )
    op.create_table(
        "ent_notification_rule",
        sa.Column("notification_workflow_id", sa.BigInteger(), nullable=False),
        sa.Column("trigger_type", TRIGGER_TYPE, nullable=False),
        sa.Column("trigger_config", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("rule_payload", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        *_audited_columns(),
        sa.ForeignKeyConstraint(
            ["notification_workflow_id"],
            ["notify.ent_notification_workflow.id"],
            name=op.f(
                "fk_ent_notification_rule_notification_workflow_id_ent_notification_workflow"
            ),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ent_notification_rule")),
        schema="notify",
    )
    op.create_index(
        op.f("ix_ent_notification_rule_enterprise_id_notification_workflow_id"),
        "ent_notification_rule",
        ["enterprise_id", "notification_workflow_id"],
        unique=False,
        schema="notify",
    )
    op.create_table(
        "ent_notification",
        sa.Column("notification_workflow_id", sa.BigInteger(), nullable=True),
        sa.Column("notification_rule_id", sa.BigInteger(), nullable=True),
        sa.Column("workflow_key", sa.Text(), nullable=False),
        sa.Column(
            "notification_status", NOTIFICATION_STATUS, server_default="PENDING", nullable=False
        ),
        sa.Column("payload", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("recipients", postgresql.ARRAY(sa.Text()), nullable=False),
        sa.Column("channels", postgresql.ARRAY(CHANNEL_TYPE), nullable=True),
        sa.Column("overrides", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("tags", postgresql.ARRAY(sa.Text()), nullable=True),
        sa.Column("transaction_id", sa.Text(), nullable=False),
        sa.Column("scheduled_for", sa.DateTime(timezone=True), nullable=True),
        sa.Column("processed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("retracted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("retraction_reason", sa.Text(), nullable=True),
        sa.Column("error_details", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("idempotency_key", sa.Text(), nullable=True),
        sa.Column("request_fingerprint", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("enqueued_at", sa.DateTime(timezone=True), nullable=True),
        *_audited_columns(),
        sa.CheckConstraint("attempts >= 0", name=op.f("ck_ent_notification_attempts_non_negative")),
        sa.CheckConstraint(
            "enterprise_id IS NOT NULL", name=op.f("ck_ent_notification_enterprise_required")
        ),
        sa.ForeignKeyConstraint(
            ["notification_rule_id"],
            ["notify.ent_notification_rule.id"],
            name=op.f("fk_ent_notification_notification_rule_id_ent_notification_rule"),
        ),
        sa.ForeignKeyConstraint(
            ["notification_workflow_id"],
            ["notify.ent_notification_workflow.id"],
            name=op.f("fk_ent_notification_notification_workflow_id_ent_notification_workflow"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ent_notification")),
        sa.UniqueConstraint(
            "enterprise_id",
            "idempotency_key",
            name=op.f("uq_ent_notification_enterprise_id_idempotency_key"),
        ),
        sa.UniqueConstraint("transaction_id", name=op.f("uq_ent_notification_transaction_id")),
        schema="notify",
    )
    op.create_index(
        "ix_ent_notification_enterprise_id_desc",
        "ent_notification",
        ["enterprise_id", sa.literal_column("id DESC")],
        unique=False,
        schema="notify",
    )
    op.create_index(
        "ix_ent_notification_enterprise_status_id",
        "ent_notification",
        ["enterprise_id", "notification_status", sa.literal_column("id DESC")],
        unique=False,
        schema="notify",
    )
    op.create_index(
        "ix_ent_notification_enterprise_workflow_id",
        "ent_notification",
        ["enterprise_id", "workflow_key", sa.literal_column("id DESC")],
        unique=False,
        schema="notify",
    )
    op.create_index(
        "ix_ent_notification_pending_enqueued",
        "ent_notification",
        ["enqueued_at"],
        unique=False,
        schema="notify",
        postgresql_where=sa.text("notification_status = 'PENDING'"),
    )
    op.create_index(
        "ix_ent_notification_processing_lease",
        "ent_notification",
        ["locked_until"],
        unique=False,
        schema="notify",
        postgresql_where=sa.text("notification_status = 'PROCESSING'"),
    )
    op.create_index(
        "ix_ent_notification_scheduled_due",
        "ent_notification",
        ["scheduled_for"],
        unique=False,
        schema="notify",
        postgresql_where=sa.text(
            "notification_status = 'PENDING' AND scheduled_for IS NOT NULL AND enqueued_at IS NULL"
        ),
    )


def downgrade() -> None:
    op.drop_index(
        "ix_ent_notification_scheduled_due",
        table_name="ent_notification",
        schema="notify",
        postgresql_where=sa.text(
            "notification_status = 'PENDING' AND scheduled_for IS NOT NULL AND enqueued_at IS NULL"
        ),
    )
    op.drop_index(
        "ix_ent_notification_processing_lease",
        table_name="ent_notification",
        schema="notify",
        postgresql_where=sa.text("notification_status = 'PROCESSING'"),
    )
    op.drop_index(
        "ix_ent_notification_pending_enqueued",
        table_name="ent_notification",
        schema="notify",
        postgresql_where=sa.text("notification_status = 'PENDING'"),
    )
    op.drop_index(
        "ix_ent_notification_enterprise_workflow_id", table_name="ent_notification", schema="notify"
    )
    op.drop_index(
        "ix_ent_notification_enterprise_status_id", table_name="ent_notification", schema="notify"
    )
    op.drop_index(
        "ix_ent_notification_enterprise_id_desc", table_name="ent_notification", schema="notify"
    )
    op.drop_table("ent_notification", schema="notify")
    op.drop_index(
        op.f("ix_ent_notification_rule_enterprise_id_notification_workflow_id"),
        table_name="ent_notification_rule",
        schema="notify",
    )
    op.drop_table("ent_notification_rule", schema="notify")
    op.drop_index(
        op.f("ix_ent_notification_workflow_enterprise_id_publish_status_workflow_type"),
        table_name="ent_notification_workflow",
        schema="notify",
    )
    op.drop_table("ent_notification_workflow", schema="notify")
    op.drop_index(
        op.f("ix_ent_notification_template_enterprise_id_channel_type"),
        table_name="ent_notification_template",
        schema="notify",
    )
    op.drop_table("ent_notification_template", schema="notify")
    op.drop_index(op.f("ix_ent_api_key_enterprise_id"), table_name="ent_api_key", schema="notify")
    op.drop_table("ent_api_key", schema="notify")
    bind = op.get_bind()
    for enum in ENUMS:
        enum.drop(bind, checkfirst=True)
