"""Novu's delivery events end to end: trigger → worker → Novu (the emulator) runs the steps on
our bridge → it sends its signed message webhooks to our API process → recorded on the
notification, per channel, with timeline events."""

from __future__ import annotations

import time
from typing import Any

import pytest

from shared.db.session import transaction
from shared.notifications.timeline import list_events
from tests.conftest import Tenant, signup_payload, wait_for_status

pytestmark = pytest.mark.integration


def _trigger(client: Any, tenant: Tenant, user: str = "ada") -> dict[str, Any]:
    """user-signup for `user`: the workflow derives its subscriber from the payload's userId."""
    response = client.post(
        "/api/trigger",
        json={"workflowId": "user-signup", "payload": signup_payload(user)},
        headers=tenant.headers,
    )
    assert response.status_code == 202, response.text
    return dict(response.json())


def _delivery(client: Any, tenant: Tenant, notification_id: int, channels: int) -> dict[str, Any]:
    """The notification's delivery summary once it names `channels` channels."""
    deadline = time.monotonic() + 20
    read: dict[str, Any] = {}
    while time.monotonic() < deadline:
        read = client.get(f"/api/notifications/{notification_id}", headers=tenant.headers).json()
        if len(read.get("delivery") or {}) >= channels:
            return dict(read["delivery"])
        time.sleep(0.2)
    raise AssertionError(f"no delivery events for {notification_id}: {read}")


def _timeline_kinds(tenant: Tenant, notification_id: int) -> list[str]:
    with transaction(tenant.enterprise_id) as session:
        events = list_events(session, tenant.enterprise_id, notification_id, limit=1000)
        return [event.kind for event in events if event.kind.startswith("delivery.")]


def test_each_channel_shows_message_sent_from_verified_webhooks(client, tenant, worker, emulator):
    accepted = _trigger(client, tenant)
    notification_id = accepted["notificationId"]
    assert (
        wait_for_status(client, tenant, notification_id, {"SENT", "FAILED"})["notification_status"]
        == "SENT"
    )
    delivery = _delivery(client, tenant, notification_id, channels=2)
    assert set(delivery) == {"email", "in_app"}
    for channel in delivery.values():
        assert channel["status"] == "sent"
        assert channel["byType"] == {"message.sent": 1}
    assert _timeline_kinds(tenant, notification_id) == ["delivery.message.sent"] * 2
    # The emulator's webhooks were answered 2xx by our endpoint, each once.
    sent = emulator.get(
        "/_emulator/webhooks", params={"transactionId": accepted["transactionId"]}
    ).json()
    assert [entry["status"] for entry in sent] == ["delivered", "delivered"]
    assert [entry["attempts"] for entry in sent] == [1, 1]


def test_an_injected_provider_failure_shows_message_failed(client, tenant, worker, emulator):
    faults = emulator.post(
        "/_emulator/faults",
        json={"providerFailures": [{"channel": "email", "message": "mailbox unavailable"}]},
    )
    assert faults.status_code == 200, faults.text
    accepted = _trigger(client, tenant, user="grace")
    notification_id = accepted["notificationId"]
    # Novu accepted the trigger: SENT is ours; the provider's refusal comes afterwards.
    assert (
        wait_for_status(client, tenant, notification_id, {"SENT", "FAILED"})["notification_status"]
        == "SENT"
    )
    delivery = _delivery(client, tenant, notification_id, channels=2)
    assert delivery["email"]["status"] == "failed"
    assert delivery["email"]["byType"] == {"message.failed": 1}
    assert delivery["in_app"]["status"] == "sent"
    with transaction(tenant.enterprise_id) as session:
        events = list_events(session, tenant.enterprise_id, notification_id, limit=1000)
    [failed] = [event for event in events if event.kind == "delivery.message.failed"]
    assert failed.detail is not None
    assert failed.detail["channel"] == "email"
    assert failed.detail["errorText"] == "mailbox unavailable"
    # Novu named `<enterprise>_grace`; the caller's own id is kept.
    assert failed.detail["subscriberId"] == "grace"
