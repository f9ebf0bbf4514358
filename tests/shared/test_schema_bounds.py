"""A payload schema is a tenant's input: its patterns run on RE2 and it is bounded when saved
(shared/payloads.py; docs/architecture.md, "Hostile input")."""

from __future__ import annotations

import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from shared.payloads import (
    MAX_SCHEMA_BYTES,
    MAX_SCHEMA_DEPTH,
    PayloadValidator,
    json_depth,
    payload_errors,
    schema_problems,
)
from shared.workflows.definition import WorkflowDefinitionError, define_workflow, sms

# Patterns Python's `re` and RE2 read alike on text without a newline.
PATTERNS = st.sampled_from(["^a", "b$", "[0-9]", "^$", "x+", "^[a-c]{2}$", "(ab|c)"])
NAMES = st.text(alphabet="abcx0", max_size=4)


@settings(max_examples=500, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    patterns=st.dictionaries(PATTERNS, st.sampled_from([{"type": "string"}, False]), max_size=3),
    properties=st.lists(NAMES, max_size=2),
    additional=st.sampled_from([True, False, {"type": "integer"}]),
    pattern=st.none() | PATTERNS,
    instance=st.dictionaries(NAMES, st.one_of(st.integers(0, 2), NAMES), max_size=4),
)
def test_re2_keywords_answer_as_jsonschemas_own(
    patterns: dict[str, Any],
    properties: list[str],
    additional: Any,
    pattern: str | None,
    instance: dict[str, Any],
) -> None:
    schema: dict[str, Any] = {
        "type": "object",
        "patternProperties": patterns,
        "properties": {name: {"type": "integer"} for name in properties},
        "additionalProperties": additional,
    }
    if pattern is not None:
        schema["propertyNames"] = {"pattern": pattern}
    ours = sorted(e.message for e in PayloadValidator(schema).iter_errors(instance))
    theirs = sorted(e.message for e in Draft202012Validator(schema).iter_errors(instance))
    assert ours == theirs


def test_a_catastrophic_pattern_is_checked_in_linear_time() -> None:
    schema = {"type": "object", "properties": {"code": {"type": "string", "pattern": "^(a+)+$"}}}
    assert payload_errors(schema, {"code": "aaaa"}) == []
    started = time.perf_counter()
    # Python's `re` needs about 2**40 steps for this one.
    errors = payload_errors(schema, {"code": "a" * 40 + "!"})
    assert time.perf_counter() - started < 1.0
    assert [error["field"] for error in errors] == ["code"]


def test_pattern_properties_and_additional_properties_run_on_re2() -> None:
    schema = {
        "type": "object",
        "patternProperties": {"^(a+)+$": {"type": "string"}},
        "additionalProperties": False,
    }
    started = time.perf_counter()
    errors = payload_errors(schema, {"a" * 40 + "!": "x", "aaa": 1})
    assert time.perf_counter() - started < 1.0
    assert {error["message"] for error in errors} == {
        "1 is not of type 'string'",
        f"{'a' * 40 + '!'!r} does not match any of the regexes: '^(a+)+$'",
    }


def test_each_missing_required_property_is_named_once() -> None:
    schema = {
        "type": "object",
        "required": ["a", "b", "c"],
        "properties": {"inner": {"type": "object", "required": ["x", "y"]}},
        "allOf": [{"required": ["a", "d"]}],
    }
    errors = payload_errors(schema, {"inner": {}})
    assert sorted((e["field"], e["message"]) for e in errors) == sorted(
        [
            ("a", "'a' is a required property"),
            ("a", "'a' is a required property"),  # once for each `required` naming it
            ("b", "'b' is a required property"),
            ("c", "'c' is a required property"),
            ("d", "'d' is a required property"),
            ("inner.x", "'x' is a required property"),
            ("inner.y", "'y' is a required property"),
        ]
    )


@pytest.mark.parametrize(
    ("schema", "start"),
    [
        (
            {"properties": {"url": {"pattern": "^(?!mailto:)"}}},
            "payload_schema/properties/url/pattern: the pattern '^(?!mailto:)' cannot run on RE2",
        ),
        (
            {"prefixItems": [{"pattern": r"(a)\1"}]},
            r"payload_schema/prefixItems/0/pattern: the pattern '(a)\\1' cannot run on RE2",
        ),
        (
            {"patternProperties": {"a/b(?<=c)": {}}},
            "payload_schema/patternProperties/a~1b(?<=c): the pattern",
        ),
        ({"$defs": {"x": {"pattern": "a{1001}"}}}, "payload_schema/$defs/x/pattern: "),
    ],
)
def test_a_pattern_re2_cannot_run_is_named_by_its_pointer(schema: Any, start: str) -> None:
    [problem] = schema_problems(schema)
    assert problem.startswith(start), problem


def test_what_is_not_a_pattern_is_not_checked_as_one() -> None:
    schema = {
        "type": "object",
        "properties": {"pattern": {"type": "string", "default": "(?!x)"}},
        "examples": [{"pattern": "(?!x)"}],
        "enum": [{"pattern": "(?!x)"}],
    }
    assert schema_problems(schema) == []


def test_unevaluated_properties_beside_pattern_properties_is_refused() -> None:
    schema = {
        "allOf": [{"patternProperties": {"^a": {}}}],
        "unevaluatedProperties": False,
    }
    assert schema_problems(schema) == [
        "payload_schema: unevaluatedProperties cannot be used with patternProperties"
    ]
    assert schema_problems({"unevaluatedProperties": False}) == []


def test_a_schema_over_its_size_or_depth_is_refused() -> None:
    deep: dict[str, Any] = {}
    while json_depth(deep) <= MAX_SCHEMA_DEPTH:
        deep = {"not": deep}
    assert schema_problems(deep) == [
        f"payload_schema is nested deeper than {MAX_SCHEMA_DEPTH} levels"
    ]
    assert schema_problems(deep["not"]) == []
    big = {"description": "x" * MAX_SCHEMA_BYTES}
    [problem] = schema_problems(big)
    assert problem.endswith(f"over the limit of {MAX_SCHEMA_BYTES}"), problem


def test_a_static_workflow_with_a_lookahead_pattern_fails_when_defined() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string", "pattern": "(?=a)"}}}
    with pytest.raises(WorkflowDefinitionError) as refused:
        define_workflow("lookahead", sms("{{ a }}"), payload=schema)
    assert "payload_schema/properties/a/pattern" in str(refused.value)


def test_json_depth_counts_containers() -> None:
    assert [json_depth(v) for v in (1, {}, [1], {"a": []}, {"a": [{"b": 1}]})] == [0, 1, 1, 2, 3]
