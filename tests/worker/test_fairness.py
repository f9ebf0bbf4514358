"""One enterprise's slow renders do not starve another's deliveries (docs/architecture.md,
"Rendering"): measured against an unloaded baseline taken in the same test, on the real worker
(two children) with the real API."""

from __future__ import annotations

import datetime as dt
import statistics
import time
from typing import Any

import pytest

from tests.conftest import Tenant, make_tenant, signup_payload
from tests.factories import create_template, create_workflow

pytestmark = pytest.mark.integration

# Loops until the 2 s render timeout: every notification of this template holds a worker child
# for the whole timeout before it fails.
TIMES_OUT = "{% for i in range(99999) %}{% for j in range(99999) %}{% endfor %}{% endfor %}"
SLOW_NOTIFICATIONS = 10
SAMPLES = 12


def _at(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value)


def _trigger_to_sent(client: Any, tenant: Tenant) -> float:
    """Seconds from a trigger's commit to its SENT, by the database's own clock."""
    response = client.post(
        "/api/trigger",
        json={"workflowId": "user-signup", "payload": signup_payload()},
        headers=tenant.headers,
    )
    assert response.status_code == 202, response.text
    url = f"/api/notifications/{response.json()['notificationId']}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        row = client.get(url, headers=tenant.headers).json()
        if row["notification_status"] != "PENDING" and row["notification_status"] != "PROCESSING":
            assert row["notification_status"] == "SENT", row
            return (_at(row["processed_at"]) - _at(row["created_at"])).total_seconds()
        time.sleep(0.02)
    raise AssertionError(f"{url} was not delivered within 60 s")


def _p99(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=100, method="inclusive")[98]


def test_slow_templates_do_not_delay_another_enterprise(client, worker, emulator):
    slow, other = make_tenant(), make_tenant()
    sms = create_template(client, slow, "SMS", body=TIMES_OUT)
    create_workflow(client, slow, "slow-renders", SMS=sms, publish=True)
    for _ in range(3):  # warm up: the worker's connections and caches for this enterprise
        _trigger_to_sent(client, other)

    unloaded = [_trigger_to_sent(client, other) for _ in range(SAMPLES)]

    slow_ids = []
    for _ in range(SLOW_NOTIFICATIONS):  # one message each, as ten separate triggers are
        response = client.post(
            "/api/trigger",
            json={"workflowId": "slow-renders", "payload": {"userId": "u-1"}},
            headers=slow.headers,
        )
        assert response.status_code == 202, response.text
        slow_ids.append(response.json()["notificationId"])
    time.sleep(0.5)  # every child has started one of them
    loaded = [_trigger_to_sent(client, other) for _ in range(SAMPLES)]

    base, under_load = _p99(unloaded), _p99(loaded)
    print(
        f"trigger->SENT p99: unloaded {base * 1000:.0f} ms, with {SLOW_NOTIFICATIONS} timing-out"
        f" renders of another enterprise {under_load * 1000:.0f} ms ({under_load / base:.2f}x);"
        f" medians {statistics.median(unloaded) * 1000:.0f} ms,"
        f" {statistics.median(loaded) * 1000:.0f} ms"
    )
    # The target is 2x; the margin is for a loaded two-core machine shared with other tests
    # (and a floor of 250 ms, for baselines of a few tens of milliseconds). Before the render
    # lanes this was 9 s.
    assert under_load <= max(3 * base, base + 0.25), (unloaded, loaded)

    # The slow enterprise's notifications all fail for their own reason, each on its first
    # attempt: waiting for the lane uses none.
    deadline = time.monotonic() + SLOW_NOTIFICATIONS * 2.5 + 30
    rows: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        rows = [
            client.get(f"/api/notifications/{i}", headers=slow.headers).json() for i in slow_ids
        ]
        if all(row["notification_status"] == "FAILED" for row in rows):
            break
        time.sleep(0.5)
    assert [row["notification_status"] for row in rows] == ["FAILED"] * SLOW_NOTIFICATIONS
    for row in rows:
        assert row["error_details"]["code"] == "render_failed", row
        assert "timed out" in row["error_details"]["message"]
        assert row["attempts"] == 1
