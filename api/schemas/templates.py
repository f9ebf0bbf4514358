"""Request and response bodies of the template API; names are the columns of
`ent_notification_template`, as the original XNovu SQL has them."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from shared.db.enums import ChannelType, PublishStatus
from shared.db.models import NotificationTemplate

TEMPLATE_KEY_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,99}$"
MAX_BODY_SOURCE_BYTES = 100 * 1024
MAX_SUBJECT_SOURCE_BYTES = 10 * 1024
MAX_VARIABLES_DESCRIPTION_BYTES = 64 * 1024
MAX_VARIABLES = 500
MAX_LOCALES = 50
# A BCP 47 language tag, as far as choosing a variant needs: `fr`, `fr-CA`, `zh-Hant-TW`.
LOCALE_PATTERN = r"^[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{2,8}){0,3}$"


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


UndefinedMode = Annotated[
    Literal["strict", "blank"],
    Field(
        description=(
            "What an undefined variable does: `strict` fails the render (the notification is "
            'FAILED with the variable named), `blank` prints it as "" (the original XNovu\'s '
            "behaviour)."
        )
    ),
]
LocaleTag = Annotated[str, Field(pattern=LOCALE_PATTERN, examples=["fr", "fr-CA"])]


class LocaleVariant(BaseModel):
    """A template's sources in one locale; the channel's rules apply to it as to the template's
    own (an EMAIL variant needs its subject)."""

    model_config = ConfigDict(extra="forbid")

    subject_template: SubjectSource | None = None
    body_template: BodySource


def _locales(value: dict[str, LocaleVariant]) -> dict[str, LocaleVariant]:
    if len(value) > MAX_LOCALES:
        raise ValueError(f"at most {MAX_LOCALES} locales")
    tags = [tag.replace("_", "-").lower() for tag in value]
    if len(set(tags)) < len(tags):
        raise ValueError("a locale is given twice (tags are compared without case, _ as -)")
    return value


Locales = Annotated[
    dict[LocaleTag, LocaleVariant],
    Field(
        description=(
            "Variants by locale tag. The one sent is chosen by the recipient's `locale`, else "
            "the payload's `locale`: the tag, then each shorter prefix of it (`fr-CA`, `fr`), "
            "else the template's own subject and body."
        ),
        examples=[{"fr": {"subject_template": "Bonjour", "body_template": "Bonjour {{ name }}"}}],
    ),
    AfterValidator(_locales),
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
    undefined_mode: UndefinedMode = "strict"
    locales: Locales | None = None


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
    undefined_mode: UndefinedMode | None = None
    locales: Locales | None = None

    @field_validator("name", "template_key", "channel_type", "body_template", "undefined_mode")
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        if value is None:
            raise ValueError("cannot be null")
        return value

    def changes(self) -> dict[str, Any]:
        """The fields the request set, as column → value."""
        changes = {name: getattr(self, name) for name in self.model_fields_set}
        if "locales" in changes:
            changes["locales"] = locales_column(self.locales)
        return changes


def locales_column(locales: dict[str, LocaleVariant] | None) -> dict[str, Any] | None:
    """The `locales` column's JSON of the request's variants (None: no variants)."""
    if not locales:
        return None
    return {tag: variant.model_dump(exclude_none=True) for tag, variant in locales.items()}


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
    undefined_mode: str
    locales: dict[str, Any] | None
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
    locale: LocaleTag | None = Field(
        default=None, description="Render the variant a recipient of this locale would get."
    )


class PreviewResponse(BaseModel):
    subject: str | None = None
    body: str
