"""Bodies of the workflow management API; names are the columns of ent_notification_workflow."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from shared.db.enums import ChannelType, PublishStatus, WorkflowType
from shared.db.models import NotificationWorkflow, NovuWorkflowSync
from shared.workflows.definition import MAX_DELAY_SECONDS

WorkflowKey = Annotated[
    str, Field(min_length=1, max_length=100, pattern=r"^[a-z0-9]+(-[a-z0-9]+)*$")
]
Tag = Annotated[str, Field(min_length=1, max_length=100)]
TemplateId = Annotated[int, Field(ge=1, le=2**63 - 1)]
DelaySeconds = Annotated[
    int,
    Field(
        ge=1,
        le=MAX_DELAY_SECONDS,
        description="Seconds Novu holds each notification in a delay step before its channels "
        "(1 to 2,592,000: 30 days); while it waits there, a cancel still stops it",
    ),
]


class TemplateOverrides(BaseModel):
    """Template of each channel, as the original XNovu stores them."""

    model_config = ConfigDict(extra="forbid")

    emailTemplateId: TemplateId | None = None
    inAppTemplateId: TemplateId | None = None
    smsTemplateId: TemplateId | None = None
    pushTemplateId: TemplateId | None = None


class WorkflowCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    workflow_key: WorkflowKey
    name: str = Field(min_length=1, max_length=255)
    description: str | None = Field(default=None, max_length=2000)
    workflow_type: WorkflowType = WorkflowType.DYNAMIC
    default_channels: list[ChannelType] = Field(min_length=1, max_length=5)
    template_overrides: TemplateOverrides = Field(default_factory=TemplateOverrides)
    payload_schema: dict[str, Any] | None = None
    control_schema: dict[str, Any] | None = None
    tags: list[Tag] | None = Field(default=None, max_length=20)
    business_id: str | None = Field(default=None, max_length=255)
    delay_seconds: DelaySeconds | None = None


class WorkflowUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=255)
    description: str | None = Field(default=None, max_length=2000)
    default_channels: list[ChannelType] | None = Field(default=None, min_length=1, max_length=5)
    template_overrides: TemplateOverrides | None = None
    payload_schema: dict[str, Any] | None = None
    control_schema: dict[str, Any] | None = None
    tags: list[Tag] | None = Field(default=None, max_length=20)
    business_id: str | None = Field(default=None, max_length=255)
    # null removes the delay step; leaving the field out keeps it.
    delay_seconds: DelaySeconds | None = None

    @field_validator("default_channels")
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        # The column is NOT NULL: an explicit null is a 422, not a database error.
        if value is None:
            raise ValueError("cannot be null")
        return value


class NovuSyncRead(BaseModel):
    """What Novu knows of the workflow's key (one Novu workflow per key, for every enterprise)."""

    synced: bool = Field(description="Novu knows the workflow key: it can be triggered")
    synced_at: dt.datetime | None = Field(description="When a sync last registered the key")
    last_error: str | None = Field(description="Why the last sync attempt failed, if it did")

    @classmethod
    def of(cls, row: NovuWorkflowSync | None) -> NovuSyncRead:
        if row is None:  # never part of a sync: not published, or its sync is on its way
            return cls(synced=False, synced_at=None, last_error=None)
        return cls(
            synced=row.synced_at is not None, synced_at=row.synced_at, last_error=row.last_error
        )


class WorkflowRead(BaseModel):
    id: int
    enterprise_id: uuid.UUID | None
    workflow_key: str
    name: str | None
    description: str | None
    workflow_type: WorkflowType
    publish_status: PublishStatus
    deactivated: bool
    default_channels: list[ChannelType]
    template_overrides: dict[str, Any] | None
    payload_schema: dict[str, Any] | None
    control_schema: dict[str, Any] | None
    tags: list[str] | None
    business_id: str | None
    delay_seconds: int | None
    created_at: dt.datetime
    updated_at: dt.datetime
    novu_sync: NovuSyncRead

    @classmethod
    def of(cls, row: NotificationWorkflow, novu_sync: NovuWorkflowSync | None) -> WorkflowRead:
        return cls.model_validate(
            {
                **{name: getattr(row, name) for name in cls.model_fields if name != "novu_sync"},
                "novu_sync": NovuSyncRead.of(novu_sync),
            }
        )


class WorkflowList(BaseModel):
    items: list[WorkflowRead]
    static: list[str] = Field(description="Static workflows every enterprise can trigger")


class ReloadResult(BaseModel):
    enterpriseId: uuid.UUID
    generation: int
    workflows: list[str]
    invalid: dict[str, list[str]]
