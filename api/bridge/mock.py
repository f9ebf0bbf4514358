"""Placeholder payloads for `preview`, as @novu/framework 2.13.2 makes them.

For `preview` the framework builds a mock of the workflow's payload schema (json-schema-faker,
with `useDefaultValue`, `alwaysFakeOptionals` and `fillProperties: false`, and every word
replaced by "[placeholder]") and lays the payload Novu sent over it, key by key
(`Object.assign(mock, payload)`), before it validates and renders. So Novu's dashboard can
preview a step with an empty or partial payload. What the framework generates, checked against
2.13.2: a required property gets a value and an optional one only its `default`; a string is
"[placeholder]" (repeated to reach `minLength`, cut at `maxLength`), a formatted string a
valid sample of its format; `const`, then the first `enum` value; numbers within their bounds;
one array item; nested objects alike. The framework draws formats and numbers at random; these
are fixed so that a preview is the same every time.
"""

from __future__ import annotations

from typing import Any

PLACEHOLDER = "[placeholder]"
# Deeper nesting (or a `$ref` cycle) ends in an empty value instead of recursing further.
MAX_DEPTH = 8
FORMAT_SAMPLES: dict[str, str] = {
    "email": "placeholder@example.com",
    "idn-email": "placeholder@example.com",
    "uri": "https://example.com/placeholder",
    "iri": "https://example.com/placeholder",
    "uri-reference": "https://example.com/placeholder",
    "url": "https://example.com/placeholder",
    "hostname": "example.com",
    "idn-hostname": "example.com",
    "date-time": "1970-01-01T00:00:00Z",
    "date": "1970-01-01",
    "time": "00:00:00Z",
    "uuid": "00000000-0000-4000-8000-000000000000",
    "ipv4": "192.0.2.1",
    "ipv6": "2001:db8::1",
}


def mock_payload(schema: dict[str, Any] | None, given: dict[str, Any]) -> dict[str, Any]:
    """The payload `preview` renders: placeholders for what `given` leaves out, then `given`."""
    mocked = _value(schema, schema or {}, 0) if schema else {}
    return {**(mocked if isinstance(mocked, dict) else {}), **given}


def _value(schema: Any, root: dict[str, Any], depth: int) -> Any:
    if not isinstance(schema, dict) or depth > MAX_DEPTH:
        return None
    if "default" in schema:
        return schema["default"]
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    ref = schema.get("$ref")
    if isinstance(ref, str):
        return _value(_resolve(ref, root), root, depth + 1)
    for combinator in ("allOf", "anyOf", "oneOf"):
        options = schema.get(combinator)
        if isinstance(options, list) and options:
            return _value(options[0], root, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None:
        kind = "object" if "properties" in schema else None
    if kind == "object":
        return _object(schema, root, depth)
    if kind == "array":
        item = _value(schema.get("items"), root, depth + 1)
        count = max(1, _int(schema.get("minItems"), 1))
        return [item] * min(count, _int(schema.get("maxItems"), count))
    if kind == "string":
        return _string(schema)
    if kind in ("number", "integer"):
        return _number(schema, integer=kind == "integer")
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return {}


def _object(schema: dict[str, Any], root: dict[str, Any], depth: int) -> dict[str, Any]:
    properties = schema.get("properties")
    if not isinstance(properties, dict):
        return {}
    required = schema.get("required")
    wanted = set(required) if isinstance(required, list) else set()
    result: dict[str, Any] = {}
    for name, subschema in properties.items():
        if name in wanted:
            result[name] = _value(subschema, root, depth + 1)
        elif isinstance(subschema, dict) and "default" in subschema:
            result[name] = subschema["default"]
    return result


def _string(schema: dict[str, Any]) -> str:
    sample = FORMAT_SAMPLES.get(str(schema.get("format")), PLACEHOLDER)
    shortest = _int(schema.get("minLength"), 0)
    while len(sample) < shortest:
        sample += PLACEHOLDER
    longest = schema.get("maxLength")
    return sample[: int(longest)] if isinstance(longest, int) and longest >= 0 else sample


def _number(schema: dict[str, Any], *, integer: bool) -> int | float:
    low, high = schema.get("minimum"), schema.get("maximum")
    value: float = 0
    if isinstance(low, int | float):
        value = low
    elif isinstance(schema.get("exclusiveMinimum"), int | float):
        value = schema["exclusiveMinimum"] + 1
    elif isinstance(high, int | float) and high < 0:
        value = high
    return int(value) if integer else value


def _int(value: Any, fallback: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else fallback


def _resolve(ref: str, root: dict[str, Any]) -> Any:
    """A local `#/...` reference within the schema (pydantic's `$defs`); None otherwise."""
    if not ref.startswith("#"):
        return None
    node: Any = root
    for part in ref.lstrip("#").strip("/").split("/"):
        if not part:
            continue
        if not isinstance(node, dict):
            return None
        node = node.get(part.replace("~1", "/").replace("~0", "~"))
    return node
