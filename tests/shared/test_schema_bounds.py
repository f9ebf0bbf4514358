"""A payload schema is a tenant's input: its patterns run on RE2 and it is bounded when saved
(shared/payloads.py; docs/architecture.md, "Hostile input")."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator
from pydantic import BaseModel

from shared.payloads import (
    BYTES_PER_STEP,
    MAX_SCHEMA_BYTES,
    MAX_SCHEMA_DEPTH,
    MAX_SUBSCHEMAS,
    MIN_STEPS,
    PayloadValidator,
    json_depth,
    payload_errors,
    schema_problems,
    subschema_count,
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


def _fan_out(levels: int) -> dict[str, Any]:
    """A schema of a few hundred bytes whose refs apply 2**levels subschemas."""
    defs: dict[str, Any] = {
        f"d{i}": {"anyOf": [{"$ref": f"#/$defs/d{i + 1}"}, {"$ref": f"#/$defs/d{i + 1}"}]}
        for i in range(levels)
    }
    defs[f"d{levels}"] = {"type": "integer"}
    return {"type": "object", "properties": {"x": {"$ref": "#/$defs/d0"}}, "$defs": defs}


@pytest.mark.parametrize(
    ("schema", "problem"),
    [
        (
            {"$ref": "https://example.com/schema"},
            "payload_schema/$ref: $ref 'https://example.com/schema' is not a JSON Pointer",
        ),
        ({"$ref": "#/$defs/missing"}, "payload_schema/$ref: $ref '#/$defs/missing' is not"),
        ({"$ref": "#anchor", "$anchor": "anchor"}, "payload_schema/$ref: $ref '#anchor' is not"),
        ({"$dynamicRef": "#node"}, "payload_schema/$dynamicRef: $dynamicRef is not supported"),
        ({"properties": {"a": {"$id": "https://x.test/a"}}}, "payload_schema/properties/a/$id:"),
        ({"$defs": {"a": {"not": {"$ref": "#/$defs/a"}}}, "$ref": "#/$defs/a"}, "a $ref leads"),
        (_fan_out(12), f"payload_schema applies over {MAX_SUBSCHEMAS} subschemas"),
    ],
)
def test_refs_that_cannot_resolve_recurse_or_fan_out_are_refused(
    schema: dict[str, Any], problem: str
) -> None:
    problems = schema_problems(schema)
    assert len(problems) == 1 and problem in problems[0], problems


def test_a_long_chain_of_refs_is_refused_not_a_recursion_error() -> None:
    chain: dict[str, Any] = {f"d{i}": {"$ref": f"#/$defs/d{i + 1}"} for i in range(1500)}
    chain["d1500"] = {"type": "string"}
    [problem] = schema_problems({"$ref": "#/$defs/d0", "$defs": chain})
    assert "refs chain too deeply" in problem


def test_refs_within_the_limits_are_accepted_and_counted_where_used() -> None:
    schema = _fan_out(8)  # each level doubles what its refs stand for: 2**10 in all
    assert schema_problems(schema) == []
    assert subschema_count(schema) == 2**10
    assert payload_errors(schema, {"x": 1}) == []


def test_a_pydantic_models_schema_with_defs_is_accepted() -> None:
    class Item(BaseModel):
        name: str
        quantity: int

    class Order(BaseModel):
        items: list[Item]
        owner: Item

    schema = Order.model_json_schema()
    assert "$defs" in schema and schema_problems(schema) == []
    order = {"items": [{"name": f"n{i}", "quantity": i} for i in range(5000)], "owner": {}}
    errors = payload_errors(schema, order)
    assert {error["field"] for error in errors} == {"owner.name", "owner.quantity"}


def test_a_check_does_work_in_proportion_to_its_payload() -> None:
    # Within every saved limit, yet each of 20,000 items fails 1,500 branches: 30 million
    # keyword evaluations, minutes of jsonschema.
    schema = {
        "type": "object",
        "properties": {
            "x": {"items": {"anyOf": [{"minimum": k} for k in range(1, 1500)]}},
        },
    }
    assert schema_problems(schema) == []
    payload = {"x": [0] * 20_000}
    size = len(json.dumps(payload, separators=(",", ":")))
    started = time.process_time()
    [error] = payload_errors(schema, payload, size)
    spent = time.process_time() - started
    steps = max(MIN_STEPS, size // BYTES_PER_STEP)
    assert error == {
        "field": "payload",
        "message": f"checking the payload against the workflow's schema takes over {steps} "
        f"steps, the most a payload of {size} bytes may take",
    }
    # A bound, not a benchmark: 20,000 steps take well under a second of CPU even loaded.
    assert spent < 5.0, spent
