"""Request and response bodies of the notification API."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from shared.db.enums import NotificationStatus
from shared.db.models import Notification
from shared.notifications.schemas import TriggerRequest

__all__ = [
    "CancelRequest",
    "NotificationPage",
    "NotificationRead",
    "TriggerRequest",
    "TriggerResponse",
]


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
    """A notification as stored; names are the columns of `ent_notification`, but
    `recipients` is the list as the trigger gave it: subscriberIds, subscriber objects and
    topics (`recipient_objects` when any is an object)."""

    id: int
    enterprise_id: uuid.UUID
    workflow_key: str
    notification_workflow_id: int | None
    notification_status: NotificationStatus
    transaction_id: str
    payload: dict[str, Any]
    recipients: list[str | dict[str, Any]]
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
    # Since when Novu may hold it without our knowing (an attempt's answer was lost): a cancel
    # then needs Novu's confirmation (409 delivery_unknown without it). Null once SENT.
    outcome_unknown_at: dt.datetime | None
    created_at: dt.datetime
    updated_at: dt.datetime

    @classmethod
    def of(cls, row: Notification) -> NotificationRead:
        read = cls.model_validate(row, from_attributes=True)
        if row.recipient_objects is not None:
            read.recipients = row.recipient_objects
        return read


class NotificationPage(BaseModel):
    items: list[NotificationRead]
    nextCursor: str | None
