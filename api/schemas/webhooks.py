"""Request and response bodies of the status webhook API (`/api/webhooks`)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.db.models import WebhookAttempt, WebhookEndpoint, WebhookMessage
from shared.webhooks.addresses import MAX_URL_LENGTH
from shared.webhooks.events import EVENT_TYPES

EventType = Literal[
    "notification.sent",
    "notification.failed",
    "notification.retracted",
    "message.sent",
    "message.delivered",
    "message.failed",
    "message.seen",
    "message.read",
    "rule.failed",
]
assert set(EventType.__args__) == set(EVENT_TYPES)  # type: ignore[attr-defined]

Url = Annotated[
    str,
    Field(
        min_length=8,
        max_length=MAX_URL_LENGTH,
        description="http:// or https:// URL on a public address; redirects are not followed",
        examples=["https://example.com/hooks/xnovu"],
    ),
]
EventTypes = Annotated[list[EventType], Field(min_length=1, max_length=len(EVENT_TYPES))]
Description = Annotated[str, Field(max_length=500)]


class WebhookEndpointCreate(BaseModel):
    """A new endpoint."""

    model_config = ConfigDict(extra="forbid")

    url: Url
    eventTypes: EventTypes
    description: Description | None = None


class WebhookEndpointUpdate(BaseModel):
    """The fields to change; `enabled: true` also clears the reason it was disabled."""

    model_config = ConfigDict(extra="forbid")

    url: Url | None = None
    eventTypes: EventTypes | None = None
    description: Description | None = None
    enabled: bool | None = None


class WebhookEndpointRead(BaseModel):
    """An endpoint; `secret` only in the answer that made it (creation, rotation)."""

    id: int
    url: str
    eventTypes: list[str]
    description: str | None
    enabled: bool
    disabledReason: str | None
    disabledAt: dt.datetime | None
    failingSince: dt.datetime | None
    createdAt: dt.datetime
    updatedAt: dt.datetime
    secret: str | None = Field(
        default=None,
        description="`whsec_...`: verify signatures with it; shown once",
    )

    @classmethod
    def of(cls, row: WebhookEndpoint, *, with_secret: bool = False) -> WebhookEndpointRead:
        return cls(
            id=row.id,
            url=row.url,
            eventTypes=list(row.event_types),
            description=row.description,
            enabled=row.enabled,
            disabledReason=row.disabled_reason,
            disabledAt=row.disabled_at,
            failingSince=row.failing_since,
            createdAt=row.created_at,
            updatedAt=row.updated_at,
            secret=row.secret if with_secret else None,
        )


class WebhookEndpointList(BaseModel):
    items: list[WebhookEndpointRead]


class WebhookAttemptRead(BaseModel):
    """One request of a webhook message and what came of it."""

    id: int
    webhookId: str = Field(description="the message's stable id, its `webhook-id` header")
    eventType: str
    notificationId: int | None
    attempt: int
    attemptedAt: dt.datetime
    durationMs: int
    statusCode: int | None
    responseExcerpt: str | None
    error: str | None
    succeeded: bool
    messageStatus: str = Field(description="pending (retries left), delivered or failed")
    nextAttemptAt: dt.datetime | None

    @classmethod
    def of(cls, attempt: WebhookAttempt, message: WebhookMessage) -> WebhookAttemptRead:
        return cls(
            id=attempt.id,
            webhookId=message.msg_id,
            eventType=message.event_type,
            notificationId=message.notification_id,
            attempt=attempt.attempt,
            attemptedAt=attempt.attempted_at,
            durationMs=attempt.duration_ms,
            statusCode=attempt.status_code,
            responseExcerpt=attempt.response_excerpt,
            error=attempt.error,
            succeeded=attempt.succeeded,
            messageStatus=message.status,
            nextAttemptAt=message.next_attempt_at if message.status == "pending" else None,
        )


class WebhookAttemptPage(BaseModel):
    items: list[WebhookAttemptRead]
    nextCursor: str | None
