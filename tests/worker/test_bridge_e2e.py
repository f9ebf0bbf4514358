"""End to end through the bridge: API → worker → Novu emulator → signed `execute` on a real API
process's /api/novu → the rendered content lands as messages in the emulator."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import api_process, make_tenant, signup_payload, wait_for_status
from tests.factories import create_template, create_workflow

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def bridge_api(stack) -> Iterator[str]:
    """A uvicorn API process: the emulator (another process) must reach it over HTTP."""
    with api_process(stack, "bridge-api") as url:
        yield url


@pytest.fixture()
def bridged(emulator: httpx.Client, bridge_api: str, worker: Any) -> Iterator[httpx.Client]:
    """The session's emulator executing triggers on the bridge; restored afterwards."""
    response = emulator.post(
        "/_emulator/config", json={"bridgeUrl": f"{bridge_api}/api/novu", "retryBaseMs": 100}
    )
    assert response.status_code == 200, response.text
    try:
        yield emulator
    finally:
        restored = emulator.delete("/_emulator/config")
        assert restored.json()["bridgeUrl"] is None


def _messages(emulator: httpx.Client, transaction_id: str) -> list[dict[str, Any]]:
    return list(
        emulator.get("/_emulator/messages", params={"transactionId": transaction_id}).json()
    )


def _wait_for_messages(
    emulator: httpx.Client, transaction_id: str, count: int, timeout: float = 20
) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = _messages(emulator, transaction_id)
        if len(found) >= count:
            return found
        time.sleep(0.1)
    stats = emulator.get("/_emulator/stats").json()["bridge"]
    raise AssertionError(f"{transaction_id}: {_messages(emulator, transaction_id)}; {stats}")


def _executed_all_steps(emulator: httpx.Client, before: int, steps: int) -> None:
    """Wait until the emulator has answered `steps` more executions (skips included)."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if emulator.get("/_emulator/stats").json()["bridge"]["executed"] >= before + steps:
            return
        time.sleep(0.1)
    raise AssertionError("the emulator did not execute every step")


def _trigger(client: Any, tenant: Any, workflow_id: str, payload: dict[str, Any], subscriber: str):
    response = client.post(
        "/api/trigger",
        json={"workflowId": workflow_id, "payload": payload, "subscriberId": subscriber},
        headers=tenant.headers,
    )
    assert response.status_code == 202, response.text
    accepted = response.json()
    row = wait_for_status(client, tenant, accepted["notificationId"], {"SENT", "FAILED"})
    assert row["notification_status"] == "SENT", row
    return accepted


def test_each_enterprise_receives_its_own_channels_rendered_through_the_bridge(client, bridged):
    key = f"shared-key-{uuid.uuid4().hex[:6]}"
    a, b = make_tenant(), make_tenant()
    create_workflow(
        client,
        a,
        key,
        publish=True,
        EMAIL=create_template(client, a, "EMAIL"),
        IN_APP=create_template(client, a, "IN_APP"),
    )
    create_workflow(client, b, key, publish=True, EMAIL=create_template(client, b, "EMAIL"))
    payload = {"buildingId": "B-12", "message": "Fire drill at <noon>", "priority": "high"}

    sent_a = _trigger(client, a, key, payload, "resident-a")
    delivered = _wait_for_messages(bridged, sent_a["transactionId"], 2)
    by_step = {m["stepId"]: m for m in delivered}
    assert set(by_step) == {"email", "in_app"}
    email, in_app = by_step["email"], by_step["in_app"]
    assert email["channel"] == "email" and in_app["channel"] == "in_app"
    # Novu knows each enterprise's subscribers in its namespace (docs/architecture.md).
    assert email["subscriberId"] == in_app["subscriberId"] == f"{a.enterprise_id}_resident-a"
    assert email["workflowId"] == key
    assert email["outputs"] == {
        "subject": "[HIGH] B-12",
        "body": "<p>Fire drill at &lt;noon&gt;</p>",
    }
    assert in_app["outputs"] == {"subject": "Building B-12", "body": "Fire drill at &lt;noon&gt;"}

    executed = bridged.get("/_emulator/stats").json()["bridge"]["executed"]
    sent_b = _trigger(client, b, key, payload, "resident-b")
    _executed_all_steps(bridged, executed, 2)  # email, then in_app answered with skip
    delivered_b = _wait_for_messages(bridged, sent_b["transactionId"], 1)
    assert [m["stepId"] for m in delivered_b] == ["email"]
    assert delivered_b[0]["outputs"]["subject"] == "[HIGH] B-12"
    assert delivered_b[0]["subscriberId"] == f"{b.enterprise_id}_resident-b"
    assert bridged.get("/_emulator/stats").json()["bridge"]["lastError"] is None


def test_static_workflow_is_delivered_through_the_bridge(client, tenant, bridged):
    payload = signup_payload()
    sent = _trigger(client, tenant, "user-signup", payload, payload["userId"])
    delivered = {m["stepId"]: m for m in _wait_for_messages(bridged, sent["transactionId"], 2)}
    assert delivered["email"]["outputs"]["subject"] == "Welcome to XNovu, Ada Lovelace!"
    assert "<h1>Welcome, Ada Lovelace!</h1>" in delivered["email"]["outputs"]["body"]
    assert "Ada Lovelace" in delivered["in_app"]["outputs"]["body"]
    assert delivered["email"]["subscriberId"] == f"{tenant.enterprise_id}_{payload['userId']}"
