"""Typed SQLAlchemy models of the `notify` schema (created by Alembic only)."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Enum,
    ForeignKey,
    Identity,
    Index,
    Integer,
    MetaData,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from shared.db.enums import (
    ApiKeyScope,
    ChannelType,
    NotificationStatus,
    PublishStatus,
    TriggerType,
    WorkflowType,
)

SCHEMA = "notify"

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def _pg_enum(enum_cls: type[Any], name: str) -> Enum:
    return Enum(
        enum_cls,
        name=name,
        schema=SCHEMA,
        values_callable=lambda members: [m.value for m in members],
        create_type=False,
    )


publish_status_enum = _pg_enum(PublishStatus, "publish_status")
channel_type_enum = _pg_enum(ChannelType, "channel_type")
workflow_type_enum = _pg_enum(WorkflowType, "workflow_type")
trigger_type_enum = _pg_enum(TriggerType, "trigger_type")
notification_status_enum = _pg_enum(NotificationStatus, "notification_status")
api_key_scope_enum = _pg_enum(ApiKeyScope, "api_key_scope")


class Base(DeclarativeBase):
    metadata = MetaData(schema=SCHEMA, naming_convention=NAMING_CONVENTION)


class AuditedRow:
    """The columns every XNovu table carries."""

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=False), primary_key=True)
    name: Mapped[str | None] = mapped_column(Text)
    description: Mapped[str | None] = mapped_column(Text)
    publish_status: Mapped[PublishStatus] = mapped_column(
        publish_status_enum, nullable=False, server_default=PublishStatus.NONE.value
    )
    deactivated: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("false"))
    enterprise_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    business_id: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
    updated_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now(), onupdate=func.now()
    )
    created_by: Mapped[str | None] = mapped_column(Text)
    updated_by: Mapped[str | None] = mapped_column(Text)


class NotificationTemplate(AuditedRow, Base):
    __tablename__ = "ent_notification_template"
    __table_args__ = (
        UniqueConstraint("enterprise_id", "template_key"),
        Index(None, "enterprise_id", "channel_type"),
        # Migration 0014: undefined variables fail (strict) or print "" (blank, the original's).
        CheckConstraint("undefined_mode IN ('strict', 'blank')", name="undefined_mode_known"),
        CheckConstraint("jsonb_typeof(locales) IN ('object', 'null')", name="locales_object"),
    )

    template_key: Mapped[str] = mapped_column(Text, nullable=False)
    channel_type: Mapped[ChannelType] = mapped_column(channel_type_enum, nullable=False)
    subject_template: Mapped[str | None] = mapped_column(Text)
    body_template: Mapped[str] = mapped_column(Text, nullable=False)
    variables_description: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    undefined_mode: Mapped[str] = mapped_column(Text, nullable=False, server_default="strict")
    # Variants by locale tag: {"fr": {"subject_template": ..., "body_template": ...}}.
    locales: Mapped[dict[str, Any] | None] = mapped_column(JSONB(none_as_null=True))


class NotificationWorkflow(AuditedRow, Base):
    __tablename__ = "ent_notification_workflow"
    __table_args__ = (
        # Static rows carry enterprise_id NULL; the key is still unique among them.
        UniqueConstraint("enterprise_id", "workflow_key", postgresql_nulls_not_distinct=True),
        Index(None, "enterprise_id", "publish_status", "workflow_type"),
        CheckConstraint(
            "delay_seconds IS NULL OR delay_seconds BETWEEN 1 AND 2592000",
            name="delay_seconds_range",
        ),
    )

    workflow_key: Mapped[str] = mapped_column(Text, nullable=False)
    workflow_type: Mapped[WorkflowType] = mapped_column(workflow_type_enum, nullable=False)
    default_channels: Mapped[list[ChannelType]] = mapped_column(
        ARRAY(channel_type_enum), nullable=False, server_default=text("'{}'")
    )
    template_overrides: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    payload_schema: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    control_schema: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    tags: Mapped[list[str] | None] = mapped_column(ARRAY(Text))
    # A delay step before the channel steps (dynamic workflows; 1 s to 30 days, migration 0004).
    delay_seconds: Mapped[int | None] = mapped_column(Integer)


class NotificationRule(AuditedRow, Base):
    __tablename__ = "ent_notification_rule"
    __table_args__ = (
        Index(None, "enterprise_id", "notification_workflow_id"),
        # The scheduler's tick: active CRON rules due or not armed yet (migration 0012).
        Index(
            "ix_ent_notification_rule_schedule",
            "next_fire_at",
            postgresql_where=text(
                "trigger_type = 'CRON' AND publish_status = 'PUBLISH' AND NOT deactivated"
            ),
        ),
    )

    notification_workflow_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("ent_notification_workflow.id"), nullable=False
    )
    trigger_type: Mapped[TriggerType] = mapped_column(trigger_type_enum, nullable=False)
    trigger_config: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    rule_payload: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    # The scheduler's (shared/rules/scheduler.py); a change of schedule or status, by anyone,
    # sets next_fire_at NULL and schedule_changed_at now() (a trigger of migration 0012).
    next_fire_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    schedule_changed_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
    last_fired_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    last_error: Mapped[dict[str, Any] | None] = mapped_column(JSONB)


class Notification(AuditedRow, Base):
    __tablename__ = "ent_notification"
    __table_args__ = (
        UniqueConstraint("transaction_id"),
        UniqueConstraint("enterprise_id", "idempotency_key"),
        CheckConstraint("enterprise_id IS NOT NULL", name="enterprise_required"),
        CheckConstraint("attempts >= 0", name="attempts_non_negative"),
        # Hot API queries: keyset pages, optionally by status or workflow.
        Index("ix_ent_notification_enterprise_id_desc", "enterprise_id", text("id DESC")),
        Index(
            "ix_ent_notification_enterprise_status_id",
            "enterprise_id",
            "notification_status",
            text("id DESC"),
        ),
        Index(
            "ix_ent_notification_enterprise_workflow_id",
            "enterprise_id",
            "workflow_key",
            text("id DESC"),
        ),
        # Lookups by created-at range and by batch (migration 0010; recipients and tags:
        # NotificationKey).
        Index("ix_ent_notification_enterprise_created", "enterprise_id", "created_at"),
        Index(
            "ix_ent_notification_enterprise_batch",
            "enterprise_id",
            "batch_id",
            postgresql_where=text("batch_id IS NOT NULL"),
        ),
        # Retention (migration 0011): the finished rows, oldest first.
        Index(
            "ix_ent_notification_finished",
            "created_at",
            postgresql_where=text("notification_status IN ('SENT', 'FAILED', 'RETRACTED')"),
        ),
        # Reconciler: PENDING rows not enqueued recently, PROCESSING rows whose lease ran out.
        Index(
            "ix_ent_notification_pending_enqueued",
            "enqueued_at",
            postgresql_where=text("notification_status = 'PENDING'"),
        ),
        Index(
            "ix_ent_notification_processing_lease",
            "locked_until",
            postgresql_where=text("notification_status = 'PROCESSING'"),
        ),
        # One notification per rule and fire time (migration 0012).
        Index(
            "ux_ent_notification_rule_fire",
            "notification_rule_id",
            "rule_fire_at",
            unique=True,
            postgresql_where=text("rule_fire_at IS NOT NULL"),
        ),
        # Scheduled release: PENDING rows with a due date not yet published.
        Index(
            "ix_ent_notification_scheduled_due",
            "scheduled_for",
            postgresql_where=text(
                "notification_status = 'PENDING' AND scheduled_for IS NOT NULL"
                " AND enqueued_at IS NULL"
            ),
        ),
    )

    notification_workflow_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("ent_notification_workflow.id")
    )
    notification_rule_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("ent_notification_rule.id")
    )
    # The key the caller triggered; static workflows have no row to point at.
    workflow_key: Mapped[str] = mapped_column(Text, nullable=False)
    notification_status: Mapped[NotificationStatus] = mapped_column(
        notification_status_enum, nullable=False, server_default=NotificationStatus.PENDING.value
    )
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    # subscriberIds (and topicKeys); the recipients as given when any is an object or a topic.
    recipients: Mapped[list[str]] = mapped_column(ARRAY(Text), nullable=False)
    recipient_objects: Mapped[list[Any] | None] = mapped_column(JSONB)
    channels: Mapped[list[ChannelType] | None] = mapped_column(ARRAY(channel_type_enum))
    overrides: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    tags: Mapped[list[str] | None] = mapped_column(ARRAY(Text))
    # Intake writes its own; a row another service inserts gets one from the default.
    transaction_id: Mapped[str] = mapped_column(
        Text, nullable=False, server_default=text("'xn-' || gen_random_uuid()")
    )
    scheduled_for: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    processed_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    retracted_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    retraction_reason: Mapped[str | None] = mapped_column(Text)
    error_details: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    idempotency_key: Mapped[str | None] = mapped_column(Text)
    request_fingerprint: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    next_attempt_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    locked_until: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    enqueued_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    # Since when Novu may hold the event without our knowing: an attempt was sent and its answer
    # lost (migration 0006). A cancel must then ask Novu; cleared once Novu accepted it (SENT).
    outcome_unknown_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    # Channels rendered with default content because their template was missing.
    render_fallbacks: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONB)
    # The bulk request that created it (its `batchId`); NULL for a single trigger.
    batch_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    # The fire time of the rule (notification_rule_id) that created it.
    rule_fire_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    # False on a row another service inserted (not through intake): the claim checks it
    # against its workflow first (migration 0013; docs/architecture.md, "Rows written by other
    # services").
    intake_checked: Mapped[bool] = mapped_column(
        Boolean, nullable=False, server_default=text("false")
    )
    # The original XNovu's columns, kept so that its inserts work; XNovu does not use them.
    typ_notification_category_id: Mapped[int | None] = mapped_column(BigInteger)
    typ_notification_priority_id: Mapped[int | None] = mapped_column(BigInteger)
    workflow_version: Mapped[int | None] = mapped_column(Integer, server_default=text("1"))


class NotificationEvent(Base):
    """One entry of a notification's timeline (migration 0007; the kinds are listed in
    shared/notifications/timeline.py). Append-only: enterprises may insert and read them."""

    __tablename__ = "ent_notification_event"
    __table_args__ = (
        Index(None, "enterprise_id", "notification_id", "id"),
        CheckConstraint(
            "kind ~ '^[a-z][a-z0-9_]*([.][a-z0-9_]+)*$' AND length(kind) <= 64",
            name="kind_format",
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=False), primary_key=True)
    enterprise_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), nullable=False)
    notification_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    # The database's clock when the row was written (clock_timestamp: events of one
    # transaction differ).
    created_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.clock_timestamp()
    )
    kind: Mapped[str] = mapped_column(Text, nullable=False)
    attempt: Mapped[int | None] = mapped_column(Integer)
    detail: Mapped[dict[str, Any] | None] = mapped_column(JSONB)


class NotificationKey(Base):
    """A recipient (`r:<subscriberId or topicKey>`) or tag (`t:<tag>`) of a notification, for
    lookups by either: a b-tree that row-level security lets PostgreSQL use, newest first.
    Kept by triggers on ent_notification (inserted with each notification, deleted with it),
    never by the service (migration 0010)."""

    __tablename__ = "ent_notification_key"

    enterprise_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    key: Mapped[str] = mapped_column(Text, primary_key=True)
    notification_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)

    @staticmethod
    def of_recipient(recipient: str) -> str:
        """The key of a subscriberId or topicKey among a notification's recipients."""
        return f"r:{recipient}"

    @staticmethod
    def of_tag(tag: str) -> str:
        """The key of a notification's tag."""
        return f"t:{tag}"


class RegistryGeneration(Base):
    """Bumped by a reload: every process drops its cached workflows and templates of that
    enterprise when it sees a newer generation (checked every few seconds)."""

    __tablename__ = "registry_generation"

    enterprise_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    generation: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default=text("1"))
    updated_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )


class ApiKey(AuditedRow, Base):
    __tablename__ = "ent_api_key"
    __table_args__ = (
        UniqueConstraint("key_hash"),
        CheckConstraint(
            "(scope = 'enterprise' AND enterprise_id IS NOT NULL) OR scope = 'service'",
            name="enterprise_scope_has_enterprise",
        ),
        Index(None, "enterprise_id"),
    )

    # First characters of the key, shown in listings so a key can be recognised; never the key.
    key_prefix: Mapped[str] = mapped_column(Text, nullable=False)
    key_hash: Mapped[str] = mapped_column(Text, nullable=False)
    scope: Mapped[ApiKeyScope] = mapped_column(api_key_scope_enum, nullable=False)
    last_used_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


class NovuWorkflowSync(Base):
    """What Novu knows of one workflow key, from our syncs (docs/architecture.md, "Novu").

    Novu's workflow ids are global to its environment, so there is one row per key, whichever
    enterprises use it. `synced_at` and `discover_hash` (of the workflow's discover entry) are
    those of the last sync that registered it; `last_error` is the last attempt's failure,
    cleared by the next success. A key no longer declared loses its row when Novu drops it."""

    __tablename__ = "novu_workflow_sync"

    workflow_key: Mapped[str] = mapped_column(Text, primary_key=True)
    discover_hash: Mapped[str | None] = mapped_column(Text)
    synced_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    last_attempt_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    last_error: Mapped[str | None] = mapped_column(Text)


class NovuSyncRun(Base):
    """One sync with Novu: why, where to, what the discover document hashed to, and its error
    (NULL when Novu took it). The latest successful run tells beat whether to sync again."""

    __tablename__ = "novu_sync_run"

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=False), primary_key=True)
    reason: Mapped[str] = mapped_column(Text, nullable=False)
    started_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    finished_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
    novu_api_url: Mapped[str] = mapped_column(Text, nullable=False)
    bridge_url: Mapped[str] = mapped_column(Text, nullable=False)
    discover_hash: Mapped[str] = mapped_column(Text, nullable=False)
    workflow_keys: Mapped[list[str]] = mapped_column(ARRAY(Text), nullable=False)
    error: Mapped[str | None] = mapped_column(Text)


class NovuDeliveryEvent(Base):
    """One of Novu's message webhooks (`message.sent`, `message.failed`, ...) about a
    notification of ours (migration 0008, shared/novu/webhooks.py). `svix_id` is unique: a
    webhook delivered twice is recorded once. Enterprises may insert and read their own."""

    __tablename__ = "novu_delivery_event"
    __table_args__ = (
        UniqueConstraint("svix_id"),
        Index(None, "notification_id", "id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=False), primary_key=True)
    enterprise_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), nullable=False)
    # Its rows go with the notification (retention).
    notification_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("ent_notification.id", ondelete="CASCADE"), nullable=False
    )
    svix_id: Mapped[str] = mapped_column(Text, nullable=False)
    event_type: Mapped[str] = mapped_column(Text, nullable=False)
    channel: Mapped[str | None] = mapped_column(Text)
    # The caller's subscriberId (without the enterprise's namespace prefix).
    subscriber_id: Mapped[str | None] = mapped_column(Text)
    step_id: Mapped[str | None] = mapped_column(Text)
    provider_id: Mapped[str | None] = mapped_column(Text)
    novu_message_id: Mapped[str | None] = mapped_column(Text)
    # When it happened by Novu's clock (the event's timestamp); received_at is ours.
    occurred_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    received_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
    detail: Mapped[dict[str, Any] | None] = mapped_column(JSONB)


class WebhookEndpoint(Base):
    """An enterprise's receiver of status webhooks (docs/architecture.md, "Status webhooks").

    `secret` is kept in clear, as Svix keeps its endpoints' secrets: signing needs it, and the
    row is the enterprise's own (row-level security); the API shows it only when it is made.
    `previous_secret` still signs until `previous_secret_expires_at` after a rotation.
    `failing_since` (first failed attempt since the last success) and `consecutive_failures`
    (messages given up in a row) decide when the workers disable it."""

    __tablename__ = "webhook_endpoint"
    __table_args__ = (
        Index(None, "enterprise_id", "id"),
        CheckConstraint("char_length(url) <= 2048", name="url_length"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=False), primary_key=True)
    enterprise_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), nullable=False)
    url: Mapped[str] = mapped_column(Text, nullable=False)
    event_types: Mapped[list[str]] = mapped_column(ARRAY(Text), nullable=False)
    description: Mapped[str | None] = mapped_column(Text)
    secret: Mapped[str] = mapped_column(Text, nullable=False)
    previous_secret: Mapped[str | None] = mapped_column(Text)
    previous_secret_expires_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    enabled: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("true"))
    disabled_reason: Mapped[str | None] = mapped_column(Text)
    disabled_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    failing_since: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    consecutive_failures: Mapped[int] = mapped_column(
        Integer, nullable=False, server_default=text("0")
    )
    created_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
    updated_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now(), onupdate=func.now()
    )


class WebhookMessage(Base):
    """One event for one endpoint: the outbox row the workers deliver, with a stable `msg_id`
    (the `webhook-id` header of every attempt) and its retry state."""

    __tablename__ = "webhook_message"
    __table_args__ = (
        UniqueConstraint("msg_id"),
        CheckConstraint("status IN ('pending', 'delivered', 'failed')", name="status_known"),
        # The dispatcher: an endpoint's due messages, oldest first.
        Index(
            "ix_webhook_message_pending_due",
            "endpoint_id",
            "next_attempt_at",
            postgresql_where=text("status = 'pending'"),
        ),
        # The dispatcher's in-flight count: messages a task holds.
        Index(
            "ix_webhook_message_claimed",
            "endpoint_id",
            "claim_id",
            postgresql_where=text("claim_id IS NOT NULL"),
        ),
        Index(None, "enterprise_id", "notification_id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=False), primary_key=True)
    msg_id: Mapped[str] = mapped_column(Text, nullable=False)
    enterprise_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), nullable=False)
    endpoint_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("webhook_endpoint.id", ondelete="CASCADE"), nullable=False
    )
    event_type: Mapped[str] = mapped_column(Text, nullable=False)
    notification_id: Mapped[int | None] = mapped_column(BigInteger)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    status: Mapped[str] = mapped_column(Text, nullable=False, server_default=text("'pending'"))
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    next_attempt_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
    claim_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    locked_until: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


class WebhookAttempt(Base):
    """One HTTP request of a webhook message: what the endpoint answered, or why it could not."""

    __tablename__ = "webhook_attempt"
    __table_args__ = (
        Index(
            "ix_webhook_attempt_enterprise_id_endpoint_id_id",
            "enterprise_id",
            "endpoint_id",
            text("id DESC"),
        ),
        Index(None, "message_id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=False), primary_key=True)
    enterprise_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), nullable=False)
    endpoint_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("webhook_endpoint.id", ondelete="CASCADE"), nullable=False
    )
    message_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("webhook_message.id", ondelete="CASCADE"), nullable=False
    )
    attempt: Mapped[int] = mapped_column(Integer, nullable=False)
    attempted_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    duration_ms: Mapped[int] = mapped_column(Integer, nullable=False)
    status_code: Mapped[int | None] = mapped_column(Integer)
    response_excerpt: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    succeeded: Mapped[bool] = mapped_column(Boolean, nullable=False)
