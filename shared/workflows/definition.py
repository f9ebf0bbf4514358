"""A small declarative API for static workflows, validated when a workflow is defined.

A static workflow is a module-level `workflow` in its own package (see discovery.py):

    workflow = define_workflow(
        "password-reset",
        email(subject="Reset your password", body="<a href='{{ resetUrl }}'>Reset</a>"),
        sms("Reset your password: {{ resetUrl }}"),
        payload=PasswordResetPayload,  # a pydantic model, or a JSON Schema dict
        subscriber=lambda p: {"subscriberId": p["userId"], "email": p["email"]},
        tags=("security",),
    )

`StaticWorkflow(key=..., channels={ChannelType.EMAIL: ChannelContent(...)}, ...)` is the same
thing spelled out. Every mistake found at definition time is reported at once, in one
`WorkflowDefinitionError`, so a broken workflow fails when it is imported, not when it is sent.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from jinja2 import TemplateSyntaxError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from pydantic import BaseModel

from shared.db.enums import ChannelType
from shared.payloads import schema_problems

SubscriberBuilder = Callable[[Mapping[str, Any]], dict[str, Any] | None]

WORKFLOW_KEY_PATTERN = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
# A delay step holds a notification at Novu from 1 second to 30 days (as a dynamic workflow's
# delay_seconds column allows).
MAX_DELAY_SECONDS = 30 * 24 * 3600

# Channels whose subject is required: an email needs a subject line, a push a title.
SUBJECT_REQUIRED = frozenset({ChannelType.EMAIL, ChannelType.PUSH})

# Only parses, never renders: the syntax is the same as the renderer's sandboxed environment.
_syntax_env = ImmutableSandboxedEnvironment()


class ProblemCode(enum.StrEnum):
    """Why a static workflow cannot be used; stable strings for reports and scripts."""

    # Found when the workflow is defined.
    INVALID_KEY = "invalid_key"
    NO_CHANNELS = "no_channels"
    BAD_CHANNEL = "bad_channel"
    DUPLICATE_CHANNEL = "duplicate_channel"
    BAD_CONTENT = "bad_content"
    MISSING_SUBJECT = "missing_subject"
    JINJA_SYNTAX = "jinja_syntax"
    BAD_PAYLOAD_SCHEMA = "bad_payload_schema"
    BAD_SUBSCRIBER = "bad_subscriber"
    BAD_TAGS = "bad_tags"
    BAD_DELAY = "bad_delay"
    # Found when a workflows directory is scanned.
    NOT_A_DIRECTORY = "not_a_directory"
    NO_WORKFLOWS = "no_workflows"
    MISSING_INIT = "missing_init"
    IMPORT_ERROR = "import_error"
    NO_WORKFLOW_OBJECT = "no_workflow_object"
    WRONG_TYPE = "wrong_type"
    KEY_MISMATCH = "key_mismatch"
    DUPLICATE_KEY = "duplicate_key"


@dataclass(frozen=True, slots=True)
class DefinitionProblem:
    code: ProblemCode
    message: str


class WorkflowDefinitionError(ValueError):
    """A static workflow is defined wrongly; `problems` lists every mistake found."""

    def __init__(self, key: object, problems: Sequence[DefinitionProblem]) -> None:
        self.key = key
        self.problems = tuple(problems)
        details = "; ".join(problem.message for problem in self.problems)
        super().__init__(f"static workflow {key!r} is invalid: {details}")


@dataclass(frozen=True, slots=True)
class ChannelContent:
    """Jinja2 sources of one channel's message. SMS and CHAT ignore the subject; PUSH uses it
    as the title."""

    body: str
    subject: str | None = None


@dataclass(frozen=True)
class StaticWorkflow:
    """A workflow defined in code and shared by every enterprise."""

    key: str
    channels: Mapping[ChannelType, ChannelContent]
    payload_model: type[BaseModel] | None = None
    payload_json_schema: dict[str, Any] | None = None
    name: str | None = None
    description: str | None = None
    tags: tuple[str, ...] = ()
    # Derives the Novu subscriber from the payload when the trigger names no recipient.
    subscriber: SubscriberBuilder | None = field(default=None, repr=False)
    # Seconds Novu holds each notification in a delay step before the channels; None: none.
    delay_seconds: int | None = None

    def __post_init__(self) -> None:
        problems: list[DefinitionProblem] = []
        if not isinstance(self.key, str) or not WORKFLOW_KEY_PATTERN.match(self.key):
            problems.append(
                DefinitionProblem(
                    ProblemCode.INVALID_KEY,
                    f"key {self.key!r} is not kebab-case (lowercase letters and digits joined "
                    "by single hyphens, e.g. 'password-reset')",
                )
            )
        # Copied so that the caller's dict cannot change the workflow afterwards; channel names
        # given as strings ("EMAIL") become ChannelType.
        object.__setattr__(self, "channels", _checked_channels(self.channels, problems))
        object.__setattr__(self, "tags", _checked_tags(self.tags, problems))
        problems.extend(_payload_problems(self.payload_model, self.payload_json_schema))
        if self.subscriber is not None and not callable(self.subscriber):
            problems.append(
                DefinitionProblem(
                    ProblemCode.BAD_SUBSCRIBER,
                    "subscriber must be a function of the payload returning a Novu subscriber",
                )
            )
        if self.delay_seconds is not None and not (
            isinstance(self.delay_seconds, int)
            and not isinstance(self.delay_seconds, bool)
            and 1 <= self.delay_seconds <= MAX_DELAY_SECONDS
        ):
            problems.append(
                DefinitionProblem(
                    ProblemCode.BAD_DELAY,
                    f"delay_seconds must be a whole number from 1 to {MAX_DELAY_SECONDS}",
                )
            )
        if problems:
            raise WorkflowDefinitionError(self.key, problems)

    @property
    def payload_schema(self) -> dict[str, Any] | None:
        """The payload's JSON Schema, from the pydantic model or given as is."""
        if self.payload_model is not None:
            return self.payload_model.model_json_schema()
        return self.payload_json_schema


class ChannelSpec(NamedTuple):
    """One channel and its content, as the helpers below build it; `dict([...])` of these is
    a `channels` mapping."""

    channel: ChannelType
    content: ChannelContent


def email(subject: str, body: str) -> ChannelSpec:
    """An EMAIL step: a subject line and an HTML body (variables are autoescaped)."""
    return ChannelSpec(ChannelType.EMAIL, ChannelContent(body=body, subject=subject))


def in_app(body: str, subject: str | None = None) -> ChannelSpec:
    """An IN_APP step: a body (HTML, autoescaped) and an optional subject."""
    return ChannelSpec(ChannelType.IN_APP, ChannelContent(body=body, subject=subject))


def sms(body: str) -> ChannelSpec:
    """An SMS step: plain-text body only."""
    return ChannelSpec(ChannelType.SMS, ChannelContent(body=body))


def push(title: str, body: str) -> ChannelSpec:
    """A PUSH step: a title (sent as the subject) and a plain-text body."""
    return ChannelSpec(ChannelType.PUSH, ChannelContent(body=body, subject=title))


def chat(body: str) -> ChannelSpec:
    """A CHAT step: plain-text body only."""
    return ChannelSpec(ChannelType.CHAT, ChannelContent(body=body))


def define_workflow(
    key: str,
    *channels: ChannelSpec,
    payload: type[BaseModel] | Mapping[str, Any] | None = None,
    subscriber: SubscriberBuilder | None = None,
    name: str | None = None,
    description: str | None = None,
    tags: Iterable[str] = (),
    delay_seconds: int | None = None,
) -> StaticWorkflow:
    """A static workflow from channel helpers; `payload` is a pydantic model or a JSON Schema."""
    problems: list[DefinitionProblem] = []
    steps: dict[ChannelType, ChannelContent] = {}
    for spec in channels:
        if not isinstance(spec, ChannelSpec):
            problems.append(
                DefinitionProblem(
                    ProblemCode.BAD_CHANNEL,
                    f"channels are built with email(), in_app(), sms(), push() or chat(), "
                    f"not given as {type(spec).__name__}",
                )
            )
        elif spec.channel in steps:
            problems.append(
                DefinitionProblem(
                    ProblemCode.DUPLICATE_CHANNEL, f"channel {spec.channel} is defined twice"
                )
            )
        else:
            steps[spec.channel] = spec.content
    if isinstance(tags, str):
        problems.append(
            DefinitionProblem(ProblemCode.BAD_TAGS, "tags must be a list or tuple of strings")
        )
        tags = ()
    payload_model: type[BaseModel] | None = None
    payload_json_schema: dict[str, Any] | None = None
    if isinstance(payload, type) and issubclass(payload, BaseModel):
        payload_model = payload
    elif isinstance(payload, Mapping):
        payload_json_schema = dict(payload)
    elif payload is not None:
        problems.append(
            DefinitionProblem(
                ProblemCode.BAD_PAYLOAD_SCHEMA,
                f"payload must be a pydantic model class or a JSON Schema dict, not "
                f"{type(payload).__name__}",
            )
        )
    try:
        workflow = StaticWorkflow(
            key=key,
            channels=steps,
            payload_model=payload_model,
            payload_json_schema=payload_json_schema,
            name=name,
            description=description,
            tags=tuple(tags),
            subscriber=subscriber,
            delay_seconds=delay_seconds,
        )
    except WorkflowDefinitionError as exc:
        raise WorkflowDefinitionError(key, [*problems, *exc.problems]) from None
    if problems:
        raise WorkflowDefinitionError(key, problems)
    return workflow


def _checked_channels(
    channels: object, problems: list[DefinitionProblem]
) -> dict[ChannelType, ChannelContent]:
    if not isinstance(channels, Mapping):
        problems.append(
            DefinitionProblem(
                ProblemCode.BAD_CHANNEL,
                "channels must be a mapping of channel type to ChannelContent",
            )
        )
        return {}
    if not channels:
        problems.append(
            DefinitionProblem(ProblemCode.NO_CHANNELS, "a workflow needs at least one channel")
        )
    checked: dict[ChannelType, ChannelContent] = {}
    valid_names = ", ".join(channel.value for channel in ChannelType)
    for raw_channel, content in channels.items():
        channel = _channel_type(raw_channel)
        if channel is None:
            problems.append(
                DefinitionProblem(
                    ProblemCode.BAD_CHANNEL,
                    f"unknown channel {raw_channel!r} (expected one of {valid_names})",
                )
            )
            continue
        if channel in checked:
            problems.append(
                DefinitionProblem(
                    ProblemCode.DUPLICATE_CHANNEL, f"channel {channel.value} is defined twice"
                )
            )
            continue
        if not isinstance(content, ChannelContent):
            problems.append(
                DefinitionProblem(
                    ProblemCode.BAD_CONTENT,
                    f"{channel.value} content must be a ChannelContent, not "
                    f"{type(content).__name__}",
                )
            )
            continue
        problems.extend(_content_problems(channel, content))
        checked[channel] = content
    return checked


def _channel_type(value: object) -> ChannelType | None:
    if isinstance(value, ChannelType):
        return value
    if isinstance(value, str):
        try:
            return ChannelType(value.upper())
        except ValueError:
            return None
    return None


def _content_problems(channel: ChannelType, content: ChannelContent) -> list[DefinitionProblem]:
    problems: list[DefinitionProblem] = []
    subject_name = "title" if channel is ChannelType.PUSH else "subject"
    if not isinstance(content.body, str) or not content.body.strip():
        problems.append(
            DefinitionProblem(ProblemCode.BAD_CONTENT, f"{channel.value} body must not be empty")
        )
    else:
        problems.extend(_syntax_problems(content.body, f"{channel.value} body"))
    if content.subject is not None and not isinstance(content.subject, str):
        problems.append(
            DefinitionProblem(
                ProblemCode.BAD_CONTENT, f"{channel.value} {subject_name} must be a string"
            )
        )
    elif channel in SUBJECT_REQUIRED and not (content.subject or "").strip():
        problems.append(
            DefinitionProblem(
                ProblemCode.MISSING_SUBJECT, f"{channel.value} needs a {subject_name}"
            )
        )
    elif content.subject is not None:
        problems.extend(_syntax_problems(content.subject, f"{channel.value} {subject_name}"))
    return problems


def _syntax_problems(source: str, where: str) -> list[DefinitionProblem]:
    try:
        _syntax_env.parse(source)
    except TemplateSyntaxError as exc:
        return [
            DefinitionProblem(
                ProblemCode.JINJA_SYNTAX,
                f"{where}: Jinja syntax error on line {exc.lineno}: {exc.message}",
            )
        ]
    return []


def _checked_tags(tags: object, problems: list[DefinitionProblem]) -> tuple[str, ...]:
    if isinstance(tags, str) or not isinstance(tags, Iterable):
        problems.append(
            DefinitionProblem(ProblemCode.BAD_TAGS, "tags must be a list or tuple of strings")
        )
        return ()
    checked = tuple(tags)
    if not all(isinstance(tag, str) and tag.strip() for tag in checked):
        problems.append(
            DefinitionProblem(ProblemCode.BAD_TAGS, "every tag must be a non-empty string")
        )
    return checked


def _payload_problems(model: object, json_schema: object) -> list[DefinitionProblem]:
    def problem(message: str) -> DefinitionProblem:
        return DefinitionProblem(ProblemCode.BAD_PAYLOAD_SCHEMA, message)

    if model is not None and json_schema is not None:
        return [problem("give payload_model or payload_json_schema, not both")]
    if model is not None:
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return [problem("payload_model must be a pydantic model class")]
        try:
            json_schema = model.model_json_schema()
        except Exception as exc:  # pydantic raises several kinds for unschemable fields
            return [problem(f"payload_model has no JSON Schema: {exc}")]
    if json_schema is None:
        return []
    if not isinstance(json_schema, dict):
        return [problem("payload_json_schema must be a dict")]
    # The same bounds and RE2 patterns as a dynamic workflow's (shared/payloads.py).
    refused = schema_problems(json_schema)
    if refused:
        return [problem(message) for message in refused]
    if json_schema.get("type", "object") != "object":
        return [problem('payload schema must describe an object ("type": "object")')]
    return []
