"""Hostile input at the API (issue 12): a tenant's payload schema cannot freeze the event loop,
and payloads, overrides and bodies are bounded in depth and size, each refused with a clear
JSON 4xx (docs/architecture.md, "Hostile input")."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
import uuid
from typing import Any

import pytest

from api.bridge.signature import sign
from shared.db.enums import NotificationStatus
from shared.errors import TooLarge
from shared.notifications import intake
from shared.notifications.schemas import TriggerRequest
from shared.settings import Settings, get_settings
from shared.workflows.registry import get_registry
from tests.conftest import Tenant, signup_payload, wait_for_status
from tests.factories import api_error, create_template, create_workflow
from tests.rows import insert_notification

# Python's `re` needs about 2**n steps for n a's and a "!" against this pattern: 26 took
# 6.8 s in the report; 28 would take half a minute.
CATASTROPHIC = "^(a+)+$"
HOSTILE_CODE = "a" * 28 + "!"


def _workflow(client: Any, tenant: Tenant, payload_schema: dict[str, Any]) -> str:
    key = f"hostile-{uuid.uuid4().hex[:8]}"
    sms = create_template(client, tenant, "SMS", body="{{ code | default('x') }}")
    create_workflow(client, tenant, key, publish=True, payload_schema=payload_schema, SMS=sms)
    return key


def _create(client: Any, tenant: Tenant, payload_schema: dict[str, Any]) -> Any:
    sms = create_template(client, tenant, "SMS")
    return client.post(
        "/api/workflows",
        json={
            "workflow_key": f"refused-{uuid.uuid4().hex[:8]}",
            "name": "Refused",
            "default_channels": ["SMS"],
            "template_overrides": {"smsTemplateId": sms["id"]},
            "payload_schema": payload_schema,
        },
        headers=tenant.headers,
    )


def _nested(depth: int) -> dict[str, Any]:
    """An object `depth` levels deep: {"a": {"a": ... {}}}."""
    value: dict[str, Any] = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


def _deep_json(depth: int) -> bytes:
    # Written out: json.dumps itself cannot encode 10,000 levels.
    return b'{"a":' * depth + b"1" + b"}" * depth


# ReDoS


def test_a_catastrophic_pattern_answers_422_at_once_and_never_delays_healthz(
    client: Any, tenant: Tenant
) -> None:
    schema = {
        "type": "object",
        "properties": {"code": {"type": "string", "pattern": CATASTROPHIC}},
        "required": ["code"],
    }
    key = _workflow(client, tenant, schema)

    def trigger(code: str) -> Any:
        body = {"workflowId": key, "payload": {"code": code}, "subscriberId": "s-1"}
        return client.post("/api/trigger", json=body, headers=tenant.headers)

    assert trigger("aaaa").status_code == 202  # the pattern is checked, and passes

    def healthz() -> float:
        started = time.perf_counter()
        assert client.get("/healthz").status_code == 200
        return time.perf_counter() - started

    quiet = min(healthz() for _ in range(5))
    stop = threading.Event()
    answers: list[tuple[int, float]] = []

    def attack() -> None:
        while not stop.is_set():
            started = time.perf_counter()
            status = trigger(HOSTILE_CODE).status_code
            answers.append((status, time.perf_counter() - started))

    attacker = threading.Thread(target=attack)
    attacker.start()
    try:
        during = [healthz() for _ in range(20)]
    finally:
        stop.set()
        attacker.join(timeout=120)
    assert not attacker.is_alive()
    print(
        f"ReDoS trigger: {len(answers)} answers, slowest {max(e for _, e in answers) * 1000:.1f}"
        f" ms; /healthz alone {quiet * 1000:.1f} ms, during the attack at most"
        f" {max(during) * 1000:.1f} ms"
    )
    assert answers and all(status == 422 for status, _ in answers), answers
    # Python's `re` took tens of seconds per answer: RE2 takes microseconds. The bound leaves
    # room for a loaded machine, and /healthz waits for no check.
    assert max(elapsed for _, elapsed in answers) < 1.0, answers
    assert max(during) < quiet + 1.0, (quiet, during)

    error = api_error(trigger(HOSTILE_CODE), 422, "invalid_payload")
    assert error["details"] == [
        {"field": "code", "message": f"{HOSTILE_CODE!r} does not match {CATASTROPHIC!r}"}
    ]


def test_the_bridge_checks_a_catastrophic_pattern_at_once(client: Any, tenant: Tenant) -> None:
    schema = {"type": "object", "properties": {"code": {"type": "string", "pattern": CATASTROPHIC}}}
    key = _workflow(client, tenant, schema)
    secret = get_settings().effective_novu_secret_key

    def execute(code: str) -> Any:
        payload = {"code": code, "enterpriseId": str(tenant.enterprise_id)}
        body = json.dumps({"payload": payload, "controls": {}, "state": []}).encode()
        return client.post(
            "/api/novu",
            params={"action": "execute", "workflowId": key, "stepId": "sms"},
            content=body,
            headers={"content-type": "application/json", "novu-signature": sign(secret, body)},
        )

    assert execute("aaaa").status_code == 200
    started = time.perf_counter()
    response = execute(HOSTILE_CODE)
    elapsed = time.perf_counter() - started
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "ExecutionEventPayloadInvalidError"
    assert [problem["path"] for problem in response.json()["data"]] == ["/code"]
    assert elapsed < 1.0, elapsed  # Python's `re` takes tens of seconds


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [("^(?!mailto:).*$", "(?!"), (r"^(a)\1$", r"\1"), ("(?<=x)y", "(?<")],
)
def test_a_pattern_re2_cannot_run_is_refused_when_saved_naming_its_pointer(
    client: Any, tenant: Tenant, pattern: str, reason: str
) -> None:
    schema = {"type": "object", "properties": {"url": {"type": "string", "pattern": pattern}}}
    error = api_error(_create(client, tenant, schema), 422, "invalid_workflow")
    [detail] = error["details"]
    assert detail["message"].startswith("payload_schema/properties/url/pattern: "), detail
    assert "RE2" in detail["message"] and reason in detail["message"], detail


def test_a_pattern_property_re2_cannot_run_is_refused_on_update_too(
    client: Any, tenant: Tenant
) -> None:
    key = _workflow(client, tenant, {"type": "object"})
    [row] = [
        w
        for w in client.get("/api/workflows", headers=tenant.headers).json()["items"]
        if w["workflow_key"] == key
    ]
    schema = {"type": "object", "patternProperties": {"^(?=x)": {"type": "string"}}}
    response = client.patch(
        f"/api/workflows/{row['id']}", json={"payload_schema": schema}, headers=tenant.headers
    )
    error = api_error(response, 422, "invalid_workflow")
    assert error["details"][0]["message"].startswith("payload_schema/patternProperties/^(?=x): ")


def test_a_schema_over_64_kb_or_32_levels_deep_is_refused_when_saved(
    client: Any, tenant: Tenant
) -> None:
    big = {
        "type": "object",
        "properties": {f"field{i}": {"type": "string", "maxLength": 10} for i in range(2000)},
    }
    error = api_error(_create(client, tenant, big), 422, "invalid_workflow")
    assert "over the limit of 65536" in error["details"][0]["message"], error

    deep: dict[str, Any] = {"type": "object"}
    for _ in range(20):  # 2 levels each: {"properties": {"a": ...}}
        deep = {"type": "object", "properties": {"a": deep}}
    error = api_error(_create(client, tenant, deep), 422, "invalid_workflow")
    assert "deeper than 32 levels" in error["details"][0]["message"], error


@pytest.mark.parametrize(
    ("schema", "problem"),
    [
        ({"$ref": "https://example.com/schema"}, "is not a JSON Pointer to a part of this schema"),
        ({"$defs": {"a": {"not": {"$ref": "#/$defs/a"}}}, "$ref": "#/$defs/a"}, "leads back"),
        (
            {
                "type": "object",
                "properties": {"x": {"$ref": "#/$defs/d0"}},
                "$defs": {
                    **{f"d{i}": {"anyOf": [{"$ref": f"#/$defs/d{i + 1}"}] * 2} for i in range(30)},
                    "d30": {"type": "integer"},
                },
            },
            "applies over 2000 subschemas",
        ),
    ],
)
def test_refs_a_check_could_not_follow_or_afford_are_refused_when_saved(
    client: Any, tenant: Tenant, schema: dict[str, Any], problem: str
) -> None:
    # Accepted before, these answered 500 (an unresolvable ref, a ref to itself) or held the
    # check for 2**30 evaluations at every trigger.
    error = api_error(_create(client, tenant, schema), 422, "invalid_workflow")
    assert problem in error["details"][0]["message"], error


def test_a_schema_costly_per_value_stops_at_its_payloads_share_off_the_loop(
    client: Any, tenant: Tenant
) -> None:
    # Within every saved limit, yet each array item fails 1,500 branches.
    items = {"anyOf": [{"minimum": k} for k in range(1, 1500)]}
    key = _workflow(client, tenant, {"type": "object", "properties": {"x": {"items": items}}})
    body = {"workflowId": key, "payload": {"x": [0] * 20_000}, "subscriberId": "s-1"}

    def healthz() -> float:
        started = time.perf_counter()
        assert client.get("/healthz").status_code == 200
        return time.perf_counter() - started

    quiet = min(healthz() for _ in range(5))
    answer: list[Any] = []
    attacker = threading.Thread(
        target=lambda: answer.append(client.post("/api/trigger", json=body, headers=tenant.headers))
    )
    attacker.start()
    during = []
    while attacker.is_alive() and len(during) < 50:
        during.append(healthz())
    attacker.join(timeout=120)
    error = api_error(answer[0], 422, "invalid_payload")
    assert "steps, the most a payload of" in error["details"][0]["message"], error
    # Checked on a thread: the loop answers /healthz meanwhile.
    assert max(during, default=0) < quiet + 1.0, (quiet, during)


# Depth


def test_a_payload_300_levels_deep_is_422_and_32_levels_is_accepted(
    client: Any, tenant: Tenant
) -> None:
    limit = get_settings().max_payload_depth
    assert limit == 32

    def trigger(payload: dict[str, Any]) -> Any:
        body = {"workflowId": "user-signup", "payload": payload}
        return client.post("/api/trigger", json=body, headers=tenant.headers)

    error = api_error(trigger({**signup_payload(), "deep": _nested(300)}), 422, "payload_too_deep")
    assert "payload" in error["message"] and "32" in error["message"]
    api_error(trigger({**signup_payload(), "deep": _nested(limit)}), 422, "payload_too_deep")
    assert trigger({**signup_payload(), "deep": _nested(limit - 1)}).status_code == 202


def test_overrides_300_levels_deep_are_422(client: Any, tenant: Tenant) -> None:
    body = {"workflowId": "user-signup", "payload": signup_payload(), "overrides": _nested(300)}
    error = api_error(
        client.post("/api/trigger", json=body, headers=tenant.headers), 422, "payload_too_deep"
    )
    assert error["message"].startswith("overrides ")


def test_a_deep_bulk_event_is_refused_alone_and_its_neighbours_are_sent(
    client: Any, tenant: Tenant, worker: Any
) -> None:
    good = [{"workflowId": "user-signup", "payload": signup_payload()} for _ in range(5)]
    deep = {"workflowId": "user-signup", "payload": {**signup_payload(), "deep": _nested(300)}}
    events = [*good[:2], deep, *good[2:]]
    response = client.post("/api/trigger/bulk", json={"events": events}, headers=tenant.headers)
    assert response.status_code == 202, response.text
    body = response.json()
    assert (body["accepted"], body["rejected"]) == (5, 1)
    refused = body["results"][2]
    assert refused["statusCode"] == 422 and refused["error"]["code"] == "payload_too_deep"
    for result in body["results"][:2] + body["results"][3:]:
        row = wait_for_status(client, tenant, result["notificationId"], {"SENT", "FAILED"})
        assert row["notification_status"] == NotificationStatus.SENT.value, row


@pytest.mark.parametrize("path", ["/api/trigger", "/api/trigger/bulk"])
def test_a_body_10000_levels_deep_is_a_json_400(client: Any, tenant: Tenant, path: str) -> None:
    response = client.post(
        path,
        content=_deep_json(10_000),
        headers={**tenant.headers, "content-type": "application/json"},
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["message"]


def test_a_signed_bridge_body_nested_too_deep_is_a_400_in_the_protocol_shape(
    client: Any,
) -> None:
    secret = get_settings().effective_novu_secret_key
    for depth in (10_000, 300):
        body = _deep_json(depth)
        response = client.post(
            "/api/novu",
            params={"action": "execute", "workflowId": "user-signup", "stepId": "email"},
            content=body,
            headers={"content-type": "application/json", "novu-signature": sign(secret, body)},
        )
        assert response.status_code == 400, response.text
        answer = response.json()
        assert set(answer) <= {"message", "code", "data"}, answer
        assert answer["code"] == "ExecutionEventPayloadInvalidError"
        assert "nested deeper than" in answer["message"]


# Size


def test_overrides_of_900_kb_are_413_event_too_large() -> None:
    # With the default limits (the test stack's MAX_BODY_BYTES is 256 KB, below Novu's 512 KB):
    # a 1 MB body may carry 900 KB of overrides, which Novu would refuse with its 413.
    assert Settings.model_fields["max_body_bytes"].default > 900_000
    workflow = get_registry().get_static_workflows()["user-signup"]
    request = TriggerRequest(
        workflowId="user-signup",
        payload=signup_payload(),
        overrides={"email": {"pad": "x" * 900_000}},
    )
    with pytest.raises(TooLarge) as refused:
        intake.check(intake.Trigger(request), uuid.uuid4(), workflow, get_settings())
    assert refused.value.code == "event_too_large"
    assert "overrides" in refused.value.message


# Schema errors


def test_each_missing_required_field_is_listed_once_with_its_own_path(
    client: Any, tenant: Tenant
) -> None:
    names = ["alpha", "beta", "gamma", "delta"]
    schema = {
        "type": "object",
        "properties": {
            **{name: {"type": "string"} for name in names},
            "inner": {"type": "object", "required": ["x", "y"]},
        },
        "required": names,
    }
    key = _workflow(client, tenant, schema)
    body = {"workflowId": key, "payload": {"inner": {}}, "subscriberId": "s-1"}
    error = api_error(
        client.post("/api/trigger", json=body, headers=tenant.headers), 422, "invalid_payload"
    )
    expected = [
        {"field": name, "message": f"{name!r} is a required property"} for name in names
    ] + [{"field": f"inner.{name}", "message": f"{name!r} is a required property"} for name in "xy"]
    assert sorted(error["details"], key=str) == sorted(expected, key=str)


def test_triggering_a_stored_row_checks_the_rows_payload_not_the_requests(
    client: Any, tenant: Tenant
) -> None:
    schema = {
        "type": "object",
        "properties": {"code": {"type": "string"}},
        "required": ["code"],
    }
    key = _workflow(client, tenant, schema)
    scheduled = dt.datetime(2999, 1, 1, tzinfo=dt.UTC)  # not due: nothing is published

    def trigger(notification_id: int) -> Any:
        body = {"workflowId": key, "notificationId": notification_id}
        return client.post("/api/trigger", json=body, headers=tenant.headers)

    stored = insert_notification(
        tenant.enterprise_id, workflow_key=key, payload={"code": "c"}, scheduled_for=scheduled
    )
    response = trigger(stored.notification_id)
    assert response.status_code == 202, response.text
    assert response.json()["notificationId"] == stored.notification_id

    lacking = insert_notification(
        tenant.enterprise_id, workflow_key=key, payload={}, scheduled_for=scheduled
    )
    error = api_error(trigger(lacking.notification_id), 422, "invalid_payload")
    assert error["details"] == [{"field": "code", "message": "'code' is a required property"}]
