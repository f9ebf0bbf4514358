"""POST /api/trigger: acceptance, validation and isolation."""

from __future__ import annotations

import datetime as dt
import time
import uuid
from typing import Any

from shared.db.models import Notification
from shared.db.session import transaction
from shared.notifications import intake
from shared.notifications.novu_trigger import LOCALE_RESERVE_BYTES, build_trigger_event
from shared.notifications.repository import ClaimedRow
from shared.novu.schemas import canonical_json
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


# -- recipients: subscriberIds, subscriber objects and topics, as Novu takes them in `to` ------

GRACE = {
    "subscriberId": "grace-1906",
    "email": "grace@example.com",
    "firstName": "Grace",
    "lastName": "Hopper",
    "phone": "+15555550100",
    "locale": "en-US",
    "timezone": "America/New_York",
    "avatar": "https://example.com/grace.png",
    "data": {"plan": "pro", "seats": 3},
}
TOPIC = {"type": "Topic", "topicKey": "building-7"}


def _signup(client: Any, tenant: Any, headers: dict[str, str] | None = None, **fields: Any) -> Any:
    """POST /api/trigger of a user-signup with these fields (its payload unless given)."""
    body = {"workflowId": "user-signup", "payload": signup_payload(), **fields}
    return client.post("/api/trigger", json=body, headers={**tenant.headers, **(headers or {})})


def _stored(notification_id: int) -> tuple[list[str], Any]:
    with transaction() as session:
        row = session.get(Notification, notification_id)
        assert row is not None
        return list(row.recipients), row.recipient_objects


def test_recipients_may_be_subscriber_objects_and_topics_and_read_back_as_given(client, tenant):
    given = ["ada-1815", GRACE, TOPIC, {"subscriberId": "alan", "phone": None}]
    response = _signup(client, tenant, recipients=given, scheduledFor=_later())
    assert response.status_code == 202, response.text
    notification_id = response.json()["notificationId"]
    keys, objects = _stored(notification_id)
    assert keys == ["ada-1815", "grace-1906", "building-7", "alan"]
    assert objects == given
    one = client.get(f"/api/notifications/{notification_id}", headers=tenant.headers).json()
    assert one["recipients"] == given
    [listed] = client.get("/api/notifications", headers=tenant.headers).json()["items"]
    assert listed["recipients"] == given


def test_bare_subscriber_ids_keep_no_recipient_objects(client, tenant):
    response = _signup(client, tenant, recipients=["a-1", "b.2@example.com"], scheduledFor=_later())
    assert response.status_code == 202, response.text
    assert _stored(response.json()["notificationId"]) == (["a-1", "b.2@example.com"], None)


def _refused_fields(client: Any, tenant: Any, **body: Any) -> dict[str, str]:
    response = _signup(client, tenant, **body)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    return {detail["field"]: detail["message"] for detail in error["details"]}


def test_each_recipient_novu_would_refuse_is_named(client, tenant):
    fields = _refused_fields(
        client,
        tenant,
        recipients=[
            "fine",
            {"subscriberId": "x", "email": "not-an-email"},
            {"subscriberId": "x", "channels": []},
            "has space",
            {"type": "Topic"},
            {"subscriberId": "x", "timezone": "Mars/Olympus_Mons", "locale": "english"},
            7,
            {"type": "Subscriber", "topicKey": "t"},
        ],
    )
    assert fields.keys() == {
        "recipients.1.email",
        "recipients.2.channels",
        "recipients.3",
        "recipients.4.topicKey",
        "recipients.5.timezone",
        "recipients.5.locale",
        "recipients.6",
        "recipients.7.type",
    }
    assert fields["recipients.1.email"] == "not a valid email address"
    assert "letters, digits" in fields["recipients.3"]


def test_a_subscriber_id_novu_would_drop_is_422(client, tenant):
    for bad in (" padded", "tab\tinside", "ünïcode", "x" * 256):
        fields = _refused_fields(client, tenant, subscriberId=bad)
        assert list(fields) == ["subscriberId"], bad
    assert _refused_fields(client, tenant, recipients=[{"type": "Topic", "topicKey": "a b"}]) == {
        "recipients.0.topicKey": "must be letters, digits and _ : . - only, or an email address"
        " (Novu's subscriberId rule)"
    }


def test_subscriber_data_is_bounded_in_size_and_depth(client, tenant):
    big = {"subscriberId": "x", "data": {"notes": "n" * 5000}}
    deep = {"subscriberId": "x", "data": {"a": {"b": {"c": {"d": {"e": {"f": 1}}}}}}}
    fields = _refused_fields(client, tenant, recipients=[big, deep])
    assert fields.keys() == {"recipients.0.data", "recipients.1.data"}
    assert "over 4096" in fields["recipients.0.data"]
    assert "deeper than 5" in fields["recipients.1.data"]


def test_a_subscriber_derived_from_the_payload_novu_would_refuse_is_422(client, tenant):
    response = _signup(client, tenant, payload={**signup_payload(), "userId": "no spaces please"})
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_recipient"
    assert [detail["field"] for detail in error["details"]] == ["subscriber.subscriberId"]


def test_the_same_key_with_another_recipient_object_is_another_body(client, tenant):
    body = {"payload": signup_payload(), "recipients": [GRACE], "scheduledFor": _later()}
    key = {"Idempotency-Key": "recipient-object"}
    first = _signup(client, tenant, key, **body)
    again = _signup(client, tenant, key, **body)
    other = _signup(
        client, tenant, key, **{**body, "recipients": [{**GRACE, "email": "hopper@example.com"}]}
    )
    assert first.status_code == again.status_code == 202
    assert again.headers.get("Idempotency-Replay") == "true"
    assert other.status_code == 422
    assert other.json()["error"]["code"] == "idempotency_key_reused"


def test_tenant_data_postgresql_cannot_store_is_422(client, tenant):
    response = _signup(client, tenant, recipients=[{"subscriberId": "x", "data": {"n": "\u0000"}}])
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_value"


# -- nothing accepted that Novu would refuse for its size ---------------------------------------


def test_a_trigger_whose_novu_event_would_be_over_novus_limit_is_413(client, tenant, monkeypatch):
    # The test stack's body limit (256 KB) is below Novu's 512 KB: the rule is tested against a
    # lower limit, with the same arithmetic.
    monkeypatch.setattr(intake, "NOVU_EVENT_MAX_BYTES", 60_000)
    payload = {**signup_payload(), "blob": "p" * 30_000}
    fits = {"payload": payload, "scheduledFor": _later(), "overrides": {"e": {"n": "o" * 25_000}}}
    assert _signup(client, tenant, **fits).status_code == 202
    response = _signup(client, tenant, **{**fits, "overrides": {"e": {"n": "o" * 30_000}}})
    assert response.status_code == 413, response.text
    error = response.json()["error"]
    assert error["code"] == "event_too_large"
    assert "over Novu's limit of 60000" in error["message"]


def test_intake_sizes_the_novu_event_as_the_worker_builds_it(client, tenant, monkeypatch):
    """Intake's estimate of the event without rendered content is never below the event the
    worker builds, and above it by no more than the metadata's widest values."""
    body = {
        "payload": {**signup_payload(), "note": "é" * 2_000},
        "recipients": [GRACE, "ada-1815", TOPIC],
        "overrides": {"email": {"replyTo": "desk@example.com"}},
        "scheduledFor": _later(),
    }
    response = _signup(client, tenant, **body)
    assert response.status_code == 202, response.text
    event = _event_of(response.json()["notificationId"])
    ours = f"{tenant.enterprise_id}_"
    assert event["to"] == [
        {**GRACE, "subscriberId": ours + GRACE["subscriberId"]},
        ours + "ada-1815",
        {**TOPIC, "topicKey": ours + TOPIC["topicKey"]},
    ]
    _refused_just_over_its_size(client, tenant, monkeypatch, body, event)


def test_intake_sizes_bare_ids_with_the_enterprise_namespace_they_reach_novu_in(
    client, tenant, monkeypatch
):
    """Bare ids are stored as given and namespaced only in the event (37 bytes each): intake
    counts those bytes, so a trigger whose event would be over Novu's limit once namespaced is
    refused at once instead of failing in the worker."""
    body = {
        "payload": signup_payload(),
        "recipients": [f"resident-{n:03}-{'x' * 200}" for n in range(100)],
        "scheduledFor": _later(),
    }
    response = _signup(client, tenant, **body)
    assert response.status_code == 202, response.text
    event = _event_of(response.json()["notificationId"])
    assert event["to"] == [f"{tenant.enterprise_id}_{r}" for r in body["recipients"]]
    _refused_just_over_its_size(client, tenant, monkeypatch, body, event)


def test_with_namespacing_off_ids_reach_novu_as_given(client, tenant, monkeypatch):
    """NOVU_NAMESPACE_SUBSCRIBERS=false, for moving a deployment over: bare ids, as before."""
    from shared.settings import get_settings

    monkeypatch.setattr(get_settings(), "novu_namespace_subscribers", False)
    topic = {**TOPIC, "exclude": ["grace-1906"]}
    response = _signup(client, tenant, recipients=[GRACE, "ada-1815", topic], scheduledFor=_later())
    assert response.status_code == 202, response.text
    assert _event_of(response.json()["notificationId"])["to"] == [GRACE, "ada-1815", topic]


def _refused_just_over_its_size(
    client: Any, tenant: Any, monkeypatch: Any, body: dict[str, Any], event: dict[str, Any]
) -> None:
    """The same trigger again is 413 with Novu's limit a byte below the event the worker built
    for it (without rendered content), and accepted a little above."""
    del event["payload"]["_xnovu"]["rendered"]
    real = len(canonical_json(event))
    monkeypatch.setattr(intake, "NOVU_EVENT_MAX_BYTES", real - 1)
    assert _signup(client, tenant, **body).status_code == 413
    # Intake keeps room for `_xnovu.locale`, which this event has no use for.
    monkeypatch.setattr(intake, "NOVU_EVENT_MAX_BYTES", real + 100 + LOCALE_RESERVE_BYTES)
    assert _signup(client, tenant, **body).status_code == 202


def _event_of(notification_id: int) -> dict[str, Any]:
    """The Novu event the worker would send for the recorded notification."""
    with transaction() as session:
        row = session.get(Notification, notification_id)
        assert row is not None
        claimed = ClaimedRow(
            row.id,
            row.enterprise_id,
            row.workflow_key,
            row.payload,
            row.recipients,
            row.overrides,
            row.transaction_id,
            1,
            row.recipient_objects,
        )
    return build_trigger_event(claimed).event.to_body()
