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

The number of cases run is printed at the end; CI needs at least MIN_CASES of them.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.config import SchemathesisConfig
from sqlalchemy import update

from shared.db.enums import NotificationStatus
from shared.db.models import Notification
from shared.db.session import transaction
from shared.settings import get_settings
from tests.conftest import Tenant, make_tenant, signup_payload
from tests.factories import create_template, create_workflow

MIN_CASES = 1000
# Per operation and phase; with the schema's 22 API and 6 bridge operations, the examples and
# coverage phases' own cases, this runs about 2,000 cases in well under a minute.
MAX_EXAMPLES = 45

BRIDGE_PATH = "/api/novu"
CASES: Counter[str] = Counter()
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
        assert http.post(f"/api/notifications/{retracted}/cancel", headers=tenant.headers).is_success
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
def api_schema(app: Any, fuzz_world: FuzzWorld) -> Any:
    config = SchemathesisConfig.from_dict({"headers": fuzz_world.tenant.headers})
    return schemathesis.openapi.from_asgi("/openapi.json", app, config=config)


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


@pytest.mark.timeout(300)
@FUZZ_SETTINGS
@schema.exclude(path=BRIDGE_PATH).parametrize()
@schema.given(data=st.data())
def test_api_answers_no_5xx_and_json_errors(case: Any, data: Any, fuzz_world: FuzzWorld) -> None:
    _aim(case, data, fuzz_world)
    response = case.call()
    CASES[case.operation.label] += 1
    label = f"{case.operation.label} {case.path_parameters or ''}"
    assert response.status_code < 500, f"{label}: {response.status_code} {response.text[:500]}"
    if response.status_code >= 400:
        _assert_api_error_shape(response, label)


def _sign(body: bytes, secret: str) -> str:
    timestamp = str(int(time.time() * 1000))
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={digest.hexdigest()}"


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
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


@pytest.mark.timeout(300)
@FUZZ_SETTINGS
@schema.include(path=BRIDGE_PATH).parametrize()
@schema.given(data=st.data())
def test_bridge_answers_no_5xx_and_protocol_errors(
    case: Any, data: Any, fuzz_world: FuzzWorld, http: TestClient
) -> None:
    query = dict(case.query or {})
    if data.draw(st.booleans(), label="known workflow and step"):
        query["workflowId"] = data.draw(st.sampled_from(fuzz_world.workflow_keys))
        query["stepId"] = data.draw(st.sampled_from(["email", "in_app", "sms", "push", "chat"]))
    body = b""
    if case.method.upper() == "POST":
        body = json.dumps(data.draw(_bridge_event(fuzz_world.tenant.enterprise_id))).encode()
    signed = body or b"{}"
    signature = data.draw(
        st.sampled_from(["valid"] * 8 + ["missing", "garbled", "other-body"]), label="signature"
    )
    secret = get_settings().effective_novu_secret_key
    headers = {"content-type": "application/json"}
    if signature == "valid":
        headers["novu-signature"] = _sign(signed, secret)
    elif signature == "garbled":
        headers["novu-signature"] = data.draw(st.text(max_size=60).map(lambda s: s.strip()))
    elif signature == "other-body":
        headers["novu-signature"] = _sign(signed + b" ", secret)
    response = http.request(case.method.upper(), BRIDGE_PATH, params=query, content=body, headers=headers)
    CASES[case.operation.label] += 1
    label = f"{case.method.upper()} {BRIDGE_PATH} {query} {body[:200]!r}"
    assert response.status_code < 500, f"{label}: {response.status_code} {response.text[:500]}"
    if response.status_code >= 400:
        payload = response.json()
        assert isinstance(payload, dict), f"{label}: {payload!r}"
        assert isinstance(payload.get("message"), str), f"{label}: {payload!r}"
        assert isinstance(payload.get("code"), str), f"{label}: {payload!r}"


def test_fuzzing_ran_enough_cases(request: pytest.FixtureRequest) -> None:
    """Runs after the two fuzz tests (file order): prints and checks how many cases they sent."""
    total = sum(CASES.values())
    if total == 0:
        pytest.skip("the fuzz tests did not run in this session")
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    lines = [f"schemathesis: {total} cases over {len(CASES)} operations"]
    lines += [f"  {count:5d}  {label}" for label, count in sorted(CASES.items())]
    if reporter is not None:
        reporter.write_line("")
        for line in lines:
            reporter.write_line(line)
    print("\n".join(lines))
    assert total >= MIN_CASES, f"only {total} fuzz cases ran; CI needs {MIN_CASES}"
