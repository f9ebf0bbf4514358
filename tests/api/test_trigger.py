"""POST /api/trigger: acceptance, validation and isolation."""

from __future__ import annotations

import datetime as dt
import time
import uuid

from tests.conftest import make_tenant, signup_payload


def test_trigger_answers_202_and_records_a_pending_row(client, tenant):
    response = client.post(
        "/api/trigger",
        json={"workflowId": "user-signup", "payload": signup_payload(), "scheduledFor": _later()},
        headers=tenant.headers,
    )
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["workflowId"] == "user-signup"
    assert body["enterpriseId"] == str(tenant.enterprise_id)
    assert body["status"] == "PENDING"
    assert body["transactionId"].startswith("xn-")
    row = client.get(f"/api/notifications/{body['notificationId']}", headers=tenant.headers).json()
    assert row["notification_status"] == "PENDING"
    assert row["transaction_id"] == body["transactionId"]
    assert row["recipients"] == [row["payload"]["userId"]]


def test_unknown_workflow_is_404(client, tenant):
    response = client.post(
        "/api/trigger", json={"workflowId": "no-such-flow", "payload": {}}, headers=tenant.headers
    )
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "workflow_not_found"


def test_malformed_json_is_400(client, tenant):
    response = client.post(
        "/api/trigger",
        content=b'{"workflowId": "user-signup", ',
        headers={**tenant.headers, "Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "malformed_json"


def test_missing_and_invalid_keys_are_401(client):
    body = {"workflowId": "user-signup", "payload": signup_payload()}
    missing = client.post("/api/trigger", json=body)
    invalid = client.post("/api/trigger", json=body, headers={"Authorization": "Bearer nope"})
    wrong_scheme = client.post("/api/trigger", json=body, headers={"Authorization": "Basic abc"})
    for response in (missing, invalid, wrong_scheme):
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "unauthorized"


def test_enterprise_not_matching_the_key_is_403(client, tenant):
    response = client.post(
        "/api/trigger",
        json={
            "workflowId": "user-signup",
            "payload": signup_payload(),
            "enterpriseId": str(uuid.uuid4()),
        },
        headers=tenant.headers,
    )
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "forbidden"


def test_service_key_acts_for_the_enterprise_it_names(client, stack):
    service = make_tenant(service=True)
    enterprise = uuid.uuid4()
    body = {"workflowId": "user-signup", "payload": signup_payload(), "scheduledFor": _later()}
    unnamed = client.post("/api/trigger", json=body, headers=service.headers)
    assert unnamed.status_code == 400
    named = client.post(
        "/api/trigger", json={**body, "enterpriseId": str(enterprise)}, headers=service.headers
    )
    assert named.status_code == 202
    assert named.json()["enterpriseId"] == str(enterprise)


def test_payload_over_the_limit_is_413(client, tenant):
    payload = {**signup_payload(), "blob": "x" * 70_000}
    response = client.post(
        "/api/trigger",
        json={"workflowId": "user-signup", "payload": payload},
        headers=tenant.headers,
    )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"


def test_body_over_the_limit_is_413_before_parsing(client, tenant):
    response = client.post(
        "/api/trigger",
        content=b'{"workflowId": "user-signup", "payload": {"x": "' + b"y" * 300_000 + b'"}}',
        headers={**tenant.headers, "Content-Type": "application/json"},
    )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"


def test_payload_failing_the_schema_is_422_naming_each_field(client, tenant):
    response = client.post(
        "/api/trigger",
        json={"workflowId": "user-signup", "payload": {"email": "not-an-email", "name": 7}},
        headers=tenant.headers,
    )
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "invalid_payload"
    fields = {d["field"] for d in error["details"]}
    assert {"userId", "email", "name"} <= fields


def test_unknown_body_field_is_422(client, tenant):
    response = client.post(
        "/api/trigger",
        json={"workflowId": "user-signup", "payload": signup_payload(), "bogus": 1},
        headers=tenant.headers,
    )
    assert response.status_code == 422
    assert response.json()["error"]["details"][0]["field"] == "bogus"


def test_idempotency_key_replays_the_first_answer_and_creates_nothing(client, tenant):
    body = {"workflowId": "user-signup", "payload": signup_payload(), "scheduledFor": _later()}
    headers = {**tenant.headers, "Idempotency-Key": "order-42"}
    first = client.post("/api/trigger", json=body, headers=headers)
    second = client.post("/api/trigger", json=body, headers=headers)
    assert first.status_code == second.status_code == 202
    assert first.json() == second.json()
    assert second.headers.get("Idempotency-Replay") == "true"
    listed = client.get("/api/notifications", headers=tenant.headers).json()["items"]
    assert len(listed) == 1


def test_idempotency_key_with_a_different_body_is_422(client, tenant):
    headers = {**tenant.headers, "Idempotency-Key": "order-43"}
    first = client.post(
        "/api/trigger",
        json={"workflowId": "user-signup", "payload": signup_payload(), "scheduledFor": _later()},
        headers=headers,
    )
    assert first.status_code == 202
    second = client.post(
        "/api/trigger",
        json={"workflowId": "user-signup", "payload": signup_payload(), "scheduledFor": _later()},
        headers=headers,
    )
    assert second.status_code == 422
    assert second.json()["error"]["code"] == "idempotency_key_reused"


def test_same_idempotency_key_in_two_enterprises_is_two_notifications(client, tenant):
    other = make_tenant()
    body = {"workflowId": "user-signup", "payload": signup_payload(), "scheduledFor": _later()}
    a = client.post("/api/trigger", json=body, headers={**tenant.headers, "Idempotency-Key": "k"})
    b = client.post("/api/trigger", json=body, headers={**other.headers, "Idempotency-Key": "k"})
    assert a.status_code == b.status_code == 202
    assert a.json()["notificationId"] != b.json()["notificationId"]


def _later(seconds: int = 3600) -> str:
    return (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds)).isoformat()


def test_a_revoked_key_stops_working_within_the_key_cache_ttl(client, tenant, monkeypatch):
    from shared.apikeys import PrincipalCache, revoke_api_key
    from shared.db.session import transaction

    monkeypatch.setattr("api.deps.principal_cache", lambda: cache)
    cache = PrincipalCache(ttl_seconds=0.5)
    assert client.get("/api/stats", headers=tenant.headers).status_code == 200  # now cached
    with transaction() as session:
        revoke_api_key(session, key_id=tenant.key_id)
    # Trusted from the cache for at most the TTL, then looked up again and refused.
    assert client.get("/api/stats", headers=tenant.headers).status_code == 200
    time.sleep(0.6)
    assert client.get("/api/stats", headers=tenant.headers).status_code == 401


def test_with_no_key_cache_a_revoked_key_is_refused_at_once(client, monkeypatch):
    from shared.apikeys import PrincipalCache, revoke_api_key
    from shared.db.session import transaction

    monkeypatch.setattr("api.deps.principal_cache", lambda: PrincipalCache(ttl_seconds=0))
    owner = make_tenant()
    assert client.get("/api/stats", headers=owner.headers).status_code == 200
    with transaction() as session:
        revoke_api_key(session, key_id=owner.key_id)
    assert client.get("/api/stats", headers=owner.headers).status_code == 401
