"""JSON Schemas of the bridge: what each step type outputs and reports back, and validation.

The channel schemas are those of @novu/framework 2.13.2
(packages/framework/src/schemas/steps/channels/*.schema.ts, as the published package declares
them in `discover`): Novu validates a step's outputs against them, so the bridge declares the
same ones and checks its own outputs before answering.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker

from shared.db.enums import ChannelType

# The framework's schema for "nothing": controls of a step without controls, results of a step
# that reports nothing back.
EMPTY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {},
    "required": [],
    "additionalProperties": False,
}

_EMAIL_OUTPUT: dict[str, Any] = {
    "type": "object",
    "properties": {
        "subject": {"type": "string", "minLength": 1},
        "body": {"type": "string"},
        "from": {
            "type": "object",
            "properties": {"email": {"type": "string"}, "name": {"type": "string"}},
            "additionalProperties": False,
        },
        "replyTo": {"type": "string"},
        "preheader": {"type": "string"},
        "useProviderDefaults": {"type": "boolean"},
    },
    "required": ["subject", "body"],
    "additionalProperties": False,
}

# An in-app redirect: an absolute http(s) URL or a path; a path opens in the same tab.
_REDIRECT: dict[str, Any] = {
    "type": "object",
    "properties": {
        "url": {
            "type": "string",
            "pattern": r"^(?!mailto:)(?:(https?):\/\/[^\s/$.?#].[^\s]*)|^(\/[^\s]*)$",
        },
        "target": {
            "type": "string",
            "enum": ["_self", "_blank", "_parent", "_top", "_unfencedTop"],
            "default": "_blank",
        },
    },
    "if": {"properties": {"url": {"type": "string", "pattern": "^/"}}},
    "then": {"properties": {"target": {"default": "_self"}}},
    "else": {"properties": {"target": {"default": "_blank"}}},
    "required": ["url"],
    "additionalProperties": False,
}

_IN_APP_ACTION: dict[str, Any] = {
    "type": "object",
    "properties": {"label": {"type": "string"}, "redirect": _REDIRECT},
    "required": ["label"],
    "additionalProperties": False,
}

_IN_APP_OUTPUT: dict[str, Any] = {
    "type": "object",
    "properties": {
        "subject": {"type": "string", "minLength": 1},
        "body": {"type": "string", "minLength": 1},
        "avatar": {"type": "string", "format": "uri"},
        "primaryAction": _IN_APP_ACTION,
        "secondaryAction": _IN_APP_ACTION,
        "data": {"type": "object", "additionalProperties": True},
        "redirect": _REDIRECT,
    },
    "anyOf": [{"required": ["subject"]}, {"required": ["body"]}],
    "additionalProperties": False,
}

_IN_APP_RESULT: dict[str, Any] = {
    "type": "object",
    "properties": {
        "seen": {"type": "boolean"},
        "read": {"type": "boolean"},
        "lastSeenDate": {"type": "string", "format": "date-time", "nullable": True},
        "lastReadDate": {"type": "string", "format": "date-time", "nullable": True},
    },
    "required": ["seen", "read", "lastSeenDate", "lastReadDate"],
    "additionalProperties": False,
}

_BODY_ONLY_OUTPUT: dict[str, Any] = {
    "type": "object",
    "properties": {"body": {"type": "string"}},
    "required": ["body"],
    "additionalProperties": False,
}

_PUSH_OUTPUT: dict[str, Any] = {
    "type": "object",
    "properties": {"subject": {"type": "string"}, "body": {"type": "string"}},
    "required": ["subject", "body"],
    "additionalProperties": False,
}

# Chat: 2.13.2 also accepts a `card` (anyOf body | card); XNovu only ever sends a body, so the
# bridge declares the body-only form, which Novu's schema accepts as well.
OUTPUT_SCHEMAS: dict[ChannelType, dict[str, Any]] = {
    ChannelType.EMAIL: _EMAIL_OUTPUT,
    ChannelType.IN_APP: _IN_APP_OUTPUT,
    ChannelType.SMS: _BODY_ONLY_OUTPUT,
    ChannelType.PUSH: _PUSH_OUTPUT,
    ChannelType.CHAT: _BODY_ONLY_OUTPUT,
}

RESULT_SCHEMAS: dict[ChannelType, dict[str, Any]] = {
    ChannelType.EMAIL: EMPTY_SCHEMA,
    ChannelType.IN_APP: _IN_APP_RESULT,
    ChannelType.SMS: EMPTY_SCHEMA,
    ChannelType.PUSH: EMPTY_SCHEMA,
    ChannelType.CHAT: EMPTY_SCHEMA,
}

# Property under which XNovu's own data rides in the payload (shared/notifications/novu_trigger.py).
XNOVU_PROPERTY: dict[str, Any] = {
    "type": "object",
    "description": "XNovu's delivery data: enterprise, notification and rendered content",
}


def schema_pair(schema: dict[str, Any]) -> dict[str, Any]:
    """`{schema, unknownSchema}`: the framework sends both; for a JSON Schema they are equal."""
    return {"schema": schema, "unknownSchema": schema}


@lru_cache(maxsize=1024)
def _validator(schema_json: str) -> Draft202012Validator:
    return Draft202012Validator(json.loads(schema_json), format_checker=FormatChecker())


def validator_for(schema: dict[str, Any]) -> Draft202012Validator:
    """A validator of a schema, cached by the schema's content."""
    return _validator(json.dumps(schema, sort_keys=True, separators=(",", ":")))


def problems(schema: dict[str, Any], instance: Any) -> list[dict[str, str]]:
    """Every way `instance` fails `schema`, as the framework reports it: `[{path, message}]`,
    `path` a JSON Pointer to the failing value ("" for the whole document)."""
    errors = sorted(
        validator_for(schema).iter_errors(instance), key=lambda e: [str(p) for p in e.path]
    )
    return [
        {"path": "".join(f"/{part}" for part in error.absolute_path), "message": error.message}
        for error in errors
    ]
