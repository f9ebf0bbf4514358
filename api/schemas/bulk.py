"""Request and response bodies of `POST /api/trigger/bulk`."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.db.enums import NotificationStatus
from shared.notifications.schemas import BulkTriggerEvent

__all__ = [
    "BulkEventError",
    "BulkEventResult",
    "BulkTriggerEvent",
    "BulkTriggerRequest",
    "BulkTriggerResponse",
]

MAX_BULK_TRIGGER_EVENTS = 1000


class BulkTriggerRequest(BaseModel):
    """`{events: [...]}`: 1 to 1,000 trigger bodies (each a `BulkTriggerEvent`).

    Events are objects checked one by one, so an invalid event gets its own error result and
    does not reject the others."""

    model_config = ConfigDict(extra="forbid")

    events: list[dict[str, Any]] = Field(
        min_length=1,
        max_length=MAX_BULK_TRIGGER_EVENTS,
        description="Trigger bodies: the fields of POST /api/trigger plus `idempotencyKey`.",
    )


class BulkEventError(BaseModel):
    code: str
    message: str
    details: Any = None


class BulkEventResult(BaseModel):
    """What one event became: accepted (a PENDING notification) or rejected (why, with the
    status a single `POST /api/trigger` of that body would have answered)."""

    index: int
    result: Literal["accepted", "rejected"]
    statusCode: int
    workflowId: str | None = None
    enterpriseId: uuid.UUID | None = None
    notificationId: int | None = None
    transactionId: str | None = None
    status: NotificationStatus | None = None
    scheduledFor: dt.datetime | None = None
    replayed: bool = False
    error: BulkEventError | None = None


class BulkTriggerResponse(BaseModel):
    # The notifications this request created carry it (GET /api/batches/{batchId}); null when
    # it created none (every event rejected or replayed).
    batchId: uuid.UUID | None
    accepted: int
    rejected: int
    results: list[BulkEventResult]
