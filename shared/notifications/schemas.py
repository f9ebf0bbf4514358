"""The trigger bodies intake accepts: the original XNovu's camelCase fields."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

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


class BulkTriggerEvent(TriggerRequest):
    """One event of a bulk trigger: a single trigger's body plus its own idempotency key."""

    idempotencyKey: str | None = Field(default=None, min_length=1, max_length=255)
