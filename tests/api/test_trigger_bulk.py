"""POST /api/trigger/bulk: per-event results, limits, idempotency, isolation, one INSERT."""

from __future__ import annotations

import datetime as dt
import json
import re
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from sqlalchemy import select

from shared.db.enums import NotificationStatus
from shared.db.models import Notification
from shared.db.session import transaction
from shared.notifications import intake
from shared.notifications.recorder import PREPARED_INSERT
from tests.conftest import make_tenant, signup_payload


def _later(seconds: int = 3600) -> str:
    return (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds)).isoformat()


def _event(**extra: Any) -> dict[str, Any]:
    # Scheduled an hour ahead: nothing is published, the rows stay PENDING for inspection.
    base = {"workflowId": "user-signup", "payload": signup_payload(), "scheduledFor": _later()}
    return base | extra


def _bulk(client: Any, headers: dict[str, str], events: list[Any]) -> Any:
    return client.post("/api/trigger/bulk", json={"events": events}, headers=headers)


def _rows(ids: list[int]) -> dict[int, Notification]:
    with transaction() as session:
        rows = session.scalars(select(Notification).where(Notification.id.in_(ids))).all()
        return {row.id: row for row in rows}


NOTIFICATION_INSERT = re.compile(
    r"\s*(?:WITH\s+\w+\s+AS\s*\(\s*)?INSERT INTO notify\.ent_notification\s", re.IGNORECASE
)
# The recorder's keyless batches run its prepared INSERT, one EXECUTE per statement.
PREPARED_NOTIFICATION_INSERT = re.compile(rf"\bEXECUTE {PREPARED_INSERT}\b")


@pytest.fixture()
def inserts(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The INSERT statements on ent_notification psycopg cursors of this process send while the
    test runs (the trigger recorder records on a connection of its own, outside the engine,
    a batch without idempotency keys as EXECUTEs of its prepared INSERT)."""
    seen: list[str] = []
    real_execute = psycopg.Cursor.execute

    def execute(self: psycopg.Cursor[Any], query: Any, *args: Any, **kwargs: Any) -> Any:
        # The insert, bare or as the first step of a WITH (its timeline events follow).
        if isinstance(query, str):
            if NOTIFICATION_INSERT.match(query):
                seen.append(query)
            seen.extend(PREPARED_NOTIFICATION_INSERT.findall(query))
        return real_execute(self, query, *args, **kwargs)

    monkeypatch.setattr(psycopg.Cursor, "execute", execute)
    yield seen


def test_mixed_events_get_their_own_results_and_valid_ones_are_recorded(client, tenant):
    events = [
        _event(),
        _event(workflowId="no-such-flow"),
        _event(payload={"email": "not-an-email"}),
        _event(bogus=1),
        _event(enterpriseId=str(uuid.uuid4())),
        _event(recipients=[f"r{i}" for i in range(101)]),
        _event(payload={**signup_payload(), "blob": "x" * 70_000}),
        _event(subscriberId="sub-7", tags=["t1"], overrides={"email": {"from": "a@b.c"}}),
    ]
    response = _bulk(client, tenant.headers, events)
    assert response.status_code == 202, response.text
    body = response.json()
    assert (body["accepted"], body["rejected"]) == (2, 6)
    results = body["results"]
    assert [r["index"] for r in results] == list(range(len(events)))
    expected = [
        (202, None),
        (404, "workflow_not_found"),
        (422, "invalid_payload"),
        (422, "validation_error"),
        (403, "forbidden"),
        (422, "too_many_recipients"),
        (413, "payload_too_large"),
        (202, None),
    ]
    got = [(r["statusCode"], r["error"]["code"] if r["error"] else None) for r in results]
    assert got == expected
    assert {d["field"] for d in results[2]["error"]["details"]} >= {"userId", "name"}
    assert results[3]["error"]["details"][0]["field"] == "bogus"

    accepted = [results[0], results[7]]
    rows = _rows([r["notificationId"] for r in accepted])
    assert len(rows) == 2
    for result in accepted:
        assert result["result"] == "accepted"
        assert result["status"] == "PENDING"
        assert result["enterpriseId"] == str(tenant.enterprise_id)
        row = rows[result["notificationId"]]
        assert row.enterprise_id == tenant.enterprise_id
        assert row.notification_status is NotificationStatus.PENDING
        assert row.transaction_id == result["transactionId"]
        assert row.enqueued_at is None  # scheduled: beat publishes it when due
    assert rows[results[0]["notificationId"]].recipients == [events[0]["payload"]["userId"]]
    last = rows[results[7]["notificationId"]]
    assert (last.recipients, last.tags, last.overrides) == (
        ["sub-7"],
        ["t1"],
        {"email": {"from": "a@b.c"}},
    )


def test_a_thousand_events_are_one_insert_and_a_thousand_and_one_are_422(client, tenant, inserts):
    events = [_event() for _ in range(1000)]
    response = _bulk(client, tenant.headers, events)
    assert response.status_code == 202, response.text
    assert response.json()["accepted"] == 1000
    assert len(inserts) == 1
    ids = [r["notificationId"] for r in response.json()["results"]]
    assert len(set(ids)) == 1000
    assert ids == sorted(ids)  # recorded in the order sent

    too_many = _bulk(client, tenant.headers, [_event() for _ in range(1001)])
    assert too_many.status_code == 422
    assert too_many.json()["error"]["details"][0]["field"] == "events"


def test_empty_and_malformed_envelopes_are_rejected_whole(client, tenant):
    assert _bulk(client, tenant.headers, []).status_code == 422
    assert _bulk(client, tenant.headers, [_event(), 7]).status_code == 422
    missing = client.post("/api/trigger/bulk", json={}, headers=tenant.headers)
    assert missing.status_code == 422
    assert client.post("/api/trigger/bulk", json={"events": [_event()]}).status_code == 401


def test_idempotency_keys_replay_per_event_and_a_reused_key_is_422(client, tenant):
    first_events = [_event(idempotencyKey="a"), _event(idempotencyKey="b"), _event()]
    first = _bulk(client, tenant.headers, first_events).json()["results"]
    assert [r["replayed"] for r in first] == [False, False, False]

    again = [
        first_events[0],  # same key, same body: the first notification
        {**first_events[1], "payload": signup_payload()},  # same key, another body
        _event(idempotencyKey="c"),
        first_events[2],  # no key: a new notification
    ]
    second = _bulk(client, tenant.headers, again).json()["results"]
    assert second[0]["result"] == "accepted" and second[0]["replayed"] is True
    assert second[0]["notificationId"] == first[0]["notificationId"]
    assert second[0]["transactionId"] == first[0]["transactionId"]
    assert second[1]["statusCode"] == 422
    assert second[1]["error"]["code"] == "idempotency_key_reused"
    assert second[1]["error"]["details"] == {"notificationId": first[1]["notificationId"]}
    assert second[2]["replayed"] is False
    assert second[3]["notificationId"] != first[2]["notificationId"]


def test_a_key_repeated_inside_one_request_is_one_notification(client, tenant):
    same = _event(idempotencyKey="twice")
    results = _bulk(
        client, tenant.headers, [same, same, {**same, "payload": signup_payload()}]
    ).json()["results"]
    assert results[0]["replayed"] is False
    assert results[1]["replayed"] is True
    assert results[1]["notificationId"] == results[0]["notificationId"]
    assert results[2]["error"]["code"] == "idempotency_key_reused"


def test_a_key_used_by_a_single_trigger_replays_in_bulk(client, tenant):
    body = _event()
    single = client.post(
        "/api/trigger", json=body, headers={**tenant.headers, "Idempotency-Key": "shared-key"}
    )
    assert single.status_code == 202
    bulk = _bulk(client, tenant.headers, [{**body, "idempotencyKey": "shared-key"}]).json()
    assert bulk["results"][0]["replayed"] is True
    assert bulk["results"][0]["notificationId"] == single.json()["notificationId"]


def test_same_key_in_two_enterprises_is_two_notifications(client, tenant):
    other = make_tenant()
    event_ = _event(idempotencyKey="k")
    a = _bulk(client, tenant.headers, [event_]).json()["results"][0]
    b = _bulk(client, other.headers, [event_]).json()["results"][0]
    assert a["replayed"] is b["replayed"] is False
    assert a["notificationId"] != b["notificationId"]


def test_a_service_key_records_each_event_in_the_enterprise_it_names(client, stack):
    service = make_tenant(service=True)
    first, second, header_default = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    events = [
        _event(enterpriseId=str(first)),
        _event(enterpriseId=str(second)),
        _event(),
        _event(enterpriseId=str(first)),
    ]
    unnamed = _bulk(client, service.headers, events).json()["results"]
    assert [r["statusCode"] for r in unnamed] == [202, 202, 400, 202]
    assert unnamed[2]["error"]["code"] == "enterprise_required"

    headers = {**service.headers, "X-Enterprise-Id": str(header_default)}
    results = _bulk(client, headers, events).json()["results"]
    assert [r["enterpriseId"] for r in results] == [
        str(first),
        str(second),
        str(header_default),
        str(first),
    ]
    rows = _rows([r["notificationId"] for r in results])
    for result in results:
        assert str(rows[result["notificationId"]].enterprise_id) == result["enterpriseId"]


def test_another_enterprises_notification_id_is_404_for_that_event(client, tenant):
    other = make_tenant()
    theirs = _bulk(client, other.headers, [_event()]).json()["results"][0]
    mine = _bulk(client, tenant.headers, [_event()]).json()["results"][0]
    results = _bulk(
        client,
        tenant.headers,
        [
            {"workflowId": "user-signup", "payload": signup_payload(), "notificationId": nid}
            for nid in (theirs["notificationId"], mine["notificationId"])
        ],
    ).json()["results"]
    assert results[0]["statusCode"] == 404
    assert results[1]["statusCode"] == 202
    assert results[1]["transactionId"] == mine["transactionId"]
    assert _rows([theirs["notificationId"]])[theirs["notificationId"]].enterprise_id == (
        other.enterprise_id
    )


def test_values_postgresql_cannot_store_are_rejected_for_that_event_only(client, tenant):
    events = [
        _event(payload={**signup_payload(), "note": "nul \u0000 here"}),
        _event(),
        _event(payload={**signup_payload(), "note": "a literal \\u0000 is fine"}),
    ]
    nan = _event(payload={**signup_payload(), "score": "nan-here"})
    body = json.dumps({"events": [*events, nan]}).replace('"nan-here"', "NaN")
    response = client.post(
        "/api/trigger/bulk",
        content=body,
        headers={**tenant.headers, "Content-Type": "application/json"},
    )
    results = response.json()["results"]
    assert [r["statusCode"] for r in results] == [422, 202, 202, 422]
    assert results[0]["error"]["code"] == results[3]["error"]["code"] == "invalid_value"


def test_when_the_broker_is_down_events_are_still_accepted_and_left_for_beat(
    client, tenant, monkeypatch
):
    from shared.queue import RedisTaskWriter, producer

    sent: list[list[Any]] = []

    class Unreachable(RedisTaskWriter):
        def send(self, messages: Any, **options: Any) -> Any:
            sent.append([args for _, args in messages])
            return super().send(messages, **options)

    # Nothing listens on port 1: every publish is refused.
    monkeypatch.setattr(
        "shared.queue.task_writer", lambda: Unreachable(producer(), "redis://127.0.0.1:1/0")
    )
    events = [_event(scheduledFor=None), _event(scheduledFor=None), _event()]
    response = _bulk(client, tenant.headers, events)
    answered_at = dt.datetime.now(dt.UTC)
    results = response.json()["results"]
    assert [r["statusCode"] for r in results] == [202, 202, 202]
    due_ids = [results[0]["notificationId"], results[1]["notificationId"]]

    # The recorder answers first and publishes right after. The publish failed, so the rows are
    # left for beat: enqueued_at cleared, or set again after the answer when a beat is running
    # (worker tests came first) and published them.
    def left_for_beat() -> bool:
        return bool(sent) and all(
            row.enqueued_at is None or row.enqueued_at > answered_at
            for row in _rows(due_ids).values()
        )

    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not left_for_beat():
        time.sleep(0.05)
    # One message for the due ones; the scheduled one waits.
    assert sent == [[[str(tenant.enterprise_id), due_ids]]]
    assert left_for_beat()
    for notification_id in due_ids:  # leave nothing for a later test's worker to send
        client.post(f"/api/notifications/{notification_id}/cancel", headers=tenant.headers)


def test_recipient_objects_are_checked_and_recorded_per_event(client, tenant, monkeypatch):
    grace = {"subscriberId": "grace-1906", "email": "grace@example.com", "data": {"plan": "pro"}}
    topic = {"type": "Topic", "topicKey": "floor-3"}
    monkeypatch.setattr(intake, "NOVU_EVENT_MAX_BYTES", 40_000)
    events = [
        _event(recipients=[grace, "ada", topic]),
        _event(recipients=["ada", {"subscriberId": "x", "email": "nope"}]),
        _event(payload={**signup_payload(), "blob": "b" * 45_000}),
        _event(recipients=["plain"]),
    ]
    response = _bulk(client, tenant.headers, events)
    assert response.status_code == 202, response.text
    results = response.json()["results"]
    assert [r["statusCode"] for r in results] == [202, 422, 413, 202]
    assert results[1]["error"]["details"] == [
        {"field": "recipients.1.email", "message": "not a valid email address"}
    ]
    assert results[2]["error"]["code"] == "event_too_large"
    rows = _rows([results[0]["notificationId"], results[3]["notificationId"]])
    first, last = rows[results[0]["notificationId"]], rows[results[3]["notificationId"]]
    assert (first.recipients, first.recipient_objects) == (
        ["grace-1906", "ada", "floor-3"],
        [grace, "ada", topic],
    )
    assert (last.recipients, last.recipient_objects) == (["plain"], None)
