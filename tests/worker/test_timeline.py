"""The timeline end to end (issue 13's acceptance): a trigger that needed two attempts shows
both with Novu's answers and the final `sent`; a cancelled one shows the cancel; another
enterprise gets 404. API → PostgreSQL → Redis → celery worker → Novu emulator."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import pytest

from tests.conftest import make_tenant, wait_for_status
from tests.factories import api_error
from tests.factories import trigger_signup as _trigger

pytestmark = pytest.mark.integration


def _events(client, tenant, notification_id: int, **params: Any) -> dict[str, Any]:
    response = client.get(
        f"/api/notifications/{notification_id}/events", params=params, headers=tenant.headers
    )
    assert response.status_code == 200, response.text
    return response.json()


def _kinds(client, tenant, notification_id: int) -> list[str]:
    return [e["kind"] for e in _events(client, tenant, notification_id)["items"]]


def _wait_for_kind(client, tenant, notification_id: int, kind: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if kind in _kinds(client, tenant, notification_id):
            return
        time.sleep(0.1)
    raise AssertionError(f"no {kind}: {_kinds(client, tenant, notification_id)}")


def test_a_trigger_that_needed_two_attempts_shows_both_answers_and_sent(
    client, tenant, worker, emulator
):
    # Retry-After: 2 keeps the attempts apart, so the fault is gone before the second.
    emulator.post(
        "/_emulator/faults",
        json={"status": 503, "rate": 1.0, "retryAfter": 2, "message": "Novu is down for a bit"},
    )
    try:
        accepted = _trigger(client, tenant)
        notification_id = accepted["notificationId"]
        _wait_for_kind(client, tenant, notification_id, "attempt.failed")
    finally:
        emulator.delete("/_emulator/faults")
    row = wait_for_status(client, tenant, notification_id, {"SENT", "FAILED"})
    assert row["notification_status"] == "SENT", row

    # Novu's delivery events (delivery.message.sent, from the emulator's webhooks when the
    # bridge runs the steps) arrive on their own time: this is XNovu's side of it.
    everything = _events(client, tenant, notification_id)["items"]
    items = [e for e in everything if not e["kind"].startswith("delivery.")]
    assert [(e["kind"], e["attempt"]) for e in items] == [
        ("accepted", None),
        ("attempt.started", 1),
        ("attempt.failed", 1),
        ("attempt.started", 2),
        ("sent", 2),
    ]
    assert [e["id"] for e in items] == sorted(e["id"] for e in items)
    created = [dt.datetime.fromisoformat(e["created_at"]) for e in items]
    assert created == sorted(created)

    started = items[1]["detail"]["worker"]
    assert started["host"] and started["pid"] > 0

    first = items[2]["detail"]
    assert first["statusCode"] == 503
    assert first["code"] == "novu_unavailable"
    assert "Novu is down for a bit" in first["answer"]  # Novu's answer, as it came
    assert len(first["answer"]) <= 1024
    assert first["durationMs"] >= 0
    assert first["retryInSeconds"] >= 2  # Novu's Retry-After
    assert first["outcomeUnknown"] is True  # a 5xx: Novu may have run it

    sent = items[4]["detail"]
    assert sent["statusCode"] == 201
    assert '"status":"processed"' in sent["answer"]
    assert accepted["transactionId"] in sent["answer"]
    assert sent["durationMs"] >= 0


def test_a_cancelled_notification_shows_the_request_and_the_retraction(client, tenant):
    later = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat()
    accepted = _trigger(client, tenant, scheduledFor=later)
    notification_id = accepted["notificationId"]
    response = client.post(
        f"/api/notifications/{notification_id}/cancel",
        json={"reason": "sent by mistake"},
        headers=tenant.headers,
    )
    assert response.status_code == 200, response.text
    items = _events(client, tenant, notification_id)["items"]
    assert [e["kind"] for e in items] == ["accepted", "cancel.requested", "retracted"]
    assert dt.datetime.fromisoformat(items[0]["detail"]["scheduledFor"]) == (
        dt.datetime.fromisoformat(later)
    )
    assert items[1]["detail"] == {"reason": "sent by mistake"}
    assert items[2]["detail"] == {"reason": "sent by mistake"}

    # A second cancel of a RETRACTED row changes nothing and records nothing.
    again = client.post(f"/api/notifications/{notification_id}/cancel", headers=tenant.headers)
    assert again.status_code == 200
    assert _kinds(client, tenant, notification_id) == [e["kind"] for e in items]


def test_another_enterprise_gets_404_and_bad_input_a_json_4xx(client, tenant):
    notification_id = _trigger(
        client, tenant, scheduledFor=(dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat()
    )["notificationId"]
    other = make_tenant()
    response = client.get(f"/api/notifications/{notification_id}/events", headers=other.headers)
    api_error(response, 404, "not_found")
    unknown = client.get("/api/notifications/999999999/events", headers=tenant.headers)
    api_error(unknown, 404, "not_found")
    for path, params, status in [
        (f"/api/notifications/{notification_id}/events", {"cursor": "bm90LWEtY3Vyc29y"}, 400),
        (f"/api/notifications/{notification_id}/events", {"limit": 0}, 422),
        (f"/api/notifications/{notification_id}/events", {"limit": 1001}, 422),
        (f"/api/notifications/{2**63}/events", {}, 422),
        ("/api/notifications/abc/events", {}, 422),
    ]:
        bad = client.get(path, params=params, headers=tenant.headers)
        assert bad.status_code == status, (path, params, bad.text)
        assert "error" in bad.json()
    anonymous = client.get(f"/api/notifications/{notification_id}/events")
    assert anonymous.status_code == 401


def test_events_come_in_keyset_pages_oldest_first(client, tenant):
    later = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat()
    notification_id = _trigger(client, tenant, scheduledFor=later)["notificationId"]
    client.post(f"/api/notifications/{notification_id}/cancel", headers=tenant.headers)
    first = _events(client, tenant, notification_id, limit=2)
    assert [e["kind"] for e in first["items"]] == ["accepted", "cancel.requested"]
    assert first["nextCursor"]
    rest = _events(client, tenant, notification_id, limit=2, cursor=first["nextCursor"])
    assert [e["kind"] for e in rest["items"]] == ["retracted"]
    assert rest["nextCursor"] is None


def test_novus_429_is_an_attempt_deferred_that_does_not_count(client, tenant, worker, emulator):
    emulator.post("/_emulator/faults", json={"status": 429, "rate": 1.0, "retryAfter": 1})
    try:
        notification_id = _trigger(client, tenant)["notificationId"]
        _wait_for_kind(client, tenant, notification_id, "attempt.deferred")
    finally:
        emulator.delete("/_emulator/faults")
    row = wait_for_status(client, tenant, notification_id, {"SENT", "FAILED"}, timeout=30)
    assert row["notification_status"] == "SENT", row
    items = _events(client, tenant, notification_id)["items"]
    deferred = [e for e in items if e["kind"] == "attempt.deferred"]
    # Given back after the claim (Novu's 429), or waiting before it for the tokens the 429
    # emptied: either way attempt 1, which is still the one that is sent.
    assert all(e["attempt"] == 1 for e in deferred)
    throttled = [e["detail"] for e in deferred if e["detail"].get("statusCode") == 429]
    assert throttled and throttled[0]["code"] == "novu_rate_limited"
    assert throttled[0]["delaySeconds"] >= 1
    assert [e["attempt"] for e in items if e["kind"] == "sent"] == [1]
