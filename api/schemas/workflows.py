"""Bodies of the workflow management API; names are the columns of ent_notification_workflow."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from shared.db.enums import ChannelType, PublishStatus, WorkflowType
from shared.db.models import NotificationWorkflow

WorkflowKey = Annotated[
    str, Field(min_length=1, max_length=100, pattern=r"^[a-z0-9]+(-[a-z0-9]+)*$")
]
Tag = Annotated[str, Field(min_length=1, max_length=100)]
TemplateId = Annotated[int, Field(ge=1, le=2**63 - 1)]


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

    @field_validator("default_channels")
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        # The column is NOT NULL: an explicit null is a 422, not a database error.
        if value is None:
            raise ValueError("cannot be null")
        return value


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
    created_at: dt.datetime
    updated_at: dt.datetime

    @classmethod
    def of(cls, row: NotificationWorkflow) -> WorkflowRead:
        return cls.model_validate(row, from_attributes=True)


class WorkflowList(BaseModel):
    items: list[WorkflowRead]
    static: list[str] = Field(description="Static workflows every enterprise can trigger")


class ReloadResult(BaseModel):
    enterpriseId: uuid.UUID
    generation: int
    workflows: list[str]
    invalid: dict[str, list[str]]
