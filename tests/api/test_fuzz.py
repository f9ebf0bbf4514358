"""Fuzzing every operation of the API's OpenAPI schema with schemathesis, in process.

Each case is sent with a valid API key, so the fuzzer reaches the routes rather than stopping at
authentication (tests/api/test_isolation_matrix.py covers the keys). Hypothesis also decides,
per case, whether path ids, the `X-Enterprise-Id` header and the trigger's `workflowId` are the
generated values or ones of a seeded enterprise, so cases reach real rows as well as missing
ones. The checks: no answer is a 5xx, and every error is JSON of the API's shape
`{"error": {"code", "message"}}`.

The Novu bridge (`/api/novu`) is fuzzed by its own test: its schema declares only the query, so
Hypothesis draws the POST body (an execute/preview event) too, and signs each request with the
Novu secret key as Novu does (a few requests go unsigned or badly signed, on purpose). Its
errors have the bridge protocol's shape `{"message", "code"}`.

Schemathesis's pytest loader (`schemathesis.pytest.from_fixture`) fails under pytest 9.2
(`'Function' object has no attribute '_nodeid'`), so the tests drive schemathesis's strategy of
each operation (`APIOperation.as_strategy`) with Hypothesis directly: schema-valid (positive)
and schema-violating (negative) data for the API, positive for the bridge, whose schema is
nearly empty.

The number of cases run is printed at the end; CI needs at least MIN_CASES of them.
XNOVU_FUZZ_EXAMPLES (default 30 per operation and mode) makes a deeper run.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis.generation import GenerationMode
from sqlalchemy import update

from api.bridge.signature import EMPTY_BODY, sign
from shared.db.enums import NotificationStatus
from shared.db.models import Notification
from shared.db.session import transaction
from shared.settings import get_settings
from tests.conftest import Tenant, make_tenant, signup_payload
from tests.factories import create_template, create_workflow

MIN_CASES = 1000
# Per operation and generation mode (positive, negative): with the schema's 23 API operations
# (both modes) and 6 bridge ones (positive), about 1,500 cases in under a minute.
MAX_EXAMPLES = int(os.environ.get("XNOVU_FUZZ_EXAMPLES", "30"))  # more for a deeper local run

BRIDGE_PATH = "/api/novu"
CASES: Counter[str] = Counter()
SECONDS: dict[str, float] = defaultdict(float)
FUZZ_SETTINGS = settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)


@dataclass(frozen=True)
class FuzzWorld:
    """A seeded enterprise whose rows the fuzzer can aim at, next to generated (missing) ids."""

    tenant: Tenant
    notification_ids: list[int]
    template_ids: list[int]
    workflow_ids: list[int]
    workflow_keys: list[str]


def _trigger(http: TestClient, tenant: Tenant, **extra: Any) -> int:
    response = http.post(
        "/api/trigger",
        json={"workflowId": "user-signup", "payload": signup_payload(), **extra},
        headers=tenant.headers,
    )
    assert response.status_code == 202, response.text
    return int(response.json()["notificationId"])


@pytest.fixture(scope="module")
def fuzz_world(app: Any) -> FuzzWorld:
    tenant = make_tenant()
    with TestClient(app) as http:
        email = create_template(http, tenant, "EMAIL")
        sms = create_template(http, tenant, "SMS")
        key = f"fuzz-{uuid.uuid4().hex[:8]}"
        published = create_workflow(http, tenant, key, publish=True, EMAIL=email, SMS=sms)
        draft = create_workflow(http, tenant, f"{key}-draft", SMS=sms)
        later = "2999-01-01T00:00:00+00:00"
        pending = _trigger(http, tenant, scheduledFor=later)
        failed = _trigger(http, tenant, scheduledFor=later)
        retracted = _trigger(http, tenant, scheduledFor=later)
        assert http.post(
            f"/api/notifications/{retracted}/cancel", headers=tenant.headers
        ).is_success
    with transaction() as session:
        session.execute(
            update(Notification)
            .where(Notification.id == failed)
            .values(notification_status=NotificationStatus.FAILED)
        )
    return FuzzWorld(
        tenant=tenant,
        notification_ids=[pending, failed, retracted],
        template_ids=[email["id"], sms["id"]],
        workflow_ids=[published["id"], draft["id"]],
        workflow_keys=[key, f"{key}-draft", "user-signup", "password-reset"],
    )


@pytest.fixture(scope="module")
def api_schema(app: Any) -> Any:
    return schemathesis.openapi.from_asgi("/openapi.json", app)


@pytest.fixture(scope="module")
def http(app: Any) -> Iterator[TestClient]:
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def _operations(schema: Any, *, bridge: bool) -> list[Any]:
    operations = [result.ok() for result in schema.get_all_operations()]
    return [op for op in operations if (op.path == BRIDGE_PATH) == bridge]


def _set_header(headers: dict[str, Any], name: str, value: str | None) -> None:
    for existing in [h for h in headers if h.lower() == name.lower()]:
        del headers[existing]
    if value is not None:
        headers[name] = value


def _aim(case: Any, data: st.DataObject, world: FuzzWorld) -> None:
    """Point parts of a generated case at the seeded enterprise's rows, as Hypothesis chooses."""
    headers = dict(case.headers or {})
    _set_header(headers, "Authorization", f"Bearer {world.tenant.api_key}")
    if any(h.lower() == "x-enterprise-id" for h in headers) and data.draw(
        st.booleans(), label="own X-Enterprise-Id"
    ):
        _set_header(headers, "X-Enterprise-Id", str(world.tenant.enterprise_id))
    case.headers = headers
    seeded = {
        "notification_id": world.notification_ids,
        "template_id": world.template_ids,
        "workflow_id": world.workflow_ids,
    }
    path_parameters = dict(case.path_parameters or {})
    for name in path_parameters:
        if name in seeded and data.draw(st.booleans(), label=f"seeded {name}"):
            path_parameters[name] = data.draw(st.sampled_from(seeded[name]), label=name)
    if path_parameters:
        case.path_parameters = path_parameters
    if case.path == "/api/trigger" and isinstance(case.body, dict):
        if data.draw(st.booleans(), label="seeded workflowId"):
            case.body["workflowId"] = data.draw(st.sampled_from(world.workflow_keys))
        if "enterpriseId" in case.body and data.draw(st.booleans(), label="own enterpriseId"):
            case.body["enterpriseId"] = str(world.tenant.enterprise_id)


def _assert_api_error_shape(response: Any, label: str) -> None:
    try:
        body = response.json()
    except ValueError:
        pytest.fail(f"{label}: {response.status_code} error is not JSON: {response.text[:300]!r}")
    error = body.get("error") if isinstance(body, dict) else None
    assert isinstance(error, dict), f"{label}: {response.status_code} error shape: {body!r}"
    assert isinstance(error.get("code"), str) and error["code"], f"{label}: {body!r}"
    assert isinstance(error.get("message"), str) and error["message"], f"{label}: {body!r}"


def _check_api_case(case: Any, data: st.DataObject, world: FuzzWorld) -> None:
    _aim(case, data, world)
    response = case.call()
    CASES[case.operation.label] += 1
    label = (
        f"{case.operation.label} path={case.path_parameters} query={case.query} "
        f"body={str(case.body)[:300]}"
    )
    assert response.status_code < 500, f"{label}: {response.status_code} {response.text[:500]}"
    if response.status_code >= 400:
        _assert_api_error_shape(response, label)


def _fuzz(operation: Any, mode: GenerationMode, check: Callable[[Any, Any], None]) -> None:
    """Run Hypothesis over one operation's generated cases (positive or negative data)."""

    @FUZZ_SETTINGS
    @given(case=operation.as_strategy(mode), data=st.data())
    def run(case: Any, data: Any) -> None:
        check(case, data)

    started = time.perf_counter()
    try:
        run()
    except Unsatisfiable:
        # Nothing of the operation can be made invalid (no parameters, no body).
        if mode is not GenerationMode.NEGATIVE:
            raise
    finally:
        SECONDS[operation.label] += time.perf_counter() - started


@pytest.mark.timeout(max(300, MAX_EXAMPLES * 10))
def test_api_answers_no_5xx_and_json_errors(
    api_schema: Any, fuzz_world: FuzzWorld, subtests: Any
) -> None:
    for operation in _operations(api_schema, bridge=False):
        for mode in GenerationMode:
            with subtests.test(msg=f"{operation.label} ({mode.value})"):
                _fuzz(operation, mode, lambda case, data: _check_api_case(case, data, fuzz_world))


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)


def _bridge_event(enterprise_id: uuid.UUID) -> st.SearchStrategy[Any]:
    """An execute/preview event as Novu sends it, or anything else JSON."""
    xnovu = st.fixed_dictionaries(
        {}, optional={"enterpriseId": st.sampled_from([str(enterprise_id), "nope"]) | JSON_VALUES}
    )
    payload = st.fixed_dictionaries({}, optional={"_xnovu": xnovu}) | st.dictionaries(
        st.text(max_size=10), JSON_VALUES, max_size=4
    )
    event = st.fixed_dictionaries(
        {},
        optional={
            "payload": payload | JSON_VALUES,
            "controls": st.dictionaries(st.text(max_size=10), JSON_VALUES, max_size=3),
            "state": st.lists(JSON_VALUES, max_size=3),
            "subscriber": JSON_VALUES,
            "workflowId": st.text(max_size=20),
            "stepId": st.text(max_size=20),
        },
    )
    return event | JSON_VALUES


def _check_bridge_case(case: Any, data: st.DataObject, world: FuzzWorld, http: TestClient) -> None:
    method = case.method.upper()
    query = {k: v for k, v in (case.query or {}).items() if v is not None}
    if data.draw(st.booleans(), label="known workflow and step"):
        query["workflowId"] = data.draw(st.sampled_from(world.workflow_keys))
        query["stepId"] = data.draw(st.sampled_from(["email", "in_app", "sms", "push", "chat"]))
    body = b""
    if method == "POST":
        body = json.dumps(data.draw(_bridge_event(world.tenant.enterprise_id))).encode()
    signed = body or EMPTY_BODY
    secret = get_settings().effective_novu_secret_key
    headers = {"content-type": "application/json"}
    signature = data.draw(
        st.sampled_from(["valid"] * 8 + ["missing", "garbled", "other-body"]), label="signature"
    )
    if signature == "valid":
        headers["novu-signature"] = sign(secret, signed)
    elif signature == "garbled":
        headers["novu-signature"] = data.draw(st.text(st.characters(codec="ascii"), max_size=60))
    elif signature == "other-body":
        headers["novu-signature"] = sign(secret, signed + b" ")
    response = http.request(method, BRIDGE_PATH, params=query, content=body, headers=headers)
    CASES[case.operation.label] += 1
    label = f"{method} {BRIDGE_PATH} {query} {body[:200]!r}"
    assert response.status_code < 500, f"{label}: {response.status_code} {response.text[:500]}"
    if response.status_code >= 400:
        error = response.json()
        assert isinstance(error, dict), f"{label}: {error!r}"
        assert isinstance(error.get("message"), str), f"{label}: {error!r}"
        assert isinstance(error.get("code"), str), f"{label}: {error!r}"


@pytest.mark.timeout(max(300, MAX_EXAMPLES * 10))
def test_bridge_answers_no_5xx_and_protocol_errors(
    api_schema: Any, fuzz_world: FuzzWorld, http: TestClient, subtests: Any
) -> None:
    for operation in _operations(api_schema, bridge=True):
        with subtests.test(msg=operation.label):
            _fuzz(
                operation,
                GenerationMode.POSITIVE,
                lambda case, data: _check_bridge_case(case, data, fuzz_world, http),
            )


def test_fuzzing_ran_enough_cases(capsys: pytest.CaptureFixture[str]) -> None:
    """Runs after the two fuzz tests (file order): prints and checks how many cases they sent."""
    total = sum(CASES.values())
    if total == 0:
        pytest.skip("the fuzz tests did not run in this session")
    lines = [f"schemathesis: {total} cases over {len(CASES)} operations"]
    lines += [
        f"  {count:5d} cases {SECONDS[label]:6.1f} s  {label}"
        for label, count in sorted(CASES.items())
    ]
    with capsys.disabled():
        print("\n" + "\n".join(lines))
    assert total >= MIN_CASES, f"only {total} fuzz cases ran; CI needs {MIN_CASES}"


# Regressions: answers the fuzzer found to be 503s (database errors), now 422s.


def test_patch_workflow_with_null_default_channels_is_422(client: Any, tenant: Tenant) -> None:
    sms = create_template(client, tenant, "SMS")
    workflow = create_workflow(client, tenant, f"null-{uuid.uuid4().hex[:8]}", SMS=sms)
    response = client.patch(
        f"/api/workflows/{workflow['id']}", json={"default_channels": None}, headers=tenant.headers
    )
    assert response.status_code == 422, response.text
    assert response.json()["error"]["details"][0]["field"] == "default_channels"


@pytest.mark.parametrize(
    ("path", "body"),
    [
        (
            "/api/templates",
            {"name": "a\x00b", "template_key": "nul", "channel_type": "SMS", "body_template": "hi"},
        ),
        (
            "/api/templates",
            {
                "name": "n",
                "template_key": "nul-json",
                "channel_type": "SMS",
                "body_template": "hi",
                "variables_description": {"x": "\x00"},
            },
        ),
        (
            "/api/trigger",
            {"workflowId": "user-signup", "payload": {**signup_payload(), "x": "\x00"}},
        ),
        ("/api/workflows", {"workflow_key": "nul", "name": "a\x00", "default_channels": ["SMS"]}),
    ],
    ids=["text column", "jsonb column", "trigger payload", "workflow name"],
)
def test_a_nul_character_is_422_not_a_database_error(
    client: Any, tenant: Tenant, path: str, body: dict[str, Any]
) -> None:
    response = client.post(path, json=body, headers=tenant.headers)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "invalid_value"
