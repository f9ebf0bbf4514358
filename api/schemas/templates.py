"""Request and response bodies of the template API; names are the columns of
`ent_notification_template`, as the original XNovu SQL has them."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from shared.db.enums import ChannelType, PublishStatus
from shared.db.models import NotificationTemplate

TEMPLATE_KEY_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,99}$"
MAX_BODY_SOURCE_BYTES = 100 * 1024
MAX_SUBJECT_SOURCE_BYTES = 10 * 1024
MAX_VARIABLES_DESCRIPTION_BYTES = 64 * 1024
MAX_VARIABLES = 500


def _at_most(limit: int) -> AfterValidator:
    def check(value: str) -> str:
        if len(value.encode("utf-8", "replace")) > limit:
            raise ValueError(f"must be at most {limit} bytes")
        return value

    return AfterValidator(check)


def _variables_description(value: dict[str, Any]) -> dict[str, Any]:
    if len(value) > MAX_VARIABLES:
        raise ValueError(f"at most {MAX_VARIABLES} variables")
    for name in value:
        if not 1 <= len(name) <= 100:
            raise ValueError("variable names are 1 to 100 characters")
    if len(json.dumps(value, separators=(",", ":"))) > MAX_VARIABLES_DESCRIPTION_BYTES:
        raise ValueError(f"must be at most {MAX_VARIABLES_DESCRIPTION_BYTES} bytes of JSON")
    return value


TemplateKey = Annotated[
    str,
    Field(
        pattern=TEMPLATE_KEY_PATTERN,
        description="Unique per enterprise: lowercase letters, digits, '_', '.', '-'.",
        examples=["welcome-email"],
    ),
]
Name = Annotated[str, Field(min_length=1, max_length=255)]
Description = Annotated[str, Field(max_length=2000)]
BodySource = Annotated[
    str, Field(min_length=1, description="Jinja2 source"), _at_most(MAX_BODY_SOURCE_BYTES)
]
SubjectSource = Annotated[
    str, Field(description="Jinja2 source, plain text"), _at_most(MAX_SUBJECT_SOURCE_BYTES)
]
VariablesDescription = Annotated[
    dict[str, Any],
    Field(
        description=(
            "Default variables: {name: default} or "
            "{name: {default?, description?, type?, example?}}."
        ),
        examples=[{"name": {"default": "there", "description": "Who we greet"}}],
    ),
    AfterValidator(_variables_description),
]


class TemplateCreate(BaseModel):
    """A new template, created as DRAFT: its channel, key, sources and defaults."""

    model_config = ConfigDict(extra="forbid")

    name: Name
    description: Description | None = None
    template_key: TemplateKey
    channel_type: ChannelType
    subject_template: SubjectSource | None = None
    body_template: BodySource
    variables_description: VariablesDescription | None = None


class TemplateUpdate(BaseModel):
    """Changes to a template: only the fields given change."""

    model_config = ConfigDict(extra="forbid")

    name: Name | None = None
    description: Description | None = None
    template_key: TemplateKey | None = None
    channel_type: ChannelType | None = None
    subject_template: SubjectSource | None = None
    body_template: BodySource | None = None
    variables_description: VariablesDescription | None = None

    @field_validator("name", "template_key", "channel_type", "body_template")
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        if value is None:
            raise ValueError("cannot be null")
        return value

    def changes(self) -> dict[str, Any]:
        """The fields the request set, as column → value."""
        return {name: getattr(self, name) for name in self.model_fields_set}


class TemplateRead(BaseModel):
    """A template as stored."""

    id: int
    enterprise_id: uuid.UUID
    name: str | None
    description: str | None
    template_key: str
    channel_type: ChannelType
    subject_template: str | None
    body_template: str
    variables_description: dict[str, Any] | None
    publish_status: PublishStatus
    deactivated: bool
    created_at: dt.datetime
    updated_at: dt.datetime
    created_by: str | None
    updated_by: str | None

    @classmethod
    def of(cls, row: NotificationTemplate) -> TemplateRead:
        return cls.model_validate(row, from_attributes=True)


class TemplateList(BaseModel):
    items: list[TemplateRead]


class PreviewRequest(BaseModel):
    """Sample variables, rendered over the template's defaults."""

    model_config = ConfigDict(extra="forbid")

    variables: dict[str, Any] = Field(default_factory=dict)


class PreviewResponse(BaseModel):
    subject: str | None = None
    body: str
