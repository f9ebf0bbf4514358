"""The Novu Framework bridge at /api/novu: each action and each error, shapes field by field.

The expected shapes are those @novu/framework 2.13.2 answers for a workflow with email,
in_app, sms and push steps (see api/bridge/ and the @novu/framework source).
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from api.bridge.signature import sign
from shared.settings import get_settings
from tests.conftest import make_tenant, signup_payload
from tests.factories import create_template, create_workflow

BRIDGE = "/api/novu"
STEP_KEYS = {"stepId", "type", "controls", "outputs", "results", "code", "options", "providers"}
WORKFLOW_KEYS = {
    "workflowId",
    "severity",
    "steps",
    "code",
    "payload",
    "controls",
    "env",
    "tags",
    "preferences",
}
EMPTY = {"type": "object", "properties": {}, "required": [], "additionalProperties": False}
BUILDING_SCHEMA = {
    "type": "object",
    "properties": {"buildingId": {"type": "string"}, "message": {"type": "string"}},
    "required": ["buildingId", "message"],
    "additionalProperties": False,
}


def compact(document: Any) -> bytes:
    """JSON as Novu sends it (JSON.stringify: no spaces)."""
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()


def secret() -> str:
    return get_settings().effective_novu_secret_key


def bridge_get(client: Any, action: str | None = None, **params: str) -> Any:
    """A GET signed as Novu signs it (over `{}`)."""
    query = {**({"action": action} if action else {}), **params}
    return client.get(BRIDGE, params=query, headers={"novu-signature": sign(secret())})


def bridge_post(
    client: Any,
    event: Any,
    *,
    action: str = "execute",
    headers: dict[str, str] | None = None,
    **params: str,
) -> Any:
    """A POST of `event` as compact JSON, signed over exactly the bytes sent."""
    body = compact(event)
    sent = {"content-type": "application/json", "novu-signature": sign(secret(), body)}
    return client.post(
        BRIDGE,
        params={"action": action, **params},
        content=body,
        headers={**sent, **(headers or {})},
    )


def event(
    payload: Any, *, state: list[dict[str, Any]] | None = None, **extra: Any
) -> dict[str, Any]:
    """An execute body as Novu's worker sends it."""
    return {
        "payload": payload,
        "controls": {},
        "state": state or [],
        "subscriber": {"subscriberId": "s-1"},
        **extra,
    }


def done(*step_ids: str) -> list[dict[str, Any]]:
    """`state` entries for steps that ran before."""
    return [{"stepId": s, "outputs": {}, "state": {"status": "completed"}} for s in step_ids]


def xnovu(enterprise_id: uuid.UUID, rendered: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "enterpriseId": str(enterprise_id),
        "notificationId": 1,
        "workflowType": "DYNAMIC",
        "channels": sorted(rendered or {}),
        "rendered": rendered or {},
    }


def assert_bridge_error(response: Any, status: int, code: str) -> dict[str, Any]:
    """The framework's error shape: `{message, code, data?}`, nothing else."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) <= {"message", "code", "data"}, body
    assert body["code"] == code
    assert isinstance(body["message"], str) and body["message"]
    assert response.headers["novu-framework-version"] == "2024-06-26"
    return dict(body)


def assert_execute_shape(body: dict[str, Any], *, skip: bool) -> None:
    assert set(body) == {"outputs", "providers", "options", "metadata"}
    assert body["providers"] == {}
    assert body["options"] == {"skip": skip}
    assert set(body["metadata"]) == {"status", "error", "duration"}
    assert body["metadata"]["status"] == "success"
    assert body["metadata"]["error"] is False
    assert isinstance(body["metadata"]["duration"], int | float)
    assert body["metadata"]["duration"] >= 0


def discovered(client: Any, workflow_id: str) -> dict[str, Any]:
    response = bridge_get(client, "discover")
    assert response.status_code == 200, response.text
    matches = [w for w in response.json()["workflows"] if w["workflowId"] == workflow_id]
    assert len(matches) == 1, f"{workflow_id} declared {len(matches)} times"
    return dict(matches[0])


@pytest.fixture()
def building(client: Any, tenant: Any) -> dict[str, Any]:
    """A published dynamic workflow of the tenant with email and in-app templates."""
    key = f"building-{uuid.uuid4().hex[:8]}"
    email = create_template(client, tenant, "EMAIL")
    in_app = create_template(client, tenant, "IN_APP")
    create_workflow(
        client,
        tenant,
        key,
        publish=True,
        payload_schema=BUILDING_SCHEMA,
        EMAIL=email,
        IN_APP=in_app,
    )
    return {"key": key, "tenant": tenant}


# --- health-check ------------------------------------------------------------------------


@pytest.mark.parametrize("params", [{}, {"action": "health-check"}])
def test_health_check_needs_no_signature_and_counts_what_is_declared(client, params):
    response = client.get(BRIDGE, params=params)
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"status", "sdkVersion", "frameworkVersion", "discovered"}
    assert body["status"] == "ok"
    assert body["sdkVersion"] == "2.13.2"
    assert body["frameworkVersion"] == "2024-06-26"
    assert set(body["discovered"]) == {"workflows", "steps"}
    workflows = bridge_get(client, "discover").json()["workflows"]
    assert body["discovered"]["workflows"] == len(workflows)
    assert body["discovered"]["steps"] == sum(len(w["steps"]) for w in workflows)
    assert response.headers["content-type"].startswith("application/json")
    assert response.headers["access-control-allow-origin"] == "*"
    assert response.headers["novu-framework-sdk"] == "2.13.2"


# --- discover ----------------------------------------------------------------------------


def test_discover_declares_each_static_workflow_with_framework_shapes(client):
    response = bridge_get(client, "discover")
    assert response.status_code == 200
    assert set(response.json()) == {"workflows", "agents"}
    assert response.json()["agents"] == []
    signup = discovered(client, "user-signup")
    assert set(signup) == WORKFLOW_KEYS | {"name", "description"}
    assert signup["severity"] == "none"
    assert signup["tags"] == ["onboarding"]
    assert signup["preferences"] == {}
    assert signup["name"] == "User sign-up"
    assert isinstance(signup["code"], str) and "user-signup" in signup["code"]
    assert signup["controls"] == {"schema": EMPTY, "unknownSchema": EMPTY}
    assert signup["env"] == {"schema": EMPTY, "unknownSchema": EMPTY}
    payload = signup["payload"]
    assert set(payload) == {"schema", "unknownSchema"}
    assert payload["schema"] == payload["unknownSchema"]
    assert payload["schema"]["type"] == "object"
    assert set(payload["schema"]["required"]) == {"userId", "email", "name"}
    assert payload["schema"]["properties"]["_xnovu"]["type"] == "object"
    assert [s["stepId"] for s in signup["steps"]] == ["email", "in_app"]
    reset = discovered(client, "password-reset")
    assert [s["stepId"] for s in reset["steps"]] == ["email", "sms"]
    assert reset["tags"] == ["security", "account"]


def test_discover_steps_carry_each_channels_output_and_result_schemas(client):
    steps = {s["stepId"]: s for s in discovered(client, "user-signup")["steps"]}
    steps |= {s["stepId"]: s for s in discovered(client, "password-reset")["steps"]}
    for step_id, step in steps.items():
        assert set(step) == STEP_KEYS
        assert step["type"] == step_id
        assert step["controls"] == {"schema": EMPTY, "unknownSchema": EMPTY}
        assert step["options"] == {}
        assert step["providers"] == []
        assert isinstance(step["code"], str)
        for part in ("outputs", "results"):
            assert step[part]["schema"] == step[part]["unknownSchema"]

    email = steps["email"]["outputs"]["schema"]
    assert email["type"] == "object"
    assert email["required"] == ["subject", "body"]
    assert email["additionalProperties"] is False
    assert email["properties"]["subject"] == {"type": "string", "minLength": 1}
    assert email["properties"]["body"] == {"type": "string"}
    assert email["properties"]["from"] == {
        "type": "object",
        "properties": {"email": {"type": "string"}, "name": {"type": "string"}},
        "additionalProperties": False,
    }
    assert email["properties"]["replyTo"] == {"type": "string"}
    assert email["properties"]["preheader"] == {"type": "string"}
    assert email["properties"]["useProviderDefaults"] == {"type": "boolean"}
    assert set(email["properties"]) == {
        "subject",
        "body",
        "from",
        "replyTo",
        "preheader",
        "useProviderDefaults",
    }
    assert steps["email"]["results"]["schema"] == EMPTY

    in_app = steps["in_app"]["outputs"]["schema"]
    assert in_app["anyOf"] == [{"required": ["subject"]}, {"required": ["body"]}]
    assert in_app["properties"]["body"] == {"type": "string", "minLength": 1}
    assert in_app["properties"]["subject"] == {"type": "string", "minLength": 1}
    assert {"avatar", "primaryAction", "secondaryAction", "data", "redirect"} <= set(
        in_app["properties"]
    )
    assert in_app["additionalProperties"] is False
    result = steps["in_app"]["results"]["schema"]
    assert result["required"] == ["seen", "read", "lastSeenDate", "lastReadDate"]

    assert steps["sms"]["outputs"]["schema"] == {
        "type": "object",
        "properties": {"body": {"type": "string"}},
        "required": ["body"],
        "additionalProperties": False,
    }
    assert steps["sms"]["results"]["schema"] == EMPTY


def test_push_step_output_schema_is_title_and_body():
    from api.bridge.schemas import OUTPUT_SCHEMAS
    from shared.db.enums import ChannelType

    assert OUTPUT_SCHEMAS[ChannelType.PUSH] == {
        "type": "object",
        "properties": {"subject": {"type": "string"}, "body": {"type": "string"}},
        "required": ["subject", "body"],
        "additionalProperties": False,
    }


def test_dynamic_key_of_several_enterprises_is_declared_once_with_the_union_of_channels(client):
    key = f"shared-{uuid.uuid4().hex[:8]}"
    first, second = make_tenant(), make_tenant()
    create_workflow(
        client,
        first,
        key,
        publish=True,
        payload_schema=BUILDING_SCHEMA,
        EMAIL=create_template(client, first, "EMAIL"),
    )
    create_workflow(
        client,
        second,
        key,
        publish=True,
        payload_schema=BUILDING_SCHEMA,
        SMS=create_template(client, second, "SMS"),
        IN_APP=create_template(client, second, "IN_APP"),
    )
    workflow = discovered(client, key)
    assert set(workflow) >= WORKFLOW_KEYS
    assert [s["stepId"] for s in workflow["steps"]] == ["email", "in_app", "sms"]
    assert workflow["payload"]["schema"]["required"] == ["buildingId", "message"]
    assert "_xnovu" in workflow["payload"]["schema"]["properties"]


def test_differing_payload_schemas_of_one_key_are_declared_as_any_object(client):
    key = f"mixed-{uuid.uuid4().hex[:8]}"
    first, second = make_tenant(), make_tenant()
    create_workflow(
        client,
        first,
        key,
        publish=True,
        payload_schema=BUILDING_SCHEMA,
        EMAIL=create_template(client, first, "EMAIL"),
    )
    create_workflow(
        client, second, key, publish=True, EMAIL=create_template(client, second, "EMAIL")
    )
    schema = discovered(client, key)["payload"]["schema"]
    assert schema["type"] == "object"
    assert schema["additionalProperties"] is True
    assert "required" not in schema


def test_drafts_and_deactivated_workflows_are_not_declared(client, tenant):
    draft = f"draft-{uuid.uuid4().hex[:8]}"
    gone = f"gone-{uuid.uuid4().hex[:8]}"
    create_workflow(client, tenant, draft, EMAIL=create_template(client, tenant, "EMAIL"))
    row = create_workflow(
        client, tenant, gone, publish=True, EMAIL=create_template(client, tenant, "EMAIL")
    )
    client.post(f"/api/workflows/{row['id']}/deactivate", headers=tenant.headers)
    ids = {w["workflowId"] for w in bridge_get(client, "discover").json()["workflows"]}
    assert draft not in ids and gone not in ids


def test_code_action_describes_a_workflow_and_a_step(client):
    assert bridge_get(client, "code", workflowId="user-signup").json()["code"]
    assert (
        "email"
        in bridge_get(client, "code", workflowId="user-signup", stepId="email").json()["code"]
    )
    assert_bridge_error(
        bridge_get(client, "code", workflowId="no-such"), 404, "WorkflowNotFoundError"
    )


# --- execute and preview -----------------------------------------------------------------


def test_execute_returns_the_content_carried_in_the_payload(client, building):
    tenant = building["tenant"]
    rendered = {
        "email": {"subject": "Subject A", "body": "<p>Body A</p>"},
        "in_app": {"subject": "Hi", "body": "In-app A"},
    }
    payload = {"buildingId": "b-1", "message": "m", "_xnovu": xnovu(tenant.enterprise_id, rendered)}
    response = bridge_post(client, event(payload), workflowId=building["key"], stepId="email")
    assert response.status_code == 200, response.text
    body = response.json()
    assert_execute_shape(body, skip=False)
    assert body["outputs"] == {"subject": "Subject A", "body": "<p>Body A</p>"}

    in_app = bridge_post(
        client, event(payload, state=done("email")), workflowId=building["key"], stepId="in_app"
    ).json()
    assert in_app["outputs"] == {"subject": "Hi", "body": "In-app A"}


def test_execute_without_rendered_content_renders_the_enterprises_templates(client, building):
    tenant = building["tenant"]
    payload = {
        "buildingId": "b-7",
        "message": "Smoke <alarm>",
        "_xnovu": {"enterpriseId": str(tenant.enterprise_id)},
    }
    email = bridge_post(client, event(payload), workflowId=building["key"], stepId="email")
    assert email.status_code == 200, email.text
    assert email.json()["outputs"] == {
        "subject": "[LOW] b-7",
        "body": "<p>Smoke &lt;alarm&gt;</p>",
    }


def test_enterprise_may_be_named_at_the_top_level_of_the_payload(client, tenant):
    key = f"plain-{uuid.uuid4().hex[:8]}"
    create_workflow(
        client, tenant, key, publish=True, IN_APP=create_template(client, tenant, "IN_APP")
    )
    plain = {"buildingId": "b-7", "message": "m", "enterpriseId": str(tenant.enterprise_id)}
    in_app = bridge_post(client, event(plain), workflowId=key, stepId="in_app")
    assert in_app.status_code == 200, in_app.text
    assert in_app.json()["outputs"] == {"subject": "Building b-7", "body": "m"}


def test_static_workflow_renders_its_inline_content_without_an_enterprise(client):
    payload = signup_payload("ada")
    response = bridge_post(client, event(payload), workflowId="user-signup", stepId="email")
    assert response.status_code == 200, response.text
    outputs = response.json()["outputs"]
    assert outputs["subject"] == "Welcome to XNovu, Ada Lovelace!"
    assert "<h1>Welcome, Ada Lovelace!</h1>" in outputs["body"]


def test_channel_the_enterprise_does_not_enable_is_skipped(client):
    key = f"shared-{uuid.uuid4().hex[:8]}"
    both, email_only = make_tenant(), make_tenant()
    create_workflow(
        client,
        both,
        key,
        publish=True,
        EMAIL=create_template(client, both, "EMAIL"),
        IN_APP=create_template(client, both, "IN_APP"),
    )
    create_workflow(
        client, email_only, key, publish=True, EMAIL=create_template(client, email_only, "EMAIL")
    )
    payload = {"buildingId": "b", "message": "m", "_xnovu": xnovu(email_only.enterprise_id)}
    response = bridge_post(
        client, event(payload, state=done("email")), workflowId=key, stepId="in_app"
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert_execute_shape(body, skip=True)
    assert body["outputs"] == {}
    # The same step of the enterprise that enables it is not skipped.
    payload["_xnovu"] = xnovu(both.enterprise_id)
    other = bridge_post(
        client, event(payload, state=done("email")), workflowId=key, stepId="in_app"
    )
    assert other.json()["options"] == {"skip": False}


def test_preview_has_the_execute_shape_and_needs_no_state(client, building):
    tenant = building["tenant"]
    payload = {"buildingId": "b-2", "message": "hello", "_xnovu": xnovu(tenant.enterprise_id)}
    response = bridge_post(
        client, event(payload), action="preview", workflowId=building["key"], stepId="in_app"
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert_execute_shape(body, skip=False)
    assert body["outputs"] == {"subject": "Building b-2", "body": "hello"}


def test_payload_without_the_xnovu_key_is_validated_against_the_workflow_schema(client, building):
    tenant = building["tenant"]
    # `_xnovu` is XNovu's own: a schema without extra properties still accepts it.
    payload = {"buildingId": "b", "message": "m", "_xnovu": xnovu(tenant.enterprise_id)}
    ok = bridge_post(client, event(payload), workflowId=building["key"], stepId="email")
    assert ok.status_code == 200, ok.text

    bad = {"buildingId": 5, "_xnovu": xnovu(tenant.enterprise_id)}
    response = bridge_post(client, event(bad), workflowId=building["key"], stepId="email")
    body = assert_bridge_error(response, 400, "ExecutionEventPayloadInvalidError")
    assert isinstance(body["data"], list) and body["data"]
    for problem in body["data"]:
        assert set(problem) == {"path", "message"}
    paths = {p["path"] for p in body["data"]}
    assert "/buildingId" in paths  # wrong type, pointed at
    assert "" in paths  # a missing property is reported on its parent, as the framework does


def test_execute_without_a_payload_is_400(client):
    response = bridge_post(
        client,
        {"controls": {}, "state": [], "subscriber": {}},
        workflowId="user-signup",
        stepId="email",
    )
    body = assert_bridge_error(response, 400, "ExecutionEventPayloadInvalidError")
    assert body["data"] == {"message": "Event `payload` is required"}


def test_unknown_workflow_is_404(client, tenant):
    payload = {"_xnovu": xnovu(tenant.enterprise_id)}
    response = bridge_post(client, event(payload), workflowId="no-such-workflow", stepId="email")
    body = assert_bridge_error(response, 404, "WorkflowNotFoundError")
    assert body["data"]["workflowId"] == "no-such-workflow"


@pytest.mark.parametrize("step_id", ["nope", "sms", ""])
def test_unknown_step_is_404(client, step_id):
    response = bridge_post(
        client, event(signup_payload()), workflowId="user-signup", stepId=step_id
    )
    body = assert_bridge_error(response, 404, "StepNotFoundError")
    assert body["data"] == {"workflowId": "user-signup", "stepId": step_id}


def test_missing_state_of_an_earlier_step_is_400(client):
    response = bridge_post(
        client, event(signup_payload()), workflowId="user-signup", stepId="in_app"
    )
    body = assert_bridge_error(response, 400, "ExecutionStateCorruptError")
    assert body["data"] == {"workflowId": "user-signup", "stepId": "email"}
    fine = bridge_post(
        client,
        event(signup_payload(), state=done("email")),
        workflowId="user-signup",
        stepId="in_app",
    )
    assert fine.status_code == 200


@pytest.mark.parametrize(
    ("method", "action"),
    [
        ("POST", "discover"),
        ("POST", "trigger"),
        ("POST", "health-check"),
        ("GET", "execute"),
        ("GET", "nonsense"),
        ("POST", "nonsense"),
    ],
)
def test_unknown_action_for_the_method_is_400(client, method, action):
    if method == "GET":
        response = bridge_get(client, action)
    else:
        response = bridge_post(client, event({}), action=action)
    assert_bridge_error(response, 400, "InvalidActionError")


def test_unsigned_request_with_an_unknown_action_is_401_first(client):
    response = client.get(BRIDGE, params={"action": "nonsense"})
    assert_bridge_error(response, 401, "SignatureNotFoundError")


def test_other_methods_are_405(client):
    response = client.put(
        BRIDGE, params={"action": "discover"}, headers={"novu-signature": sign(secret())}
    )
    assert_bridge_error(response, 405, "MethodNotAllowedError")


def test_options_answers_an_empty_object(client):
    response = client.options(
        BRIDGE, params={"action": "discover"}, headers={"novu-signature": sign(secret())}
    )
    assert response.status_code == 200 and response.json() == {}


def test_enterprise_id_that_is_not_a_uuid_is_400(client):
    payload = {**signup_payload(), "_xnovu": {"enterpriseId": "acme"}}
    response = bridge_post(client, event(payload), workflowId="user-signup", stepId="email")
    body = assert_bridge_error(response, 400, "ExecutionEventPayloadInvalidError")
    assert body["data"] == [{"path": "/_xnovu/enterpriseId", "message": "must be a UUID string"}]


def test_dynamic_workflow_needs_the_enterprise(client, building):
    payload = {"buildingId": "b", "message": "m"}
    response = bridge_post(client, event(payload), workflowId=building["key"], stepId="email")
    body = assert_bridge_error(response, 400, "ExecutionEventPayloadInvalidError")
    assert body["data"][0]["path"] == "/_xnovu/enterpriseId"


def test_carried_outputs_that_fail_the_step_schema_are_400(client, building):
    tenant = building["tenant"]
    rendered = {"email": {"subject": "", "body": "b"}}
    payload = {"buildingId": "b", "message": "m", "_xnovu": xnovu(tenant.enterprise_id, rendered)}
    response = bridge_post(client, event(payload), workflowId=building["key"], stepId="email")
    body = assert_bridge_error(response, 400, "ExecutionStateOutputInvalidError")
    assert body["data"][0]["path"] == "/subject"


def test_template_that_cannot_render_is_a_step_failure_not_a_500(client, tenant):
    key = f"broken-{uuid.uuid4().hex[:8]}"
    email = create_template(client, tenant, "EMAIL", subject="{{ missing.attribute }}", body="x")
    create_workflow(client, tenant, key, publish=True, EMAIL=email)
    payload = {"_xnovu": {"enterpriseId": str(tenant.enterprise_id)}}
    response = bridge_post(client, event(payload), workflowId=key, stepId="email")
    body = assert_bridge_error(response, 400, "StepExecutionFailedError")
    assert body["data"]["stepId"] == "email"


def test_bridge_errors_never_use_the_api_error_shape(client):
    response = client.get(BRIDGE, params={"action": "discover"})
    assert "error" not in response.json()
    assert set(response.json()) == {"message", "code"}


class _BrokenRegistry:
    def __init__(self, error: Exception) -> None:
        self.error = error

    def get_workflow(self, *args: Any) -> None:
        raise self.error


def test_database_outage_is_503_which_novu_retries(client, monkeypatch):
    from sqlalchemy.exc import OperationalError

    from api.bridge import execute

    down = OperationalError("SELECT 1", {}, Exception("connection refused"))
    monkeypatch.setattr(execute, "get_registry", lambda: _BrokenRegistry(down))
    response = bridge_post(
        client, event(signup_payload()), workflowId="user-signup", stepId="email"
    )
    assert_bridge_error(response, 503, "BridgeError")
    assert response.headers["retry-after"] == "2"


def test_unexpected_failure_is_a_500_in_the_bridge_shape(client, monkeypatch):
    from api.bridge import execute

    monkeypatch.setattr(execute, "get_registry", lambda: _BrokenRegistry(RuntimeError("boom")))
    response = bridge_post(
        client, event(signup_payload()), workflowId="user-signup", stepId="email"
    )
    body = assert_bridge_error(response, 500, "BridgeError")
    assert "boom" not in body["message"]
