"""Request and response bodies of the notification API."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from shared.db.enums import NotificationStatus
from shared.db.models import Notification
from shared.notifications.schemas import TriggerRequest
from shared.notifications.timeline import TimelineEvent
from shared.novu.delivery_events import ChannelDelivery
from shared.payloads import json_depth

__all__ = [
    "CancelRequest",
    "ChannelDeliveryRead",
    "NotificationEventPage",
    "NotificationEventRead",
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


class ChannelDeliveryRead(BaseModel):
    """One channel's delivery as Novu's webhooks reported it: the type of its latest event
    without `message.` (`sent`, `delivered`, `failed`, `seen`, `read`, ...), when it happened
    by Novu's clock, and how many events of each type came (every subscriber's)."""

    status: str
    at: dt.datetime
    events: int
    byType: dict[str, int]


class NotificationRead(BaseModel):
    """A notification as stored; names are the columns of `ent_notification`, but
    `recipients` is the list as the trigger gave it: subscriberIds, subscriber objects and
    topics (`recipient_objects` when any is an object)."""

    id: int
    enterprise_id: uuid.UUID
    workflow_key: str
    notification_workflow_id: int | None
    # The scheduled rule that created it, and for which of its fire times (docs/architecture.md,
    # "Rules"); null for a trigger's.
    notification_rule_id: int | None
    rule_fire_at: dt.datetime | None
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
    # Per channel, what Novu's delivery events said (docs/architecture.md, "Delivery events from
    # Novu"): filled by GET /api/notifications/{id}, null in lists and other answers.
    delivery: dict[str, ChannelDeliveryRead] | None = None

    @classmethod
    def of(
        cls, row: Notification, delivery: Mapping[str, ChannelDelivery] | None = None
    ) -> NotificationRead:
        read = cls.model_validate(row, from_attributes=True)
        if delivery is not None:
            read.delivery = {
                channel: ChannelDeliveryRead(
                    status=d.status, at=d.at, events=d.events, byType=d.by_type
                )
                for channel, d in delivery.items()
            }
        if row.recipient_objects is not None:
            read.recipients = row.recipient_objects
        for name in _JSON_FIELDS:
            value = getattr(read, name)
            if json_depth(value) > READ_MAX_DEPTH:
                setattr(read, name, _cut(value, READ_MAX_DEPTH))
        return read


# A stored JSON value is answered as stored down to this depth, and below it as TOO_DEEP:
# pydantic's encoder refuses values nested about 250 levels deep, which made every read of a
# row recorded before intake bounded depth (MAX_PAYLOAD_DEPTH, at most 64) answer 500.
READ_MAX_DEPTH = 128
TOO_DEEP = f"[nested deeper than {READ_MAX_DEPTH} levels: not shown]"
_JSON_FIELDS = ("payload", "recipients", "overrides", "error_details", "render_fallbacks")


def _cut(value: Any, limit: int) -> Any:
    """A copy of a JSON value with every object or array deeper than `limit` levels replaced by
    TOO_DEEP (without recursion: the value may be nested thousands of levels deep)."""
    root: list[Any] = [None]
    pending: list[tuple[Any, Any, Any, int]] = [(root, 0, value, 1)]
    while pending:
        parent, key, node, depth = pending.pop()
        if isinstance(node, (dict, list)) and depth > limit:
            parent[key] = TOO_DEEP
        elif isinstance(node, dict):
            parent[key] = mapping = dict.fromkeys(node)
            pending.extend((mapping, k, v, depth + 1) for k, v in node.items())
        elif isinstance(node, list):
            parent[key] = items = [None] * len(node)
            pending.extend((items, i, v, depth + 1) for i, v in enumerate(node))
        else:
            parent[key] = node
    return root[0]


class NotificationPage(BaseModel):
    items: list[NotificationRead]
    nextCursor: str | None


class NotificationEventRead(BaseModel):
    """One event of a notification's timeline: its `kind` (`accepted`, `attempt.started`,
    `attempt.failed`, `sent`, `failed`, `retracted`, `delivery.message.sent`, ...: all are
    listed in the architecture document's "Timeline"), the attempt it belongs to, and what
    happened; `created_at` is the database's clock."""

    id: int
    notification_id: int
    kind: str
    attempt: int | None
    detail: dict[str, Any] | None
    created_at: dt.datetime

    @classmethod
    def of(cls, row: TimelineEvent) -> NotificationEventRead:
        read = cls.model_validate(row, from_attributes=True)
        # Details are bounded in size when written, not in depth (Novu's data inside one).
        if json_depth(read.detail) > READ_MAX_DEPTH:
            read.detail = _cut(read.detail, READ_MAX_DEPTH)
        return read


class NotificationEventPage(BaseModel):
    items: list[NotificationEventRead]
    nextCursor: str | None
