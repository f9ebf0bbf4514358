"""Validation of trigger payloads against a workflow's JSON Schema (2020-12, by jsonschema).

Every trigger is validated, and jsonschema interprets a schema on each call: it was about a
tenth of a trigger's CPU. A schema that reads the same in draft 7 is also compiled to a Python
function by fastjsonschema, which answers "valid" for the common case in a fraction of the
time; whenever it does not, jsonschema decides as before (docs/performance.md).

A payload schema is a tenant's input, so its cost is bounded (docs/architecture.md, "Hostile
input"): its `pattern`s and `patternProperties` run on RE2, whose time is linear in the text
(Python's `re` backtracks: `^(a+)+$` against 26 a's and a "!" took seconds); `schema_problems`
refuses, when a workflow is saved, a schema over MAX_SCHEMA_BYTES, MAX_SCHEMA_DEPTH or
MAX_SUBSCHEMAS (its `$ref`s followed, none recursive), a pattern RE2 cannot run, or a keyword
jsonschema would evaluate with `re`; and a check may do work in proportion to its payload.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Any
from urllib.parse import unquote

import fastjsonschema
import re2
from jsonschema import Draft202012Validator, FormatChecker, validators
from jsonschema.exceptions import SchemaError, ValidationError

# A saved payload schema's bounds: validation's cost grows with the schema, and 64 KB at depth
# 32 is far beyond any real payload's description (the largest in the repo is under 2 KB).
MAX_SCHEMA_BYTES = 64 * 1024
MAX_SCHEMA_DEPTH = 32
# Subschemas a saved schema may apply, each `$ref` counted as the subschemas it stands for: a
# schema of a few hundred bytes whose refs fan out, two to a level, would apply millions. 64 KB
# of schema without refs holds about 2,000.
MAX_SUBSCHEMAS = 2_000
# The work one check may do, in proportion to the payload it checks (its bytes of JSON), so
# that no schema makes a check cost more than its payload's size allows: jsonschema's keyword
# evaluations (a real payload takes about one for every four bytes; a hostile schema's cost
# some 20 us each), and the worst case (subschemas x values) of fastjsonschema's compiled
# code, which cannot be stopped midway and so runs only when that is within its share.
MIN_STEPS = 10_000
# The most a check may cost on the event loop, in subschemas x payload values (check_estimate):
# milliseconds even in jsonschema's slowest keywords. A costlier one goes to a worker thread.
LOOP_CHECK_WORK = 2_000
BYTES_PER_STEP = 2
MIN_COMPILED_WORK = 100_000
COMPILED_WORK_PER_BYTE = 8


class CheckTooCostly(Exception):
    """The check running on this thread took all the steps its payload allows."""

    def __init__(self, steps: int, size: int) -> None:
        super().__init__(
            f"checking the payload against the workflow's schema takes over {steps} steps, "
            f"the most a payload of {size} bytes may take"
        )


_spending = threading.local()  # .steps: what the check running on this thread may still take

_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # a refused pattern is reported to the caller, not to stderr


@lru_cache(maxsize=4096)
def _re2(pattern: str) -> Any:
    """The pattern compiled by RE2 (re2.error when RE2 cannot run it)."""
    return re2.compile(pattern, _RE2_OPTIONS)


def re2_problem(pattern: str) -> str | None:
    """Why RE2 cannot run the pattern (lookaround, backreferences, ...), or None."""
    try:
        _re2(pattern)
    except re2.error as exc:
        reason = exc.args[0] if exc.args else exc
        return reason.decode() if isinstance(reason, bytes) else str(reason)
    return None


def _matches(pattern: str, text: str) -> bool:
    try:
        return _re2(pattern).search(text) is not None
    except re2.error:
        # Not reached: the registry refuses a workflow whose schema has such a pattern
        # (schema_problems). Were it reached, the pattern would match nothing.
        return False


def _pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Iterator[ValidationError]:
    if validator.is_type(instance, "string") and not _matches(pattern, instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


def _pattern_properties(
    validator: Any, patterns: dict[str, Any], instance: Any, schema: Any
) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in patterns.items():
        for key, value in instance.items():
            if _matches(pattern, key):
                yield from validator.descend(value, subschema, path=key, schema_path=pattern)


def _additional_properties(
    validator: Any, additional: Any, instance: Any, schema: Any
) -> Iterator[ValidationError]:
    # jsonschema's own looks past `patternProperties` with `re`; the same rule, on RE2.
    if not validator.is_type(instance, "object"):
        return
    properties = schema.get("properties", {})
    patterns = list(schema.get("patternProperties", {}))
    extras = [
        key
        for key in instance
        if key not in properties and not any(_matches(p, key) for p in patterns)
    ]
    if validator.is_type(additional, "object"):
        for extra in extras:
            yield from validator.descend(instance[extra], additional, path=extra)
    elif not additional and extras:
        names = ", ".join(repr(extra) for extra in sorted(extras, key=str))
        if "patternProperties" in schema:
            verb = "does" if len(extras) == 1 else "do"
            listed = ", ".join(repr(p) for p in sorted(patterns))
            yield ValidationError(f"{names} {verb} not match any of the regexes: {listed}")
        else:
            verb = "was" if len(extras) == 1 else "were"
            yield ValidationError(
                f"Additional properties are not allowed ({names} {verb} unexpected)"
            )


def _counted(keyword: Callable[..., Any]) -> Callable[..., Any]:
    """The keyword, taking one of the steps the check running on this thread may take."""

    def counted(validator: Any, value: Any, instance: Any, schema: Any) -> Any:
        steps: int | None = getattr(_spending, "steps", None)
        if steps is not None:
            if steps <= 0:
                raise _Exhausted
            _spending.steps = steps - 1
        return keyword(validator, value, instance, schema)

    return counted


# Draft 2020-12 with every keyword that runs a tenant's regular expression on RE2, and every
# keyword counted against the steps the check may take.
PayloadValidator = validators.extend(  # type: ignore[no-untyped-call]
    Draft202012Validator,
    validators={
        name: _counted(keyword)
        for name, keyword in {
            **Draft202012Validator.VALIDATORS,
            "pattern": _pattern,
            "patternProperties": _pattern_properties,
            "additionalProperties": _additional_properties,
        }.items()
    },
)


@lru_cache(maxsize=1024)
def _validator(schema_json: str) -> Any:
    return PayloadValidator(json.loads(schema_json), format_checker=FormatChecker())


# Keywords that mean the same in JSON Schema draft 7, which fastjsonschema compiles into a
# Python function, and in 2020-12, which XNovu validates against; annotations are among them.
# Left out on purpose: `pattern` and `patternProperties` (fastjsonschema runs them with `re`,
# which backtracks: only RE2 may run a tenant's pattern), `format` (jsonschema's FormatChecker
# decides formats its own way),
# `enum`/`const` (unless every value is a string: the two libraries compare 1, 1.0 and true
# their own ways), `multipleOf` (float arithmetic), `uniqueItems`, `contains`, `items` as a
# list, and every 2020-12-only or referencing keyword.
_PORTABLE = frozenset(
    {
        "type", "properties", "required", "additionalProperties",
        "propertyNames", "minProperties", "maxProperties", "items", "minItems", "maxItems",
        "minLength", "maxLength", "minimum", "maximum", "exclusiveMinimum",
        "exclusiveMaximum", "allOf", "anyOf", "oneOf", "not", "if", "then", "else", "enum",
        "const", "title", "description", "default", "examples", "$comment", "deprecated",
        "readOnly", "writeOnly",
    }
)  # fmt: skip
_SUBSCHEMA = frozenset(
    {"additionalProperties", "propertyNames", "items", "not", "if", "then", "else"}
)
_SUBSCHEMA_MAP = frozenset({"properties"})
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
        return True

    return check


# The validators of each schema object a workflow holds, by identity: a trigger finds them
# without serialising the schema. The schema is kept in the entry, so its id cannot be reused.
_BY_IDENTITY: dict[int, tuple[dict[str, Any], Any, FastCheck | None, int]] = {}
_BY_IDENTITY_MAX = 1024


def _validators_of(schema: dict[str, Any]) -> tuple[Any, FastCheck | None, int]:
    entry = _BY_IDENTITY.get(id(schema))
    if entry is not None and entry[0] is schema:
        return entry[1], entry[2], entry[3]
    validator = _validator(json.dumps(schema, sort_keys=True))
    fast = _fast_check(schema)
    subschemas = subschema_cost(schema)
    if len(_BY_IDENTITY) >= _BY_IDENTITY_MAX:
        _BY_IDENTITY.clear()
    _BY_IDENTITY[id(schema)] = (schema, validator, fast, subschemas)
    return validator, fast, subschemas


def check_estimate(schema: dict[str, Any] | None, payload: Any, limit: int) -> int:
    """An upper estimate of the work of checking the payload against the schema (subschemas x
    payload values), or a number over `limit` once it is known to exceed it."""
    if not schema:
        return 0
    try:
        subschemas = _validators_of(schema)[2]
    except SchemaError:
        return 0
    return subschemas * json_nodes(payload, limit // subschemas + 1)


def payload_errors(
    schema: dict[str, Any] | None, payload: dict[str, Any], size: int | None = None
) -> list[dict[str, str]]:
    """Every way the payload fails the schema, as `{field, message}`; empty when it passes.
    `size`, the payload's bytes of JSON when known, sets the work the check may do.

    The schema must not be changed in place once validated against (workflows replace theirs
    on reload)."""
    if not schema:
        return []
    try:
        validator, fast, subschemas = _validators_of(schema)
    except SchemaError as exc:
        return [
            {"field": "", "message": f"the workflow's payload schema is invalid: {exc.message}"}
        ]
    size = json_size(payload) if size is None else size
    if fast is not None and compiled_affordable(subschemas, payload, size) and fast(payload):
        return []
    try:
        with limited_steps(size):
            return _explained(validator, payload)
    except CheckTooCostly as exc:
        return [{"field": "payload", "message": str(exc)}]


def compiled_affordable(subschemas: int, payload: Any, size: int) -> bool:
    """Whether compiled code's worst case (subschemas x values) is within what a payload of
    `size` bytes allows."""
    allowed = max(MIN_COMPILED_WORK, COMPILED_WORK_PER_BYTE * size)
    return subschemas * json_nodes(payload, allowed // subschemas + 1) <= allowed


class _Exhausted(Exception):
    pass


@contextmanager
def limited_steps(size: int) -> Iterator[None]:
    """PayloadValidator takes at most the steps a payload of `size` bytes allows in the block
    (this thread only), then raises CheckTooCostly."""
    steps = max(MIN_STEPS, size // BYTES_PER_STEP)
    _spending.steps = steps
    try:
        yield
    except _Exhausted:
        raise CheckTooCostly(steps, size) from None
    finally:
        _spending.steps = None


def _explained(validator: Any, payload: dict[str, Any]) -> list[dict[str, str]]:
    if validator.is_valid(payload):
        return []
    errors = []
    # jsonschema reports each missing property as an error of its own, in `required`'s order:
    # the n-th error of one `required` keyword is about its n-th missing property.
    reported: dict[tuple[Any, ...], int] = {}
    for err in sorted(validator.iter_errors(payload), key=lambda e: list(map(str, e.path))):
        path = ".".join(str(part) for part in err.absolute_path)
        if err.validator == "required" and isinstance(err.instance, dict):
            # Name the missing property itself, not its parent.
            missing = [name for name in err.validator_value if name not in err.instance]
            where = (*err.absolute_path, "|", *err.absolute_schema_path)
            number = reported.get(where, 0)
            reported[where] = number + 1
            if number < len(missing):
                name = missing[number]
                errors.append({"field": f"{path}.{name}" if path else name, "message": err.message})
                continue
        errors.append({"field": path or "payload", "message": err.message})
    return errors


def json_size(value: Any) -> int:
    """Bytes of the compact JSON encoding of a value."""
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())


# Keywords whose values are data, not schemas: a "pattern" inside them is not a regex.
_DATA_KEYWORDS = frozenset({"enum", "const", "default", "examples"})


def schema_problems(schema: Any) -> list[str]:
    """Why a payload schema may not be saved: over MAX_SCHEMA_BYTES or MAX_SCHEMA_DEPTH, not
    a JSON Schema, a pattern RE2 cannot run (named by its JSON Pointer), or
    `unevaluatedProperties` beside `patternProperties` (jsonschema matches those with `re`)."""
    if not isinstance(schema, dict):
        return ["payload_schema must be a JSON object"]
    if json_depth(schema) > MAX_SCHEMA_DEPTH:
        return [f"payload_schema is nested deeper than {MAX_SCHEMA_DEPTH} levels"]
    size = json_size(schema)
    if size > MAX_SCHEMA_BYTES:
        return [f"payload_schema is {size} bytes of JSON, over the limit of {MAX_SCHEMA_BYTES}"]
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        return [f"payload_schema is not a valid JSON Schema: {exc.message}"]
    problems = _reference_problems(schema)
    if problems:
        return problems
    subschemas = subschema_count(schema)
    if subschemas > MAX_SUBSCHEMAS:
        return [
            f"payload_schema applies over {MAX_SUBSCHEMAS} subschemas (each $ref counted as "
            "the subschemas it stands for)"
        ]
    keywords: set[str] = set()
    for pointer, pattern in _patterns(schema, "", keywords):
        reason = re2_problem(pattern)
        if reason is not None:
            problems.append(
                f"payload_schema{pointer}: the pattern {pattern!r} cannot run on RE2 ({reason});"
                " lookaround and backreferences are not supported"
            )
    if "patternProperties" in keywords and "unevaluatedProperties" in keywords:
        problems.append(
            "payload_schema: unevaluatedProperties cannot be used with patternProperties"
        )
    return problems


def _patterns(node: Any, pointer: str, keywords: set[str]) -> Iterator[tuple[str, str]]:
    """Every regular expression of a schema, with its JSON Pointer; `keywords` collects the
    keywords met on the way."""
    if isinstance(node, list):
        for number, item in enumerate(node):
            yield from _patterns(item, f"{pointer}/{number}", keywords)
        return
    if not isinstance(node, dict):
        return
    for key, value in node.items():
        here = f"{pointer}/{_escaped(str(key))}"
        if key in _DATA_KEYWORDS:
            continue
        keywords.add(key)
        if key == "pattern" and isinstance(value, str):
            yield here, value
        elif key == "patternProperties" and isinstance(value, dict):
            for name, subschema in value.items():
                yield f"{here}/{_escaped(name)}", name
                yield from _patterns(subschema, f"{here}/{_escaped(name)}", keywords)
        else:
            yield from _patterns(value, here, keywords)


def _reference_problems(schema: dict[str, Any]) -> list[str]:
    """`$ref`s jsonschema could not resolve (or would fetch), dynamic refs and nested `$id`s
    (which move what a ref means), and refs that lead back to themselves."""
    problems: list[str] = []
    for pointer, key, value in _keyword_uses(schema, ""):
        if key in ("$dynamicRef", "$recursiveRef"):
            problems.append(f"payload_schema{pointer}: {key} is not supported")
        elif key == "$id" and pointer.count("/") > 1:
            problems.append(f"payload_schema{pointer}: $id is allowed at the root only")
        elif key == "$ref" and _resolve(schema, value) is None:
            problems.append(
                f"payload_schema{pointer}: $ref {value!r} is not a JSON Pointer to a part of "
                "this schema (#/...)"
            )
    if not problems and subschema_count(schema) < 0:
        problems.append(
            "payload_schema: a $ref leads back to itself (recursive schemas are not supported)"
            " or refs chain too deeply"
        )
    return problems


def _keyword_uses(node: Any, pointer: str) -> Iterator[tuple[str, str, Any]]:
    """(pointer, keyword, value) of every key of every object of a schema, data left out."""
    if isinstance(node, list):
        for number, item in enumerate(node):
            yield from _keyword_uses(item, f"{pointer}/{number}")
    elif isinstance(node, dict):
        for key, value in node.items():
            if key in _DATA_KEYWORDS:
                continue
            here = f"{pointer}/{_escaped(str(key))}"
            yield here, key, value
            yield from _keyword_uses(value, here)


def _resolve(schema: dict[str, Any], ref: Any) -> Any:
    """The part of the schema a local `#/...` ref points to, or None."""
    if not isinstance(ref, str) or not (ref == "#" or ref.startswith("#/")):
        return None
    node: Any = schema
    for token in ref[2:].split("/") if ref != "#" else ():
        token = unquote(token).replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and token in node:
            node = node[token]
        elif isinstance(node, list) and token.isdigit() and int(token) < len(node):
            node = node[int(token)]
        else:
            return None
    return node


def subschema_count(schema: dict[str, Any]) -> int:
    """How many subschemas the schema applies, each `$ref` counted as what it points to; -1
    when a ref leads back to itself or refs chain too deeply to follow (jsonschema recurses as
    deeply). Past MAX_SUBSCHEMAS the count is only known to be over."""
    memo: dict[int, int] = {}
    active: set[int] = set()

    def count(node: Any) -> int:
        if isinstance(node, list):
            total = 0
            for item in node:
                part = count(item)
                if part < 0:
                    return -1
                total += part
            return total
        if not isinstance(node, dict):
            return 0
        if id(node) in memo:
            return memo[id(node)]
        if id(node) in active:
            return -1
        active.add(id(node))
        total = 1
        for key, value in node.items():
            if key in _DATA_KEYWORDS or key == "$defs":
                continue  # definitions count where they are referred to
            part = count(_resolve(schema, value) if key == "$ref" else value)
            if part < 0:
                total = -1
                break
            total = min(total + part, MAX_SUBSCHEMAS + 1)
        active.discard(id(node))
        memo[id(node)] = total
        return total

    try:
        return count(schema)
    except RecursionError:
        return -1


def subschema_cost(schema: dict[str, Any]) -> int:
    """subschema_count, or more than MAX_SUBSCHEMAS for a schema it cannot count (one saved
    before schemas were checked): the worst is assumed."""
    count = subschema_count(schema)
    return count if count > 0 else MAX_SUBSCHEMAS + 1


def _escaped(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def json_nodes(value: Any, limit: int) -> int:
    """How many values a JSON value holds, itself included; counting stops past `limit`."""
    count = 0
    stack = [value]
    while stack and count <= limit:
        node = stack.pop()
        count += 1
        if isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return count


def json_depth(value: Any) -> int:
    """How deeply a JSON value nests: 0 for a scalar, 1 for `{}` or `[1]`, 2 for `{"a": []}`."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children: Any = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        deepest = max(deepest, depth)
        for child in children:
            if isinstance(child, (dict, list)):
                stack.append((child, depth + 1))
    return deepest
