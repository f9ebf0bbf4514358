"""Bodies of the rules API; names are the columns of ent_notification_rule, as the original's."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from shared.db.enums import PublishStatus, TriggerType
from shared.db.models import NotificationRule
from shared.rules.schedule import DEFAULT_TIMEZONE, MAX_CRON_LENGTH, MAX_TIMEZONE_LENGTH

WorkflowRowId = Annotated[
    int, Field(ge=1, le=2**63 - 1, description="The id of a published workflow of the enterprise")
]


class CronConfig(BaseModel):
    """When the rule fires: a five-field cron expression read in an IANA time zone."""

    model_config = ConfigDict(extra="forbid")

    cron: str = Field(min_length=1, max_length=MAX_CRON_LENGTH, examples=["0 9 * * 1"])
    timezone: str = Field(default=DEFAULT_TIMEZONE, min_length=1, max_length=MAX_TIMEZONE_LENGTH)
    enabled: bool = True


class RulePayload(BaseModel):
    """What each fire triggers: the fields of POST /api/trigger but `workflowId` (the rule's
    workflow), checked as a trigger is when the rule is saved and again at each fire."""

    model_config = ConfigDict(extra="forbid")

    recipients: list[Any] | None = Field(default=None, min_length=1)
    payload: dict[str, Any] = Field(default_factory=dict)
    overrides: dict[str, Any] | None = None
    tags: list[str] | None = None


class RuleCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=255)
    description: str | None = Field(default=None, max_length=2000)
    notification_workflow_id: WorkflowRowId
    trigger_type: TriggerType = TriggerType.CRON
    trigger_config: CronConfig
    rule_payload: RulePayload = Field(default_factory=RulePayload)
    business_id: str | None = Field(default=None, max_length=255)


class RuleUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=255)
    description: str | None = Field(default=None, max_length=2000)
    notification_workflow_id: WorkflowRowId | None = None
    trigger_config: CronConfig | None = None
    rule_payload: RulePayload | None = None
    business_id: str | None = Field(default=None, max_length=255)


class RuleRead(BaseModel):
    id: int
    enterprise_id: uuid.UUID | None
    name: str | None
    description: str | None
    notification_workflow_id: int
    trigger_type: TriggerType
    trigger_config: dict[str, Any] | None
    rule_payload: dict[str, Any] | None
    publish_status: PublishStatus
    deactivated: bool
    business_id: str | None
    next_fire_at: dt.datetime | None = Field(
        description="When it fires next (UTC); null until the scheduler arms it (within "
        "RULES_TICK_SECONDS of a change) and while it is not published or is deactivated"
    )
    last_fired_at: dt.datetime | None = Field(description="The last fire time that fired")
    last_error: dict[str, Any] | None = Field(
        description="Why the last fire (or arming) produced no notification: the error a "
        "trigger with this payload answers with; null when it did"
    )
    created_at: dt.datetime
    updated_at: dt.datetime

    @classmethod
    def of(cls, row: NotificationRule) -> RuleRead:
        return cls.model_validate(row, from_attributes=True)


class RulePage(BaseModel):
    items: list[RuleRead]
    nextCursor: str | None


class FireTime(BaseModel):
    utc: dt.datetime
    local: dt.datetime = Field(description="The same instant in the rule's time zone")


class RulePreview(BaseModel):
    cron: str
    timezone: str
    fireTimes: list[FireTime] = Field(description="The next fire times, from now")
