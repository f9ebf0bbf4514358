"""Validation of trigger payloads against a workflow's JSON Schema (2020-12, by jsonschema).

Every trigger is validated, and jsonschema interprets a schema on each call: it was about a
tenth of a trigger's CPU. A schema that reads the same in draft 7 is also compiled to a Python
function by fastjsonschema, which answers "valid" for the common case in a fraction of the
time; whenever it does not, jsonschema decides as before (docs/performance.md)."""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import lru_cache
from typing import Any

import fastjsonschema
from jsonschema import Draft202012Validator, FormatChecker
from jsonschema.exceptions import SchemaError


@lru_cache(maxsize=1024)
def _validator(schema_json: str) -> Draft202012Validator:
    return Draft202012Validator(json.loads(schema_json), format_checker=FormatChecker())


# Keywords that mean the same in JSON Schema draft 7, which fastjsonschema compiles into a
# Python function, and in 2020-12, which XNovu validates against; annotations are among them.
# Left out on purpose: `format` (jsonschema's FormatChecker decides formats its own way),
# `enum`/`const` (unless every value is a string: the two libraries compare 1, 1.0 and true
# their own ways), `multipleOf` (float arithmetic), `uniqueItems`, `contains`, `items` as a
# list, and every 2020-12-only or referencing keyword.
_PORTABLE = frozenset(
    {
        "type", "properties", "required", "additionalProperties", "patternProperties",
        "propertyNames", "minProperties", "maxProperties", "items", "minItems", "maxItems",
        "minLength", "maxLength", "pattern", "minimum", "maximum", "exclusiveMinimum",
        "exclusiveMaximum", "allOf", "anyOf", "oneOf", "not", "if", "then", "else", "enum",
        "const", "title", "description", "default", "examples", "$comment", "deprecated",
        "readOnly", "writeOnly",
    }
)  # fmt: skip
_SUBSCHEMA = frozenset(
    {"additionalProperties", "propertyNames", "items", "not", "if", "then", "else"}
)
_SUBSCHEMA_MAP = frozenset({"properties", "patternProperties"})
_SUBSCHEMA_LIST = frozenset({"allOf", "anyOf", "oneOf"})


def portable(schema: Any) -> bool:
    """Whether `schema` uses only keywords that draft 7 and 2020-12 read alike."""
    if isinstance(schema, bool):
        return True
    if not isinstance(schema, dict):
        return False
    for key, value in schema.items():
        if key not in _PORTABLE:
            return False
        if key in _SUBSCHEMA and not portable(value):
            return False
        if key in _SUBSCHEMA_MAP and not (
            isinstance(value, dict) and all(portable(v) for v in value.values())
        ):
            return False
        if key in _SUBSCHEMA_LIST and not (
            isinstance(value, list) and all(portable(v) for v in value)
        ):
            return False
        if key == "enum" and not (
            isinstance(value, list) and all(isinstance(v, str) for v in value)
        ):
            return False
        if key == "const" and not isinstance(value, str):
            return False
    return True


FastCheck = Callable[[Any], bool]


def _fast_check(schema: dict[str, Any]) -> FastCheck | None:
    """A compiled validity check for a portable schema (None otherwise). Its True is final;
    its False only means jsonschema must decide, and word the errors."""
    body = {key: value for key, value in schema.items() if key != "$schema"}
    if not portable(body):
        return None
    try:
        validate = fastjsonschema.compile(
            {**body, "$schema": "http://json-schema.org/draft-07/schema#"}, use_default=False
        )
    except fastjsonschema.JsonSchemaDefinitionException:
        return None

    def check(payload: Any) -> bool:
        try:
            validate(payload)
        except fastjsonschema.JsonSchemaException:
            return False
        except Exception:  # a pattern fastjsonschema cannot run: jsonschema decides
            return False
        return True

    return check


# The validators of each schema object a workflow holds, by identity: a trigger finds them
# without serialising the schema. The schema is kept in the entry, so its id cannot be reused.
_BY_IDENTITY: dict[int, tuple[dict[str, Any], Draft202012Validator, FastCheck | None]] = {}
_BY_IDENTITY_MAX = 1024


def _validators_of(schema: dict[str, Any]) -> tuple[Draft202012Validator, FastCheck | None]:
    entry = _BY_IDENTITY.get(id(schema))
    if entry is not None and entry[0] is schema:
        return entry[1], entry[2]
    validator = _validator(json.dumps(schema, sort_keys=True))
    fast = _fast_check(schema)
    if len(_BY_IDENTITY) >= _BY_IDENTITY_MAX:
        _BY_IDENTITY.clear()
    _BY_IDENTITY[id(schema)] = (schema, validator, fast)
    return validator, fast


def payload_errors(schema: dict[str, Any] | None, payload: dict[str, Any]) -> list[dict[str, str]]:
    """Every way the payload fails the schema, as `{field, message}`; empty when it passes.

    The schema must not be changed in place once validated against (workflows replace theirs
    on reload)."""
    if not schema:
        return []
    try:
        validator, fast = _validators_of(schema)
    except SchemaError as exc:
        return [
            {"field": "", "message": f"the workflow's payload schema is invalid: {exc.message}"}
        ]
    if fast is not None and fast(payload):
        return []
    if validator.is_valid(payload):
        return []
    errors = []
    for err in sorted(validator.iter_errors(payload), key=lambda e: list(map(str, e.path))):
        path = ".".join(str(part) for part in err.absolute_path)
        if err.validator == "required" and isinstance(err.instance, dict):
            # Name the missing property itself, not its parent.
            missing = [name for name in err.validator_value if name not in err.instance]
            for name in missing:
                errors.append({"field": f"{path}.{name}" if path else name, "message": err.message})
            continue
        errors.append({"field": path or "payload", "message": err.message})
    return errors


def json_size(value: Any) -> int:
    """Bytes of the compact JSON encoding of a value."""
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())
