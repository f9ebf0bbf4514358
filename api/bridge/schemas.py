"""JSON Schemas of the bridge: what each step type outputs and reports back, and validation.

The channel schemas are those of @novu/framework 2.13.2
(packages/framework/src/schemas/steps/channels/*.schema.ts, as the published package declares
them in `discover`): Novu validates a step's outputs against them, so the bridge declares the
same ones and checks its own outputs before answering.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import nullcontext
from functools import lru_cache
from typing import Any

import fastjsonschema
from jsonschema import Draft202012Validator, FormatChecker

from shared.db.enums import ChannelType
from shared.payloads import (
    LOOP_CHECK_WORK,
    CheckTooCostly,
    PayloadValidator,
    check_estimate,
    compiled_affordable,
    json_size,
    limited_steps,
    subschema_cost,
)

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

# The delay step (framework schemas/steps/actions/delay.schema.ts): XNovu only answers the
# `regular` form, but declares all three as the framework does, so Novu stores the same schema.
_DELAY_UNITS = ["seconds", "minutes", "hours", "days", "weeks", "months"]
DELAY_OUTPUT: dict[str, Any] = {
    "oneOf": [
        {
            "type": "object",
            "properties": {
                "type": {"enum": ["regular"]},
                "amount": {"type": "number"},
                "unit": {"type": "string", "enum": _DELAY_UNITS},
                "extendToSchedule": {"type": "boolean"},
            },
            "required": ["amount", "unit"],
            "additionalProperties": False,
        },
        {
            "type": "object",
            "properties": {
                "type": {"enum": ["timed"]},
                "cron": {"type": "string"},
                "extendToSchedule": {"type": "boolean"},
            },
            "required": ["cron"],
            "additionalProperties": False,
        },
        {
            "type": "object",
            "properties": {
                "type": {"enum": ["dynamic"]},
                "dynamicKey": {"type": "string"},
                "extendToSchedule": {"type": "boolean"},
            },
            "required": ["dynamicKey"],
            "additionalProperties": False,
        },
    ]
}
DELAY_RESULT: dict[str, Any] = {
    "type": "object",
    "properties": {"duration": {"type": "number"}},
    "required": ["duration"],
    "additionalProperties": False,
}

# The schemas above are the bridge's own code; any other is a tenant's (see _validator).
_OWN_SCHEMAS: tuple[dict[str, Any], ...] = (
    EMPTY_SCHEMA,
    *OUTPUT_SCHEMAS.values(),
    *RESULT_SCHEMAS.values(),
    DELAY_OUTPUT,
    DELAY_RESULT,
)

# Property under which XNovu's own data rides in the payload (shared/notifications/novu_trigger.py).
XNOVU_PROPERTY: dict[str, Any] = {
    "type": "object",
    "description": "XNovu's delivery data: enterprise, notification and rendered content",
}


def schema_pair(schema: dict[str, Any]) -> dict[str, Any]:
    """`{schema, unknownSchema}`: the framework sends both; for a JSON Schema they are equal."""
    return {"schema": schema, "unknownSchema": schema}


@lru_cache(maxsize=1024)
def _validator(schema_json: str, trusted: bool) -> Draft202012Validator:
    # A tenant's schema (any but this module's own) runs its patterns on RE2 (shared/payloads.py);
    # ours keep Python's `re`: the in-app redirect's lookahead is beyond RE2, and they are code.
    kind = Draft202012Validator if trusted else PayloadValidator
    validator: Draft202012Validator = kind(json.loads(schema_json), format_checker=FormatChecker())
    return validator


class _ByIdentity:
    """Values computed from a schema, by the schema object's identity.

    The schemas checked per request are long-lived objects (this module's constants, a
    workflow's schema held by the registry), and serialising one to find its validator cost as
    much as the check itself. Each schema is kept with its value so that its id cannot be
    reused while the entry lives; registry reloads leave old schemas behind, so past `size`
    entries it starts over.
    """

    def __init__(self, compute: Callable[[dict[str, Any]], Any], size: int = 1024) -> None:
        self._compute = compute
        self._size = size
        self._entries: dict[int, tuple[dict[str, Any], Any]] = {}

    def has(self, schema: dict[str, Any]) -> bool:
        """Whether the schema's value is computed already."""
        entry = self._entries.get(id(schema))
        return entry is not None and entry[0] is schema

    def __call__(self, schema: dict[str, Any]) -> Any:
        entry = self._entries.get(id(schema))
        if entry is not None and entry[0] is schema:
            return entry[1]
        value = self._compute(schema)
        if len(self._entries) >= self._size:
            self._entries.clear()
        self._entries[id(schema)] = (schema, value)
        return value


_validators = _ByIdentity(
    lambda schema: _validator(
        json.dumps(schema, sort_keys=True, separators=(",", ":")), _trusted(schema)
    )
)
_regex = _ByIdentity(lambda schema: _has_regex(schema))
_subschemas = _ByIdentity(subschema_cost)


def _trusted(schema: dict[str, Any]) -> bool:
    """Whether the schema is one of this module's own (the bridge's code, not a tenant's)."""
    return any(schema is own for own in _OWN_SCHEMAS)


def validator_for(schema: dict[str, Any]) -> Draft202012Validator:
    """A validator of a schema, cached by the schema object and by its content."""
    validator: Draft202012Validator = _validators(schema)
    return validator


def loop_affordable(schema: dict[str, Any], instance: Any) -> bool:
    """Whether checking the instance against the schema is cheap enough for the event loop:
    its worst case within LOOP_CHECK_WORK (shared/payloads.py)."""
    return check_estimate(schema, instance, LOOP_CHECK_WORK) <= LOOP_CHECK_WORK


def uses_regex(schema: dict[str, Any]) -> bool:
    """Whether checking against the schema runs its own regular expressions (`pattern`,
    `patternProperties`): RE2's for a tenant's schema, linear in the text but not free."""
    return bool(_regex(schema))


def _has_regex(node: Any) -> bool:
    if isinstance(node, dict):
        return any(
            key in ("pattern", "patternProperties") or _has_regex(value)
            for key, value in node.items()
        )
    if isinstance(node, list):
        return any(_has_regex(item) for item in node)
    return False


# Keywords whose meaning fastjsonschema (drafts 4 to 7) shares with draft 2020-12. A schema
# made only of these is first checked by fastjsonschema's compiled code, about ten times faster
# than jsonschema; only a failure is then explained by jsonschema (`problems`), which stays the
# judge: where the two differ, fastjsonschema is the stricter (below), never the kinder.
_FAST_KEYWORDS = frozenset(
    {
        "type", "properties", "required", "additionalProperties", "enum", "const",
        "minLength", "maxLength", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
        "multipleOf", "minItems", "maxItems", "uniqueItems", "minProperties", "maxProperties",
        "anyOf", "oneOf", "allOf", "not", "if", "then", "else", "format", "pattern",
        "patternProperties", "propertyNames", "items", "title", "description", "default",
        "examples", "nullable", "$defs", "$schema", "$comment", "readOnly", "writeOnly",
    }
)  # fmt: skip
# Beside a `$ref`, draft 7 ignores every sibling; 2020-12 applies them. Annotations only, then.
_REF_SIBLINGS = frozenset({"$ref", "title", "description", "default", "examples", "$comment"})
_FORMATS = FormatChecker()
# jsonschema's own format checks replace fastjsonschema's of the same name; formats only
# fastjsonschema knows (date-time, uri, ...) it checks and jsonschema does not: stricter.
_FAST_FORMATS = {
    name: (lambda value, name=name: _FORMATS.conforms(value, name)) for name in _FORMATS.checkers
}


def _fast_checker(schema: dict[str, Any]) -> Callable[[Any], Any] | None:
    # jsonschema's validator and the regex flag too, so that a schema `compiled` says is ready
    # costs the event loop nothing to prepare, even when a check fails and jsonschema explains.
    validator_for(schema)
    uses_regex(schema)
    if not _fast_compatible(schema, top=True):
        return None
    if uses_regex(schema) and not _trusted(schema):
        return None  # fastjsonschema runs patterns with `re`, which backtracks
    try:
        # use_default=False: fastjsonschema would otherwise write defaults into the instance.
        check: Callable[[Any], Any] = fastjsonschema.compile(
            _fast_form(schema), formats=_FAST_FORMATS, use_default=False, detailed_exceptions=False
        )
    except Exception:  # a schema it cannot compile is checked by jsonschema alone
        return None
    return check


def _fast_form(node: Any) -> Any:
    """The schema as fastjsonschema should be given it: the same, with every `$` inside a
    character class of a `pattern` (or `patternProperties` key) escaped. fastjsonschema turns
    each unescaped `$` of a pattern into `\\Z`, which inside a class is a bad escape, so a
    schema like @novu/framework's in-app redirect URL (`[^\\s/$.?#]`) would never compile and
    every check of it would fall to jsonschema. Inside a class `$` and `\\$` mean the same."""
    if isinstance(node, list):
        return [_fast_form(item) for item in node]
    if not isinstance(node, dict):
        return node
    form: dict[str, Any] = {}
    for key, value in node.items():
        if key == "pattern" and isinstance(value, str):
            form[key] = escape_class_dollars(value)
        elif key == "patternProperties" and isinstance(value, dict):
            form[key] = {escape_class_dollars(k): _fast_form(v) for k, v in value.items()}
        elif key in ("enum", "const", "default", "examples"):
            form[key] = value  # values, not schemas
        else:
            form[key] = _fast_form(value)
    return form


def escape_class_dollars(pattern: str) -> str:
    """`pattern` with each `$` inside a character class written `\\$` (the same regex)."""
    out: list[str] = []
    in_class, i, n = False, 0, len(pattern)
    while i < n:
        char = pattern[i]
        if char == "\\":
            out.append(pattern[i : i + 2])
            i += 2
            continue
        if not in_class and char == "[":
            in_class = True
            out.append(char)
            i += 1
            if pattern.startswith("^", i):
                out.append("^")
                i += 1
            if pattern.startswith("]", i):  # a `]` first in a class is a literal one
                out.append("]")
                i += 1
            continue
        if in_class and char == "]":
            in_class = False
        out.append("\\$" if in_class and char == "$" else char)
        i += 1
    return "".join(out)


def _fast_compatible(node: Any, *, top: bool = False) -> bool:
    """Whether every (sub)schema uses only keywords both libraries read alike."""
    if isinstance(node, bool):
        return True
    if not isinstance(node, dict):
        return False
    if "$ref" in node:
        return set(node) <= _REF_SIBLINGS and str(node["$ref"]).startswith("#/")
    if not set(node) <= _FAST_KEYWORDS or ("$defs" in node and not top):
        return False
    for key, value in node.items():
        if key in ("properties", "patternProperties", "$defs"):
            if not isinstance(value, dict) or not all(map(_fast_compatible, value.values())):
                return False
        elif key in ("anyOf", "oneOf", "allOf"):
            if not isinstance(value, list) or not all(map(_fast_compatible, value)):
                return False
        elif key in ("additionalProperties", "not", "if", "then", "else", "propertyNames"):
            if not _fast_compatible(value):
                return False
        elif key == "items" and not _fast_compatible(value):
            return False  # a list of item schemas means one thing in draft 7, another in 2020
    return True


_fast_checkers = _ByIdentity(_fast_checker)


def compiled(schema: dict[str, Any]) -> bool:
    """Whether `problems` has prepared the schema already. Compiling one takes milliseconds
    (26 ms for 1.7 KB of schema), so the event loop leaves the first check to a thread."""
    return _fast_checkers.has(schema)


def problems(schema: dict[str, Any], instance: Any) -> list[dict[str, str]]:
    """Every way `instance` fails `schema`, as the framework reports it: `[{path, message}]`,
    `path` a JSON Pointer to the failing value ("" for the whole document)."""
    trusted = _trusted(schema)
    # A tenant's schema may make a check cost only what the instance's size allows.
    size = 0 if trusted else json_size(instance)
    check = _fast_checkers(schema)
    if check is not None and (trusted or compiled_affordable(_subschemas(schema), instance, size)):
        try:
            check(instance)
            return []
        except fastjsonschema.JsonSchemaException:
            pass  # jsonschema says how, or that the stricter check was wrong
    validator = validator_for(schema)
    try:
        with nullcontext() if trusted else limited_steps(size):
            errors = sorted(validator.iter_errors(instance), key=lambda e: [str(p) for p in e.path])
    except CheckTooCostly as exc:
        return [{"path": "", "message": str(exc)}]
    return [
        {"path": "".join(f"/{part}" for part in error.absolute_path), "message": error.message}
        for error in errors
    ]
