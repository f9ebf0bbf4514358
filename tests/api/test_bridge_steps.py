"""The bridge's delay step, `preview` of a partial payload, and steps answered on the event loop.

Expected shapes are those @novu/framework 2.13.2 answers (its delay step's schemas, its
placeholder payload for `preview`; see api/bridge/mock.py).
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest

from api.bridge.errors import BridgeError
from api.bridge.execute import WouldBlock, execute_step
from api.bridge.mock import PLACEHOLDER, mock_payload
from api.bridge.protocol import PostAction
from api.bridge.schemas import (
    DELAY_OUTPUT,
    DELAY_RESULT,
    EMPTY_SCHEMA,
    OUTPUT_SCHEMAS,
    _fast_checkers,
    escape_class_dollars,
    problems,
)
from api.routes.novu_bridge import catalog_cache
from shared.db.enums import ChannelType, PublishStatus
from shared.db.session import transaction
from shared.workflows.definition import (
    ProblemCode,
    WorkflowDefinitionError,
    define_workflow,
    email,
)
from shared.workflows.instance import from_static
from shared.workflows.registry import get_registry
from shared.workflows.service import WorkflowService
from tests.api.test_novu_bridge import (
    BUILDING_SCHEMA,
    assert_bridge_error,
    assert_execute_shape,
    bridge_post,
    discovered,
    done,
    event,
    xnovu,
)
from tests.conftest import make_tenant, signup_payload
from tests.factories import create_template, create_workflow


def delayed(client: Any, tenant: Any, key: str, seconds: int | None, **templates: Any) -> None:
    """A published workflow of the tenant with the channels given and `delay_seconds`."""
    workflow = create_workflow(client, tenant, key, publish=True, **templates)
    response = client.patch(
        f"/api/workflows/{workflow['id']}",
        json={"delay_seconds": seconds},
        headers=tenant.headers,
    )
    assert response.status_code == 200, response.text
    assert response.json()["delay_seconds"] == seconds


# --- the delay step --------------------------------------------------------------------------


def test_delay_is_declared_first_with_the_framework_delay_schemas(client, tenant):
    key = f"delayed-{uuid.uuid4().hex[:8]}"
    delayed(client, tenant, key, 90, EMAIL=create_template(client, tenant, "EMAIL"))
    steps = discovered(client, key)["steps"]
    assert [(s["stepId"], s["type"]) for s in steps] == [("delay", "delay"), ("email", "email")]
    delay = steps[0]
    assert delay["controls"] == {"schema": EMPTY_SCHEMA, "unknownSchema": EMPTY_SCHEMA}
    assert delay["outputs"]["schema"] == DELAY_OUTPUT
    assert delay["results"]["schema"] == DELAY_RESULT
    assert delay["options"] == {} and delay["providers"] == []


def test_delay_step_answers_the_enterprises_seconds(client, tenant):
    key = f"delayed-{uuid.uuid4().hex[:8]}"
    delayed(client, tenant, key, 90, EMAIL=create_template(client, tenant, "EMAIL"))
    payload = {"message": "m", "_xnovu": xnovu(tenant.enterprise_id)}
    response = bridge_post(client, event(payload), workflowId=key, stepId="delay")
    assert response.status_code == 200, response.text
    body = response.json()
    assert_execute_shape(body, skip=False)
    assert body["outputs"] == {"type": "regular", "amount": 90, "unit": "seconds"}
    assert problems(DELAY_OUTPUT, body["outputs"]) == []


def test_channel_after_the_delay_needs_the_delay_in_state(client, tenant):
    key = f"delayed-{uuid.uuid4().hex[:8]}"
    delayed(client, tenant, key, 30, EMAIL=create_template(client, tenant, "EMAIL"))
    rendered = {"email": {"subject": "Hi", "body": "<p>x</p>"}}
    payload = {"_xnovu": xnovu(tenant.enterprise_id, rendered)}
    missing = bridge_post(client, event(payload), workflowId=key, stepId="email")
    body = assert_bridge_error(missing, 400, "ExecutionStateCorruptError")
    assert body["data"] == {"workflowId": key, "stepId": "delay"}
    state = [{"stepId": "delay", "outputs": {"duration": 30000}, "state": {"status": "completed"}}]
    fine = bridge_post(client, event(payload, state=state), workflowId=key, stepId="email")
    assert fine.status_code == 200, fine.text
    assert fine.json()["outputs"] == {"subject": "Hi", "body": "<p>x</p>"}


def test_enterprise_without_a_delay_skips_the_declared_delay_step(client):
    key = f"shared-{uuid.uuid4().hex[:8]}"
    slow, fast = make_tenant(), make_tenant()
    delayed(client, slow, key, 60, EMAIL=create_template(client, slow, "EMAIL"))
    create_workflow(client, fast, key, publish=True, EMAIL=create_template(client, fast, "EMAIL"))
    assert [s["stepId"] for s in discovered(client, key)["steps"]] == ["delay", "email"]
    payload = {"_xnovu": xnovu(fast.enterprise_id)}
    skipped = bridge_post(client, event(payload), workflowId=key, stepId="delay")
    assert skipped.status_code == 200, skipped.text
    assert_execute_shape(skipped.json(), skip=True)
    assert skipped.json()["outputs"] == {}
    # Its channel steps need no delay in state: its workflow has none.
    payload["_xnovu"] = xnovu(fast.enterprise_id, {"email": {"subject": "S", "body": "B"}})
    email = bridge_post(client, event(payload), workflowId=key, stepId="email")
    assert email.status_code == 200, email.text


def test_delay_of_a_workflow_that_never_delays_is_404(client):
    response = bridge_post(
        client, event(signup_payload()), workflowId="user-signup", stepId="delay"
    )
    body = assert_bridge_error(response, 404, "StepNotFoundError")
    assert body["data"] == {"workflowId": "user-signup", "stepId": "delay"}


def test_removing_the_delay_removes_the_step(client, tenant):
    key = f"delayed-{uuid.uuid4().hex[:8]}"
    delayed(client, tenant, key, 45, EMAIL=create_template(client, tenant, "EMAIL"))
    workflow_id = discovered(client, key)  # declared with a delay
    assert workflow_id["steps"][0]["stepId"] == "delay"
    rows = client.get("/api/workflows", headers=tenant.headers).json()["items"]
    row = next(r for r in rows if r["workflow_key"] == key)
    cleared = client.patch(
        f"/api/workflows/{row['id']}", json={"delay_seconds": None}, headers=tenant.headers
    )
    assert cleared.status_code == 200 and cleared.json()["delay_seconds"] is None
    assert [s["stepId"] for s in discovered(client, key)["steps"]] == ["email"]


# --- preview with a partial payload ----------------------------------------------------------


def test_preview_with_an_empty_payload_renders_placeholders(client):
    for sent in ({"controls": {}, "state": [], "subscriber": {}}, event({})):
        response = bridge_post(
            client, sent, action="preview", workflowId="user-signup", stepId="email"
        )
        assert response.status_code == 200, response.text
        assert_execute_shape(response.json(), skip=False)
        outputs = response.json()["outputs"]
        assert outputs["subject"] == f"Welcome to XNovu, {PLACEHOLDER}!"
        assert "placeholder@example.com" in outputs["body"]


def test_preview_keeps_what_the_payload_gives(client):
    response = bridge_post(
        client, event({"name": "Ada"}), action="preview", workflowId="user-signup", stepId="email"
    )
    assert response.status_code == 200, response.text
    assert response.json()["outputs"]["subject"] == "Welcome to XNovu, Ada!"


def test_preview_still_rejects_a_given_value_of_the_wrong_type(client):
    response = bridge_post(
        client, event({"name": 5}), action="preview", workflowId="user-signup", stepId="email"
    )
    body = assert_bridge_error(response, 400, "ExecutionEventPayloadInvalidError")
    assert body["data"] == [{"path": "/name", "message": "5 is not of type 'string'"}]


def test_execute_of_a_partial_payload_stays_400(client):
    response = bridge_post(client, event({"name": "Ada"}), workflowId="user-signup", stepId="email")
    body = assert_bridge_error(response, 400, "ExecutionEventPayloadInvalidError")
    assert {p["path"] for p in body["data"]} == {""}


def test_preview_of_a_dynamic_workflow_fills_its_schema(client, tenant):
    key = f"building-{uuid.uuid4().hex[:8]}"
    in_app = create_template(client, tenant, "IN_APP")
    create_workflow(
        client, tenant, key, publish=True, payload_schema=BUILDING_SCHEMA, IN_APP=in_app
    )
    payload = {"_xnovu": {"enterpriseId": str(tenant.enterprise_id)}}
    response = bridge_post(
        client, event(payload), action="preview", workflowId=key, stepId="in_app"
    )
    assert response.status_code == 200, response.text
    assert PLACEHOLDER in response.json()["outputs"]["body"]


def test_preview_of_a_per_enterprise_key_without_an_enterprise_has_placeholders(client, tenant):
    key = f"delayed-{uuid.uuid4().hex[:8]}"
    delayed(client, tenant, key, 30, IN_APP=create_template(client, tenant, "IN_APP"))
    for step_id, outputs, schema in (
        (
            "in_app",
            {"subject": PLACEHOLDER, "body": PLACEHOLDER},
            OUTPUT_SCHEMAS[ChannelType.IN_APP],
        ),
        ("delay", {"amount": 0, "unit": "seconds"}, DELAY_OUTPUT),
    ):
        response = bridge_post(client, event({}), action="preview", workflowId=key, stepId=step_id)
        assert response.status_code == 200, response.text
        assert response.json()["outputs"] == outputs
        assert problems(schema, outputs) == []
    unknown = bridge_post(client, event({}), action="preview", workflowId=key, stepId="sms")
    assert_bridge_error(unknown, 404, "StepNotFoundError")
    strict = bridge_post(client, event({}), workflowId=key, stepId="in_app")
    assert_bridge_error(strict, 400, "ExecutionEventPayloadInvalidError")


def test_mock_follows_the_framework_rules():
    schema = {
        "type": "object",
        "properties": {
            "s": {"type": "string"},
            "short": {"type": "string", "maxLength": 3},
            "long": {"type": "string", "minLength": 20},
            "n": {"type": "integer", "minimum": 5, "maximum": 9},
            "e": {"enum": ["x", "y"]},
            "c": {"const": "k"},
            "tags": {"type": "array", "items": {"type": "string"}},
            "nested": {"$ref": "#/$defs/Nested"},
            "optional": {"type": "string"},
            "withDefault": {"type": "string", "default": "dflt"},
        },
        "required": ["s", "short", "long", "n", "e", "c", "tags", "nested"],
        "$defs": {
            "Nested": {
                "type": "object",
                "properties": {"z": {"type": "boolean"}},
                "required": ["z"],
            }
        },
    }
    mocked = mock_payload(schema, {"s": "given"})
    assert mocked == {
        "s": "given",
        "short": "[pl",
        "long": PLACEHOLDER * 2,
        "n": 5,
        "e": "x",
        "c": "k",
        "tags": [PLACEHOLDER],
        "nested": {"z": True},
        "withDefault": "dflt",
    }
    assert problems(schema, mocked) == []
    assert mock_payload(None, {"a": 1}) == {"a": 1}


# --- on the event loop, or on a thread -------------------------------------------------------


def _step(workflow_id: str, step_id: str, sent: dict[str, Any], *, on_loop: bool) -> Any:
    arguments: dict[str, Any] = {
        "action": PostAction.EXECUTE,
        "workflow_id": workflow_id,
        "step_id": step_id,
        "event": sent,
        "catalog": catalog_cache(),
    }
    try:
        answer = execute_step(**arguments, on_loop=on_loop)
    except WouldBlock:
        return WouldBlock
    except BridgeError as exc:
        return exc.body()
    answer["metadata"].pop("duration")
    return answer


def test_a_step_answered_on_the_loop_is_the_one_answered_on_a_thread(client, tenant):
    key = f"building-{uuid.uuid4().hex[:8]}"
    email = create_template(client, tenant, "EMAIL")
    # Written straight to the database: the API would load it into this process's registry.
    with transaction(tenant.enterprise_id) as session:
        WorkflowService(session).create_workflow(
            tenant.enterprise_id,
            {
                "workflow_key": key,
                "name": key,
                "publish_status": PublishStatus.PUBLISH,
                "default_channels": [ChannelType.EMAIL],
                "template_overrides": {"emailTemplateId": email["id"]},
                "payload_schema": BUILDING_SCHEMA,
            },
        )
    rendered = {"email": {"subject": "S", "body": "B"}}
    dynamic = {"buildingId": "b", "message": "m", "_xnovu": xnovu(tenant.enterprise_id, rendered)}
    carried = {**signup_payload(), "_xnovu": {"rendered": {"email": rendered["email"]}}}
    # (workflow, step, event, answered on the loop): rendering needs a thread, errors do not.
    cases = [
        ("user-signup", "email", event(carried), True),
        ("user-signup", "email", event(signup_payload()), False),
        ("user-signup", "email", event({"name": 5}), True),
        ("user-signup", "in_app", event(signup_payload()), True),
        ("user-signup", "in_app", event(signup_payload(), state=done("email")), False),
        ("user-signup", "nope", event(signup_payload()), True),
        (key, "email", event(dynamic), True),
        (key, "email", event({**dynamic, "buildingId": 7}), True),
    ]
    # The enterprise's workflows are not loaded in this process yet: that needs the database.
    assert _step(key, "email", event(dynamic), on_loop=True) is WouldBlock
    for workflow_id, step_id, sent, on_loop in cases:
        threaded = _step(workflow_id, step_id, sent, on_loop=False)
        assert threaded is not WouldBlock
        expected = threaded if on_loop else WouldBlock
        assert _step(workflow_id, step_id, sent, on_loop=True) == expected, (workflow_id, sent)
    # Content that must be rendered is rendered on a thread, never on the loop.
    unrendered = {"buildingId": "b", "message": "m", "_xnovu": xnovu(tenant.enterprise_id)}
    assert _step(key, "email", event(unrendered), on_loop=True) is WouldBlock
    assert get_registry().is_fresh(tenant.enterprise_id)


def test_a_tenant_schema_is_checked_on_a_thread_only_when_its_check_could_be_costly(client, tenant):
    # Its patterns run on RE2, in linear time: a small payload is checked on the loop; one whose
    # worst case (subschemas x values) is over payloads.LOOP_CHECK_WORK goes to a thread.
    key = f"patterned-{uuid.uuid4().hex[:8]}"
    schema = {"type": "object", "properties": {"code": {"type": "string", "pattern": "^(a+)+$"}}}
    create_workflow(
        client, tenant, key, publish=True, payload_schema=schema,
        EMAIL=create_template(client, tenant, "EMAIL"),
    )  # fmt: skip
    rendered = {"email": {"subject": "S", "body": "B"}}
    sent = event({"code": "aaa", "_xnovu": xnovu(tenant.enterprise_id, rendered)})
    assert _step(key, "email", sent, on_loop=False)["outputs"] == {"subject": "S", "body": "B"}
    assert _step(key, "email", sent, on_loop=True) == _step(key, "email", sent, on_loop=False)
    large = event(
        {"code": "aaa", "more": list(range(2000)), "_xnovu": xnovu(tenant.enterprise_id, rendered)}
    )
    assert _step(key, "email", large, on_loop=True) is WouldBlock
    assert _step(key, "email", large, on_loop=False)["outputs"] == {"subject": "S", "body": "B"}


def test_the_first_check_against_a_schema_is_compiled_on_a_thread(client, tenant):
    key = f"fresh-schema-{uuid.uuid4().hex[:8]}"
    schema = {"type": "object", "properties": {key: {"type": "string"}}, "required": [key]}
    create_workflow(
        client, tenant, key, publish=True, payload_schema=schema,
        EMAIL=create_template(client, tenant, "EMAIL"),
    )  # fmt: skip
    assert get_registry().is_fresh(tenant.enterprise_id)  # the API loaded it here
    rendered = {"email": {"subject": "S", "body": "B"}}
    sent = event({key: "v", "_xnovu": xnovu(tenant.enterprise_id, rendered)})
    assert _step(key, "email", sent, on_loop=True) is WouldBlock
    threaded = _step(key, "email", sent, on_loop=False)
    assert threaded["outputs"] == {"subject": "S", "body": "B"}
    assert _step(key, "email", sent, on_loop=True) == threaded


# --- the hot path ----------------------------------------------------------------------------


def test_bridge_requests_are_counted_under_their_route(client, operator):
    response = bridge_post(
        client, event(signup_payload()), workflowId="user-signup", stepId="email"
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.headers["novu-framework-sdk"] == "2.13.2"
    metrics = client.get("/metrics", headers=operator).text
    assert 'xnovu_http_requests_total{method="POST",route="/api/novu",status="200"}' in metrics


def test_openapi_still_describes_the_bridge(client):
    operations = client.get("/openapi.json").json()["paths"]["/api/novu"]
    assert set(operations) == {"get", "post", "options", "put", "patch", "delete"}
    parameters = {p["name"] for p in operations["post"]["parameters"]}
    assert parameters == {"action", "workflowId", "stepId"}


def test_a_static_workflow_may_declare_a_delay(client):
    key = f"static-delay-{uuid.uuid4().hex[:8]}"
    workflow = define_workflow(key, email("Hi {{ name }}", "<p>Hello</p>"), delay_seconds=120)
    get_registry().register_static_workflow(key, from_static(workflow))
    assert [s["stepId"] for s in discovered(client, key)["steps"]] == ["delay", "email"]
    response = bridge_post(client, event({"name": "Ada"}), workflowId=key, stepId="delay")
    assert response.status_code == 200, response.text
    assert response.json()["outputs"] == {"type": "regular", "amount": 120, "unit": "seconds"}
    email_step = bridge_post(
        client, event({"name": "Ada"}, state=done("delay")), workflowId=key, stepId="email"
    )
    assert email_step.json()["outputs"]["subject"] == "Hi Ada"


@pytest.mark.parametrize("seconds", [0, 2_592_001, True, 1.5])
def test_a_static_delay_out_of_range_fails_its_definition(seconds):
    with pytest.raises(WorkflowDefinitionError) as raised:
        define_workflow("bad-delay", email("s", "b"), delay_seconds=seconds)
    assert [p.code for p in raised.value.problems] == [ProblemCode.BAD_DELAY]


@pytest.mark.parametrize(
    ("pattern", "escaped"),
    [
        (r"^[^\s/$.?#].$", r"^[^\s/\$.?#].$"),
        (r"a$|[$]", r"a$|[\$]"),
        (r"[]$]x$", r"[]\$]x$"),
        (r"[^]$]", r"[^]\$]"),
        (r"\[$\]", r"\[$\]"),
        (r"[\]$]$", r"[\]\$]$"),
    ],
)
def test_dollars_in_classes_are_escaped_for_fastjsonschema(pattern, escaped):
    assert escape_class_dollars(pattern) == escaped
    for text in ("a", "$", "x$", "]", "[", "ab", "/a", "$x"):
        assert bool(re.search(pattern, text)) == bool(re.search(escaped, text)), text


def test_every_channel_output_schema_is_checked_by_compiled_code():
    """@novu/framework's in-app schema has `$` in a character class (its redirect URL), which
    fastjsonschema cannot compile as written; every channel's answer would be checked by the
    slower jsonschema on every execute."""
    for channel, schema in OUTPUT_SCHEMAS.items():
        assert _fast_checkers(schema) is not None, channel
    in_app = OUTPUT_SCHEMAS[ChannelType.IN_APP]
    redirect = {"label": "Open", "redirect": {"url": "https://example.com/a"}}
    assert problems(in_app, {"body": "hi", "primaryAction": redirect}) == []
    wrong = {"label": "Open", "redirect": {"url": "mailto:someone@example.com"}}
    assert [p["path"] for p in problems(in_app, {"body": "hi", "primaryAction": wrong})] == [
        "/primaryAction/redirect/url"
    ]
