"""Validation of trigger payloads against a workflow's JSON Schema."""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker
from jsonschema.exceptions import SchemaError


@lru_cache(maxsize=1024)
def _validator(schema_json: str) -> Draft202012Validator:
    return Draft202012Validator(json.loads(schema_json), format_checker=FormatChecker())


# The validator of each schema object a workflow holds, by identity: a trigger finds it without
# serialising the schema. The schema is kept in the entry, so its id cannot be reused meanwhile.
_BY_IDENTITY: dict[int, tuple[dict[str, Any], Draft202012Validator]] = {}
_BY_IDENTITY_MAX = 1024


def _validator_of(schema: dict[str, Any]) -> Draft202012Validator:
    entry = _BY_IDENTITY.get(id(schema))
    if entry is not None and entry[0] is schema:
        return entry[1]
    validator = _validator(json.dumps(schema, sort_keys=True))
    if len(_BY_IDENTITY) >= _BY_IDENTITY_MAX:
        _BY_IDENTITY.clear()
    _BY_IDENTITY[id(schema)] = (schema, validator)
    return validator


def payload_errors(schema: dict[str, Any] | None, payload: dict[str, Any]) -> list[dict[str, str]]:
    """Every way the payload fails the schema, as `{field, message}`; empty when it passes.

    The schema must not be changed in place once validated against (workflows replace theirs
    on reload)."""
    if not schema:
        return []
    try:
        validator = _validator_of(schema)
    except SchemaError as exc:
        return [
            {"field": "", "message": f"the workflow's payload schema is invalid: {exc.message}"}
        ]
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
