"""Rule 1 of "never lost": with Redis down the API still accepts, and the notification is sent
once Redis is back (beat publishes the row the API could not)."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import select

from shared.db.models import Notification
from shared.db.session import transaction
from tests.conftest import signup_payload, wait_for_status

pytestmark = pytest.mark.integration


def test_trigger_while_redis_is_down_is_accepted_and_sent_when_it_returns(
    client, tenant, worker, emulator, stack
):
    stack.redis.stop()
    try:
        started = time.monotonic()
        response = client.post(
            "/api/trigger",
            json={"workflowId": "user-signup", "payload": signup_payload()},
            headers=tenant.headers,
        )
        elapsed = time.monotonic() - started
        assert response.status_code == 202, response.text
        accepted = response.json()
        with transaction() as session:
            row = session.scalars(
                select(Notification).where(Notification.id == accepted["notificationId"])
            ).one()
        # Recorded, not published: it waits in PostgreSQL for beat to publish it.
        assert row.notification_status.value == "PENDING"
    finally:
        stack.redis.start()
    row = wait_for_status(client, tenant, accepted["notificationId"], {"SENT"}, timeout=60)
    assert row["transaction_id"] == accepted["transactionId"]
    events = emulator.get("/_emulator/events", params={"transactionId": accepted["transactionId"]})
    assert len(events.json()) == 1
    print(f"trigger with Redis down answered in {elapsed:.2f}s")
