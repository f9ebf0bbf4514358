"""`GET /api/stats/notifications`: an enterprise's counts by status and workflow over a range,
and its due->SENT latency percentiles, against the real worker; another enterprise's rows are
never counted."""

from __future__ import annotations

import datetime as dt

import pytest

from tests.conftest import make_tenant, signup_payload, wait_for_status

pytestmark = pytest.mark.integration


def _trigger(client, tenant, **extra):
    body = {"workflowId": "user-signup", "payload": signup_payload(), **extra}
    response = client.post("/api/trigger", json=body, headers=tenant.headers)
    assert response.status_code == 202, response.text
    return response.json()["notificationId"]


def test_counts_and_latency_of_the_enterprise_only(client, worker, emulator):
    tenant, other = make_tenant(), make_tenant()
    sent = [_trigger(client, tenant) for _ in range(3)]
    later = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat()
    pending = _trigger(client, tenant, scheduledFor=later)
    retracted = _trigger(client, tenant, scheduledFor=later)
    assert (
        client.post(
            f"/api/notifications/{retracted}/cancel", json={}, headers=tenant.headers
        ).status_code
        == 200
    )
    _trigger(client, other)
    for notification_id in sent:
        wait_for_status(client, tenant, notification_id, {"SENT"})

    figures = client.get("/api/stats/notifications", headers=tenant.headers)
    assert figures.status_code == 200, figures.text
    body = figures.json()
    assert body["total"] == 5
    assert body["byStatus"] == {"SENT": 3, "PENDING": 1, "RETRACTED": 1}
    assert body["byWorkflow"] == {"user-signup": {"SENT": 3, "PENDING": 1, "RETRACTED": 1}}
    latency = body["sentLatencyMs"]
    assert latency["count"] == 3
    assert 0 < latency["p50"] <= latency["p90"] <= latency["p99"] <= latency["max"] < 15_000
    assert pending not in sent

    # a range that ends before they were created counts none of them
    before = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=2)).isoformat()
    empty = client.get(
        "/api/stats/notifications", params={"createdBefore": before}, headers=tenant.headers
    ).json()
    assert empty["total"] == 0 and empty["byStatus"] == {}
    assert empty["sentLatencyMs"] == {
        "count": 0,
        "p50": None,
        "p90": None,
        "p99": None,
        "max": None,
    }


@pytest.mark.parametrize(
    ("params", "code"),
    [
        (
            {"createdAfter": "2026-01-01T00:00:00Z", "createdBefore": "2026-03-01T00:00:00Z"},
            "range_too_large",
        ),
        (
            {"createdAfter": "2026-01-02T00:00:00Z", "createdBefore": "2026-01-01T00:00:00Z"},
            "invalid_range",
        ),
        # The default start, a day before, is before the first representable instant.
        ({"createdBefore": "0001-01-01T00:00:00Z"}, "invalid_range"),
        # Before year 1 once in UTC.
        ({"createdBefore": "0001-01-01T00:00:00+14:00"}, "invalid_range"),
        ({"createdAfter": "0001-01-01T00:00:00+14:00"}, "invalid_range"),
        ({"createdAfter": "2026-01-01T00:00:00"}, "validation_error"),  # no offset
        ({"createdBefore": "yesterday"}, "validation_error"),
    ],
)
def test_a_bad_range_is_a_422(client, tenant, params, code):
    response = client.get("/api/stats/notifications", params=params, headers=tenant.headers)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == code
