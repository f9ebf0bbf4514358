"""Bodies XNovu sends to Novu's REST API and the answers it reads back.

Field names are snake_case in Python and camelCase on the wire, as Novu and its
official SDK (novu-py) spell them. `None` fields are left out of request bodies
(Novu treats an explicit `null` differently from a missing field for some of
them), but `None` values inside `payload`, `overrides` or `data` are sent as
they are: they are the caller's data.
"""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Annotated, Any, Literal, TypeAlias

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

MAX_RECIPIENTS = 100
MAX_BULK_EVENTS = 100
# What Novu's rate limiter charges per call, from the Events category's token bucket: a single
# trigger costs 1 token, a bulk trigger 100 whatever the number of its events.
TRIGGER_TOKENS = 1
BULK_TRIGGER_TOKENS = 100


class _NovuModel(BaseModel):
    """camelCase on the wire, snake_case in Python, unknown fields refused."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
    )


class Subscriber(_NovuModel):
    """A recipient given inline; Novu creates or updates the subscriber on the fly."""

    subscriber_id: str = Field(min_length=1)
    email: str | None = None
    phone: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    locale: str | None = None
    timezone: str | None = None
    avatar: str | None = None
    data: dict[str, Any] | None = None


class Topic(_NovuModel):
    """Every subscriber of a Novu topic, optionally minus some subscriberIds."""

    type: Literal["Topic"] = "Topic"
    topic_key: str = Field(min_length=1)
    exclude: list[str] | None = None


class Tenant(_NovuModel):
    """Tenant context of a trigger; Novu updates an existing tenant with these fields."""

    identifier: str | None = None
    name: str | None = None
    data: dict[str, Any] | None = None


Recipient: TypeAlias = str | Subscriber | Topic
"""One `to` entry: a subscriberId, an inline subscriber or a topic."""


class TriggerEvent(_NovuModel):
    """The body of `POST /v1/events/trigger`, and one element of a bulk trigger."""

    name: str = Field(min_length=1, description="Novu workflow id (trigger identifier).")
    to: Recipient | Annotated[list[Recipient], Field(min_length=1, max_length=MAX_RECIPIENTS)]
    payload: dict[str, Any] = Field(default_factory=dict)
    overrides: dict[str, Any] | None = None
    transaction_id: str = Field(min_length=1)
    actor: str | Subscriber | None = None
    tenant: str | Tenant | None = None

    def to_body(self) -> dict[str, Any]:
        """The JSON object Novu expects: camelCase keys, unset optional fields left out."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class TriggerStatus(StrEnum):
    """Values Novu puts in a trigger result's `status` (it may add more)."""

    PROCESSED = "processed"
    ERROR = "error"
    TRIGGER_NOT_ACTIVE = "trigger_not_active"
    NO_WORKFLOW_ACTIVE_STEPS_DEFINED = "no_workflow_active_steps_defined"
    NO_WORKFLOW_STEPS_DEFINED = "no_workflow_steps_defined"
    NO_TENANT_FOUND = "no_tenant_found"
    INVALID_RECIPIENTS = "invalid_recipients"


class RateLimit(BaseModel):
    """Novu's `RateLimit-*` response headers, when it sends them."""

    model_config = ConfigDict(frozen=True)

    limit: int | None = None
    remaining: int | None = None
    reset_seconds: float | None = None
    policy: str | None = None


class TriggerResult(BaseModel):
    """Novu's answer for one triggered event (the `data` of a trigger response)."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=True
    )

    acknowledged: bool
    # Kept a plain string: Novu may add statuses, and anything but "processed" is a failure.
    status: str
    transaction_id: str | None = None
    error: list[str] | str | None = None
    # Filled from the HTTP response, not from Novu's JSON.
    rate_limit: RateLimit | None = Field(default=None, exclude=True)
    replayed: bool = Field(default=False, exclude=True)
    status_code: int | None = Field(default=None, exclude=True)  # of the HTTP answer

    @property
    def processed(self) -> bool:
        """True when Novu queued the event; any other status is a permanent failure."""
        return self.status == TriggerStatus.PROCESSED

    def error_text(self) -> str:
        """Novu's error messages for this event as one line (empty when there are none)."""
        if self.error is None:
            return ""
        if isinstance(self.error, str):
            return self.error
        return "; ".join(self.error)


def canonical_json(value: Any) -> bytes:
    """Compact JSON with sorted keys: equal values always give equal bytes.

    Novu hashes the body it receives to detect an Idempotency-Key reused for a
    different body, so every retry of one notification must send the same bytes.
    """
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
