"""A workflow's delay step end to end: the emulator holds the run in the bridge's `delay` step,
and a cancel of the SENT notification succeeds only while it is held there
(docs/architecture.md, "Cancel")."""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx
import pytest

from shared.novu.sync import sync_now
from tests.factories import create_template, create_workflow
from tests.worker.test_bridge_e2e import (  # noqa: F401 (bridge_api, bridged: fixtures)
    _messages,
    _trigger,
    _wait_for_messages,
    bridge_api,
    bridged,
)

# `bridged` points the session's emulator (the `emulator` client) at a bridge API process.
pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("bridged")]


def _delayed_workflow(client: Any, tenant: Any, seconds: int) -> str:
    """A published workflow of one email step after a delay of `seconds`; its key."""
    key = f"delayed-{uuid.uuid4().hex[:8]}"
    workflow = create_workflow(client, tenant, key, EMAIL=create_template(client, tenant, "EMAIL"))
    changed = client.patch(
        f"/api/workflows/{workflow['id']}", json={"delay_seconds": seconds}, headers=tenant.headers
    )
    assert changed.status_code == 200, changed.text
    published = client.post(f"/api/workflows/{workflow['id']}/publish", headers=tenant.headers)
    assert published.status_code == 200, published.text
    # Synced here rather than by the worker's debounced task: Novu must know the delay step
    # before the trigger, and what is tested is the delay, not when a sync happens.
    assert sync_now(reason="test: delayed workflow").ok
    return key


def _cancel(client: Any, tenant: Any, notification_id: int) -> httpx.Response:
    response: httpx.Response = client.post(
        f"/api/notifications/{notification_id}/cancel", headers=tenant.headers
    )
    return response


def test_cancel_while_novu_holds_the_run_in_the_delay_step(client, tenant, emulator):
    key = _delayed_workflow(client, tenant, 600)
    executed = emulator.get("/_emulator/stats").json()["bridge"]["executed"]
    payload = {"buildingId": "B-1", "message": "Boiler check"}
    sent = _trigger(client, tenant, key, payload, "resident-1")
    # The delay step ran on our bridge; until then Novu had nothing to cancel.
    deadline = time.monotonic() + 20
    while emulator.get("/_emulator/stats").json()["bridge"]["executed"] <= executed:
        assert time.monotonic() < deadline, "the emulator never executed the delay step"
        time.sleep(0.1)
    response = _cancel(client, tenant, sent["notificationId"])
    while response.status_code == 409 and time.monotonic() < deadline:
        time.sleep(0.1)  # executed, not yet held: the emulator records the hold just after
        response = _cancel(client, tenant, sent["notificationId"])
    assert response.status_code == 200, response.text
    assert response.json()["notification_status"] == "RETRACTED"
    assert _messages(emulator, sent["transactionId"]) == []


def test_cancel_after_the_delay_and_the_email_ran_is_409(client, tenant, emulator):
    key = _delayed_workflow(client, tenant, 1)
    payload = {"buildingId": "B-2", "message": "Lift repaired"}
    sent = _trigger(client, tenant, key, payload, "resident-2")
    delivered = _wait_for_messages(emulator, sent["transactionId"], 1)
    assert [m["stepId"] for m in delivered] == ["email"]
    assert delivered[0]["outputs"]["body"] == "<p>Lift repaired</p>"
    response = _cancel(client, tenant, sent["notificationId"])
    assert response.status_code == 409, response.text
    assert response.json()["error"]["code"] == "already_delivered"
    assert emulator.get("/_emulator/stats").json()["bridge"]["lastError"] is None
