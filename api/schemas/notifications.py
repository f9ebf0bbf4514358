"""Request and response bodies of the notification API."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from shared.db.enums import NotificationStatus
from shared.db.models import Notification

Recipient = Annotated[str, Field(min_length=1, max_length=255)]


class TriggerRequest(BaseModel):
    """POST /api/trigger. Field names are camelCase, as the original XNovu API has them."""

    model_config = ConfigDict(extra="forbid")

    workflowId: str = Field(min_length=1, max_length=255, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")
    payload: dict[str, Any] = Field(default_factory=dict)
    enterpriseId: uuid.UUID | None = None
    subscriberId: str | None = Field(default=None, min_length=1, max_length=255)
    recipients: list[Recipient] | None = Field(default=None, min_length=1)
    notificationId: int | None = Field(default=None, ge=1, le=2**63 - 1)
    scheduledFor: AwareDatetime | None = None
    overrides: dict[str, Any] | None = None
    tags: list[Annotated[str, Field(min_length=1, max_length=100)]] | None = Field(
        default=None, max_length=20
    )


class TriggerResponse(BaseModel):
    message: str
    workflowId: str
    enterpriseId: uuid.UUID
    notificationId: int
    transactionId: str
    status: NotificationStatus
    scheduledFor: dt.datetime | None = None


class CancelRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str | None = Field(default=None, max_length=1000)


class NotificationRead(BaseModel):
    """A notification as stored; names are the columns of `ent_notification`."""

    id: int
    enterprise_id: uuid.UUID
    workflow_key: str
    notification_workflow_id: int | None
    notification_status: NotificationStatus
    transaction_id: str
    payload: dict[str, Any]
    recipients: list[str]
    overrides: dict[str, Any] | None
    tags: list[str] | None
    scheduled_for: dt.datetime | None
    processed_at: dt.datetime | None
    retracted_at: dt.datetime | None
    retraction_reason: str | None
    error_details: dict[str, Any] | None
    render_fallbacks: list[dict[str, Any]] | None
    attempts: int
    next_attempt_at: dt.datetime | None
    created_at: dt.datetime
    updated_at: dt.datetime

    @classmethod
    def of(cls, row: Notification) -> NotificationRead:
        return cls.model_validate(row, from_attributes=True)


class NotificationPage(BaseModel):
    items: list[NotificationRead]
    nextCursor: str | None
