"""Payload validation: the compiled fast check never calls valid what jsonschema (2020-12, the
authority) calls invalid, so payload_errors answers exactly as jsonschema alone would."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator, FormatChecker

from shared.payloads import _fast_check, payload_errors, portable

NAMES = st.sampled_from(["a", "b", "c", "name", "id"])
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 5),
    st.sampled_from([0.0, 1.0, 1.5, -2.5, 10.0]),
    st.text(max_size=6),
)
JSON: st.SearchStrategy[Any] = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(NAMES, inner, max_size=4)),
    max_leaves=12,
)
TYPES = st.sampled_from(["null", "boolean", "integer", "number", "string", "array", "object"])


def _leaf_keywords() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {},
        optional={
            "type": st.one_of(TYPES, st.lists(TYPES, min_size=1, max_size=3, unique=True)),
            "minLength": st.integers(0, 4),
            "maxLength": st.integers(0, 6),
            "pattern": st.sampled_from(["^a", "b$", "[0-9]", "^$", "x+"]),
            "minimum": st.sampled_from([-1, 0, 1.5]),
            "maximum": st.sampled_from([0, 2, 4.5]),
            "exclusiveMinimum": st.sampled_from([-1, 0]),
            "exclusiveMaximum": st.sampled_from([1, 3]),
            "minItems": st.integers(0, 3),
            "maxItems": st.integers(0, 3),
            "minProperties": st.integers(0, 3),
            "maxProperties": st.integers(0, 3),
            "required": st.lists(NAMES, max_size=3, unique=True),
            "enum": st.lists(st.text(max_size=3), min_size=1, max_size=3),
            "const": st.text(max_size=3),
            "description": st.text(max_size=5),
        },
    )


SCHEMAS: st.SearchStrategy[Any] = st.recursive(
    st.one_of(st.booleans(), _leaf_keywords()),
    lambda inner: st.one_of(
        st.builds(lambda base, props: {**base, "properties": props},
                  _leaf_keywords(), st.dictionaries(NAMES, inner, max_size=3)),
        st.builds(lambda base, sub: {**base, "additionalProperties": sub}, _leaf_keywords(), inner),
        st.builds(lambda base, sub: {**base, "items": sub}, _leaf_keywords(), inner),
        st.builds(lambda subs: {"anyOf": subs}, st.lists(inner, min_size=1, max_size=3)),
        st.builds(lambda subs: {"allOf": subs}, st.lists(inner, min_size=1, max_size=3)),
        st.builds(lambda subs: {"oneOf": subs}, st.lists(inner, min_size=1, max_size=3)),
        st.builds(lambda sub: {"not": sub}, inner),
        st.builds(lambda i, t, e: {"if": i, "then": t, "else": e}, inner, inner, inner),
    ),
    max_leaves=6,
)  # fmt: skip


@settings(max_examples=1500, deadline=None, suppress_health_check=list(HealthCheck))
@given(schema=SCHEMAS, instance=JSON)
def test_the_fast_check_never_accepts_what_jsonschema_refuses(schema: Any, instance: Any) -> None:
    if not isinstance(schema, dict):
        schema = {"not": {}} if schema is False else {}
    # Patterns run on RE2 only, never in fastjsonschema's compiled code (Python's `re`).
    assert portable(schema) or "pattern" in json.dumps(schema)
    fast = _fast_check(schema)
    authority = Draft202012Validator(schema, format_checker=FormatChecker()).is_valid(instance)
    if fast is not None and fast(instance):
        assert authority, (schema, instance)
    # RE2's `$` is the end of the text, as ECMA-262's; Python's also matches before a final
    # newline: the two engines are compared on payloads without one (JSON writes it `\n`).
    if isinstance(instance, dict) and "\\n" not in json.dumps(instance):
        assert (payload_errors(schema, instance) == []) == authority


def test_schemas_the_two_drafts_read_differently_are_left_to_jsonschema() -> None:
    for schema in (
        {"type": "string", "format": "email"},
        {"enum": [1, "a"]},
        {"const": 1},
        {"multipleOf": 0.1},
        {"type": "array", "uniqueItems": True},
        {"prefixItems": [{"type": "string"}]},
        {"items": [{"type": "string"}]},
        {"$ref": "#/$defs/x", "$defs": {"x": {}}},
        {"properties": {"a": {"format": "date-time"}}},
        {"type": "string", "pattern": "^a"},
        {"patternProperties": {"^a": {"type": "string"}}},
    ):
        assert not portable(schema), schema
        assert _fast_check(schema) is None
    assert _fast_check({"type": "object", "properties": {"a": {"enum": ["x", "y"]}}}) is not None


def test_errors_are_still_worded_by_jsonschema() -> None:
    schema = {
        "type": "object",
        "required": ["name"],
        "properties": {"name": {"type": "string", "minLength": 2}},
    }
    fast = _fast_check(schema)
    assert fast is not None and fast({"name": "Ada"}) and not fast({"name": "A"})
    assert payload_errors(schema, {"name": "Ada"}) == []
    assert payload_errors(schema, {"name": "A"}) == [
        {"field": "name", "message": "'A' is too short"}
    ]
    assert payload_errors(schema, {}) == [
        {"field": "name", "message": "'name' is a required property"}
    ]
