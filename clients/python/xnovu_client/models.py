"""What the API answers, as pydantic models. Unknown fields are kept (a newer server may add
some) and every field the API may leave out is optional."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class _Model(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class TriggerResult(_Model):
    """A trigger the API accepted: the notification is recorded as PENDING."""

    notification_id: int = Field(alias="notificationId")
    transaction_id: str = Field(alias="transactionId")
    status: str
    workflow_id: str = Field(alias="workflowId")
    enterprise_id: uuid.UUID = Field(alias="enterpriseId")
    scheduled_for: dt.datetime | None = Field(default=None, alias="scheduledFor")
    message: str | None = None
    # True when the API answered from an earlier request with the same Idempotency-Key.
    replayed: bool = False


class BulkEventError(_Model):
    code: str
    message: str
    details: Any = None


class BulkEventResult(_Model):
    """What one event of a bulk trigger became: `accepted` or `rejected` (with `error`)."""

    index: int
    result: str
    status_code: int = Field(alias="statusCode")
    notification_id: int | None = Field(default=None, alias="notificationId")
    transaction_id: str | None = Field(default=None, alias="transactionId")
    status: str | None = None
    replayed: bool = False
    error: BulkEventError | None = None

    @property
    def accepted(self) -> bool:
        """The event is recorded (now, or by an earlier request with its key)."""
        return self.result == "accepted"


class BulkResult(_Model):
    batch_id: uuid.UUID | None = Field(default=None, alias="batchId")
    accepted: int
    rejected: int
    results: list[BulkEventResult]


class Notification(_Model):
    id: int
    enterprise_id: uuid.UUID
    workflow_key: str
    notification_status: str
    transaction_id: str
    payload: dict[str, Any]
    recipients: list[Any]
    attempts: int = 0
    tags: list[str] | None = None
    overrides: dict[str, Any] | None = None
    scheduled_for: dt.datetime | None = None
    processed_at: dt.datetime | None = None
    retracted_at: dt.datetime | None = None
    retraction_reason: str | None = None
    error_details: dict[str, Any] | None = None
    created_at: dt.datetime
    updated_at: dt.datetime | None = None
    delivery: dict[str, Any] | None = None

    @property
    def status(self) -> str:
        """PENDING, PROCESSING, SENT, FAILED or RETRACTED."""
        return self.notification_status


class NotificationPage(_Model):
    items: list[Notification]
    next_cursor: str | None = Field(default=None, alias="nextCursor")


class NotificationEvent(_Model):
    """One entry of a notification's timeline."""

    id: int
    notification_id: int
    kind: str
    attempt: int | None = None
    detail: dict[str, Any] | None = None
    created_at: dt.datetime


class NotificationEventPage(_Model):
    items: list[NotificationEvent]
    next_cursor: str | None = Field(default=None, alias="nextCursor")


class Batch(_Model):
    """The notifications of one bulk request, counted by status."""

    batch_id: uuid.UUID = Field(alias="batchId")
    total: int
    by_status: dict[str, int] = Field(alias="byStatus")
    created_at: dt.datetime = Field(alias="createdAt")


class Workflow(_Model):
    id: int
    workflow_key: str
    workflow_type: str
    publish_status: str
    deactivated: bool = False
    name: str | None = None
    description: str | None = None
    default_channels: list[str] = Field(default_factory=list)
    template_overrides: dict[str, Any] | None = None
    payload_schema: dict[str, Any] | None = None
    tags: list[str] | None = None
    delay_seconds: int | None = None
    created_at: dt.datetime | None = None
    updated_at: dt.datetime | None = None


class WorkflowList(_Model):
    items: list[Workflow]
    static: list[str] = Field(default_factory=list)


class Template(_Model):
    id: int
    template_key: str
    channel_type: str
    body_template: str
    subject_template: str | None = None
    name: str | None = None
    description: str | None = None
    variables_description: dict[str, Any] | None = None
    publish_status: str
    deactivated: bool = False
    created_at: dt.datetime | None = None
    updated_at: dt.datetime | None = None


class Preview(_Model):
    subject: str | None = None
    body: str
