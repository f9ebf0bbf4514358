"""Retention (shared/notifications/retention.py, migration 0011): finished notifications older
than RETENTION_DAYS go, with their timeline, in batches; nothing else does."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from shared.db.session import transaction
from shared.notifications.retention import purge
from shared.notifications.timeline import NewEvent, append_events
from tests.conftest import make_tenant, signup_payload

pytestmark = pytest.mark.integration

LATER = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).isoformat()


def _trigger(client, tenant) -> int:
    body = {"workflowId": "user-signup", "payload": signup_payload(), "scheduledFor": LATER}
    response = client.post("/api/trigger", json=body, headers=tenant.headers)
    assert response.status_code == 202, response.text
    return response.json()["notificationId"]


def _age(notification_id: int, status: str, days: int, *, scheduled_days: int | None = None):
    with transaction() as session:
        session.execute(
            text(
                "UPDATE notify.ent_notification SET notification_status = :status,"
                " created_at = now() - make_interval(days => :days),"
                " updated_at = now() - make_interval(days => :days),"
                " scheduled_for = now() - make_interval(days => :scheduled)"
                " WHERE id = :id"
            ),
            {
                "id": notification_id,
                "status": status,
                "days": days,
                "scheduled": days if scheduled_days is None else scheduled_days,
            },
        )


def _left(ids: list[int]) -> tuple[set[int], set[int]]:
    with transaction() as session:
        rows = session.execute(
            text("SELECT id FROM notify.ent_notification WHERE id = ANY(:ids)"), {"ids": ids}
        )
        events = session.execute(
            text(
                "SELECT DISTINCT notification_id FROM notify.ent_notification_event"
                " WHERE notification_id = ANY(:ids)"
            ),
            {"ids": ids},
        )
        return {row.id for row in rows}, {row.notification_id for row in events}


def test_only_finished_notifications_past_retention_go_with_their_history(client, stack):
    tenant = make_tenant()
    old_sent, old_failed, old_retracted, old_pending, new_sent, due_late = (
        _trigger(client, tenant) for _ in range(6)
    )
    ids = [old_sent, old_failed, old_retracted, old_pending, new_sent, due_late]
    _age(old_sent, "SENT", 40)
    _age(old_failed, "FAILED", 40)
    _age(old_retracted, "RETRACTED", 31)
    # Not finished: kept, however old (due tomorrow, so that no running worker sends it).
    _age(old_pending, "PENDING", 40, scheduled_days=-1)
    _age(new_sent, "SENT", 3)  # within retention
    _age(due_late, "SENT", 40, scheduled_days=1)  # created long ago, but due only yesterday
    with transaction(tenant.enterprise_id) as session:  # history of each, to go with it
        append_events(
            session, tenant.enterprise_id, [NewEvent(i, "delivery.message.sent") for i in ids]
        )
    rows, events = _left(ids)
    assert rows == set(ids) and events == set(ids)
    endpoint = client.post(
        "/api/webhooks",
        json={"url": "http://127.0.0.1:9/hooks", "eventTypes": ["notification.sent"]},
        headers=tenant.headers,
    )
    assert endpoint.status_code == 201, endpoint.text
    hooks = {
        old_sent: "delivered",
        old_failed: "pending",  # still being retried: left to finish
        new_sent: "delivered",
    }
    with transaction() as session:
        for notification_id, status in hooks.items():
            session.execute(
                text(
                    "INSERT INTO notify.webhook_message (msg_id, enterprise_id, endpoint_id,"
                    " event_type, notification_id, payload, status) VALUES"
                    " (:msg, :enterprise, :endpoint, 'notification.sent', :id, '{}', :status)"
                ),
                {
                    "msg": f"msg_{notification_id}",
                    "enterprise": tenant.enterprise_id,
                    "endpoint": endpoint.json()["id"],
                    "id": notification_id,
                    "status": status,
                },
            )

    done = purge(30, batch_size=2)
    assert done.notifications == 3 and done.batches == 2 and not done.more
    rows, events = _left(ids)
    assert rows == events == {old_pending, new_sent, due_late}
    with transaction() as session:
        kept = session.execute(
            text("SELECT notification_id FROM notify.webhook_message WHERE endpoint_id = :e"),
            {"e": endpoint.json()["id"]},
        )
        assert {row.notification_id for row in kept} == {old_failed, new_sent}
    assert client.get(f"/api/notifications/{old_sent}", headers=tenant.headers).status_code == 404
    assert purge(30, batch_size=2).notifications == 0
    assert purge(0, batch_size=2).notifications == 0  # RETENTION_DAYS=0: kept forever


def test_the_purge_function_keeps_at_least_a_day(stack):
    for cutoff, batch in (("now()", 10), ("now() - interval '2 days'", 0)):
        with pytest.raises(DBAPIError, match=r"retention keeps|a purge batch"), transaction() as s:
            s.execute(text(f"SELECT notify.purge_finished({cutoff}, {batch})"))
