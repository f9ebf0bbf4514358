"""GET /api/notifications lookups (transactionId, recipient, tag, batch, created range) and
GET /api/batches/{id}: the right rows, only the caller's, bounded parameters, indexed plans."""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import event, text

from shared.db.enums import NotificationStatus
from shared.db.session import get_engine, transaction
from shared.notifications.service import NotificationService
from tests.conftest import Tenant, make_tenant, signup_payload
from tests.factories import api_error
from tests.rows import set_columns


def _later() -> str:
    return (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat()


def _trigger(client: Any, tenant: Tenant, **extra: Any) -> dict[str, Any]:
    """A notification scheduled an hour ahead (it stays PENDING); its 202 body."""
    body = {"workflowId": "user-signup", "payload": signup_payload(), "scheduledFor": _later()}
    response = client.post("/api/trigger", json=body | extra, headers=tenant.headers)
    assert response.status_code == 202, response.text
    return dict(response.json())


def _listed(client: Any, tenant: Tenant, **params: Any) -> list[int]:
    """The ids of every page of the list with these filters, following the cursor."""
    ids: list[int] = []
    cursor = None
    while True:
        query = params | ({"cursor": cursor} if cursor else {})
        response = client.get("/api/notifications", params=query, headers=tenant.headers)
        assert response.status_code == 200, response.text
        page = response.json()
        ids.extend(item["id"] for item in page["items"])
        cursor = page["nextCursor"]
        if cursor is None:
            return ids


def test_transaction_id_recipient_and_tag_find_the_callers_rows_only(client, tenant):
    person = f"alice-{uuid.uuid4().hex[:8]}"
    mine = _trigger(client, tenant, recipients=[person, "bob"], tags=["ops"])
    also_mine = _trigger(client, tenant, recipients=[{"subscriberId": person}], tags=["ops"])
    _trigger(client, tenant, recipients=["bob"], tags=["billing"])
    other = make_tenant()
    theirs = _trigger(client, other, recipients=[person], tags=["ops"])

    assert _listed(client, tenant, transactionId=mine["transactionId"]) == [mine["notificationId"]]
    assert _listed(client, tenant, transactionId=theirs["transactionId"]) == []
    assert _listed(client, other, transactionId=mine["transactionId"]) == []
    assert _listed(client, tenant, transactionId="xn-no-such-transaction") == []

    # A subscriberId given bare or in a subscriber object, in any position of the list.
    expected = [also_mine["notificationId"], mine["notificationId"]]
    assert _listed(client, tenant, recipient=person, limit=1) == expected
    assert _listed(client, other, recipient=person) == [theirs["notificationId"]]
    assert _listed(client, tenant, recipient=f"{person}-not") == []
    assert _listed(client, tenant, tag="ops") == expected
    assert _listed(client, other, tag="billing") == []


def test_filters_combine_and_a_created_range_pages_stably(client, tenant):
    person = f"carol-{uuid.uuid4().hex[:8]}"
    ids = [_trigger(client, tenant, recipients=[person])["notificationId"] for _ in range(5)]
    noise = _trigger(client, tenant, recipients=["dave"])["notificationId"]
    start = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
    # Created an hour apart, and out of id order: the range decides, ids order the page.
    hours = [4, 0, 3, 1, 2]
    for notification_id, hour in zip(ids, hours, strict=True):
        set_columns(notification_id, created_at=start + dt.timedelta(hours=hour))
    set_columns(noise, created_at=start + dt.timedelta(hours=2))
    set_columns(ids[3], notification_status=NotificationStatus.FAILED)

    # [01:00, 04:00) in another offset: the rows created at hours 1, 2 and 3.
    after = (start + dt.timedelta(hours=1)).astimezone(dt.timezone(dt.timedelta(hours=5)))
    window = {"createdAfter": after.isoformat(), "createdBefore": "2026-03-01T16:00:00Z"}
    in_window = sorted([ids[2], ids[3], ids[4]], reverse=True)
    assert _listed(client, tenant, recipient=person, **window) == in_window
    assert _listed(client, tenant, recipient=person, limit=1, **window) == in_window
    assert _listed(client, tenant, **window) == sorted([*in_window, noise], reverse=True)
    assert _listed(client, tenant, recipient=person, status="FAILED", **window) == [ids[3]]
    assert _listed(client, tenant, recipient=person, status="PENDING", **window) == [
        ids[4],
        ids[2],
    ]
    only_after = {"createdAfter": "2026-03-01T15:00:00+00:00"}
    assert _listed(client, tenant, recipient=person, **only_after) == sorted(
        [ids[0], ids[2]], reverse=True
    )
    same_instant = {"createdAfter": window["createdBefore"], "createdBefore": "2026-03-01T16:00Z"}
    assert _listed(client, tenant, **same_instant) == []
    assert _listed(client, tenant, recipient=person, workflowId="user-signup", **window) == (
        in_window
    )
    assert _listed(client, tenant, recipient=person, workflowId="another", **window) == []


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"createdAfter": "2026-03-01T12:00:00"}, "createdAfter"),  # no offset
        ({"createdBefore": "yesterday"}, "createdBefore"),
        ({"createdAfter": "2026-02-30T00:00:00Z"}, "createdAfter"),
        ({"batchId": "not-a-uuid"}, "batchId"),
        ({"recipient": "two words"}, "recipient"),
        ({"recipient": "r" * 256}, "recipient"),
        ({"recipient": ""}, "recipient"),
        ({"transactionId": "x" * 256}, "transactionId"),
        ({"transactionId": ""}, "transactionId"),
    ],
)
def test_bad_lookup_values_are_422(client, tenant, params, field):
    response = client.get("/api/notifications", params=params, headers=tenant.headers)
    error = api_error(response, 422, "validation_error")
    assert any(detail["field"] == f"query.{field}" for detail in error["details"]), error


def test_a_range_that_ends_before_it_starts_is_422_and_far_dates_are_no_error(client, tenant):
    backwards = {"createdAfter": "2026-03-02T00:00:00Z", "createdBefore": "2026-03-01T00:00:00Z"}
    response = client.get("/api/notifications", params=backwards, headers=tenant.headers)
    api_error(response, 422, "invalid_range")
    _trigger(client, tenant)
    # The ends of the ISO range, pushed past them by their offsets: PostgreSQL takes both.
    far = {
        "createdAfter": "0001-01-01T00:00:00+14:00",
        "createdBefore": "9999-12-31T23:59:59-14:00",
    }
    assert len(_listed(client, tenant, **far)) == 1


def _bulk(client: Any, tenant: Tenant, events: list[dict[str, Any]]) -> dict[str, Any]:
    response = client.post("/api/trigger/bulk", json={"events": events}, headers=tenant.headers)
    assert response.status_code == 202, response.text
    return dict(response.json())


def _batch(client: Any, tenant: Tenant, batch_id: str) -> Any:
    return client.get(f"/api/batches/{batch_id}", headers=tenant.headers)


def test_a_bulk_request_has_a_batch_listed_and_counted_for_its_enterprise_only(client, tenant):
    events = [
        {"workflowId": "user-signup", "payload": signup_payload(), "scheduledFor": _later()},
        {"workflowId": "user-signup", "payload": signup_payload(), "scheduledFor": _later()},
        {"workflowId": "no-such-workflow", "payload": {}},
    ]
    answer = _bulk(client, tenant, events)
    batch_id = answer["batchId"]
    assert uuid.UUID(batch_id) and answer["accepted"] == 2
    created = [r["notificationId"] for r in answer["results"][:2]]
    _trigger(client, tenant)  # not in the batch
    another = _bulk(client, tenant, events[:1])["batchId"]
    assert another != batch_id

    summary = _batch(client, tenant, batch_id)
    assert summary.status_code == 200, summary.text
    body = summary.json()
    assert body["batchId"] == batch_id and body["total"] == 2
    assert body["byStatus"] == {
        "PENDING": 2,
        "PROCESSING": 0,
        "SENT": 0,
        "FAILED": 0,
        "RETRACTED": 0,
    }
    assert dt.datetime.fromisoformat(body["createdAt"]).tzinfo is not None
    assert _listed(client, tenant, batchId=batch_id) == sorted(created, reverse=True)
    assert _listed(client, tenant, batchId=batch_id, limit=1) == sorted(created, reverse=True)

    cancelled = client.post(f"/api/notifications/{created[0]}/cancel", headers=tenant.headers)
    assert cancelled.status_code == 200, cancelled.text
    moved = _batch(client, tenant, batch_id).json()["byStatus"]
    assert (moved["PENDING"], moved["RETRACTED"]) == (1, 1)

    other = make_tenant()
    api_error(_batch(client, other, batch_id), 404, "not_found")
    assert _listed(client, other, batchId=batch_id) == []
    api_error(_batch(client, tenant, str(uuid.uuid4())), 404, "not_found")
    api_error(_batch(client, tenant, "nope"), 422, "validation_error")
    assert client.get(f"/api/batches/{batch_id}").status_code == 401


def test_a_service_keys_batch_shows_each_enterprise_its_own_share(client, tenant):
    service, other = make_tenant(service=True), make_tenant()
    event = {"workflowId": "user-signup", "payload": signup_payload(), "scheduledFor": _later()}
    owners = [tenant, tenant, other]
    events = [event | {"enterpriseId": str(owner.enterprise_id)} for owner in owners]
    answer = _bulk(client, service, events)
    assert answer["accepted"] == 3
    batch_id = answer["batchId"]
    assert _batch(client, tenant, batch_id).json()["total"] == 2
    assert _batch(client, other, batch_id).json()["total"] == 1
    ids = [r["notificationId"] for r in answer["results"]]
    assert _listed(client, other, batchId=batch_id) == [ids[2]]


def test_a_bulk_request_that_creates_nothing_has_no_batch(client, tenant):
    event = {"workflowId": "user-signup", "payload": signup_payload(), "scheduledFor": _later()}
    first = _bulk(client, tenant, [event | {"idempotencyKey": "k-1"}])
    assert first["batchId"] is not None
    replayed = _bulk(client, tenant, [event | {"idempotencyKey": "k-1"}])
    assert replayed["results"][0]["replayed"] is True
    assert replayed["batchId"] is None
    assert _bulk(client, tenant, [{"workflowId": "no-such-workflow"}])["batchId"] is None
    # The replayed row stays in the batch that created it.
    assert _batch(client, tenant, first["batchId"]).json()["total"] == 1


def test_batch_counts_move_as_the_worker_sends_its_notifications(client, tenant, worker):
    due = [{"workflowId": "user-signup", "payload": signup_payload()} for _ in range(3)]
    later = {"workflowId": "user-signup", "payload": signup_payload(), "scheduledFor": _later()}
    batch_id = _bulk(client, tenant, [*due, later])["batchId"]
    counts: dict[str, int] = {}
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        counts = _batch(client, tenant, batch_id).json()["byStatus"]
        if counts["SENT"] == 3:
            break
        time.sleep(0.2)
    assert counts == {"PENDING": 1, "PROCESSING": 0, "SENT": 3, "FAILED": 0, "RETRACTED": 0}
    sent = _listed(client, tenant, batchId=batch_id, status="SENT")
    assert len(sent) == 3


def _keys(notification_id: int) -> list[str]:
    with transaction() as session:
        rows = session.execute(
            text(
                "SELECT key FROM notify.ent_notification_key"
                " WHERE notification_id = :id ORDER BY key"
            ),
            {"id": notification_id},
        )
        return [row.key for row in rows]


def test_keys_come_with_each_notification_once_and_go_with_it(client, tenant):
    # A repeated tag and a recipient named bare and in an object: one key each.
    created = _trigger(
        client, tenant, recipients=["kim", {"subscriberId": "kim"}, "lee"], tags=["a", "a"]
    )
    notification_id = created["notificationId"]
    assert _keys(notification_id) == ["r:kim", "r:lee", "t:a"]
    assert _listed(client, tenant, recipient="kim", tag="a") == [notification_id]
    with transaction() as session:  # as retention removes notifications (migration 0011)
        session.execute(
            text("DELETE FROM notify.ent_notification WHERE id = :id"), {"id": notification_id}
        )
    assert _keys(notification_id) == []


# -- the plans: each lookup is an index scan within the enterprise ---------------------------

ROWS = 40_000


@pytest.fixture()
def big_enterprise(stack: Any) -> Iterator[tuple[uuid.UUID, uuid.UUID]]:
    """An enterprise of ROWS SENT notifications, created a minute apart, 8 per recipient, 1 in
    100 with a tag of its own, 1 in 400 in one batch; a neighbour with the same recipients;
    ANALYZEd. Yields the enterprise and the batch."""
    enterprise_id, neighbour, batch_id = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    with transaction() as session:
        for owner, rows in ((enterprise_id, ROWS), (neighbour, ROWS // 4)):
            session.execute(
                text(
                    """
                    INSERT INTO notify.ent_notification (
                        enterprise_id, workflow_key, notification_status, payload,
                        recipients, tags, transaction_id, batch_id, created_at
                    )
                    SELECT :owner, 'plan-flow', 'SENT', '{}', ARRAY['p-' || (g % (:rows / 8))],
                        CASE WHEN g % 100 = 0 THEN ARRAY['rare-' || (g / 100)] END,
                        'xn-plan-' || :owner || '-' || g,
                        CASE WHEN g % 400 = 0 THEN CAST(:batch AS uuid) END,
                        timestamptz '2025-01-01 00:00+00' + g * interval '1 minute'
                    FROM generate_series(1, :rows) AS g
                    """
                ),
                {"owner": owner, "rows": rows, "batch": batch_id},
            )
    with get_engine().connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql(
            "ANALYZE notify.ent_notification, notify.ent_notification_key"
        )
    try:
        yield enterprise_id, batch_id
    finally:
        with transaction() as session:
            for table in ("ent_notification", "ent_notification_key"):
                session.execute(
                    text(f"DELETE FROM notify.{table} WHERE enterprise_id IN (:a, :b)"),
                    {"a": enterprise_id, "b": neighbour},
                )


def _plan(enterprise_id: uuid.UUID, **filters: Any) -> tuple[str, int]:
    """The plan PostgreSQL chooses for the service's list statement with these filters, under
    the enterprise's row-level security as the API runs it; and the rows it returns."""
    statements: list[tuple[str, Any]] = []

    def capture(conn: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if "ent_notification" in statement and statement.lstrip().startswith("SELECT"):
            statements.append((statement, parameters))

    engine = get_engine()
    event.listen(engine, "before_cursor_execute", capture)
    try:
        with transaction(enterprise_id) as session:
            found = NotificationService(session).list_notifications(
                enterprise_id, limit=200, **filters
            )
            [(statement, parameters)] = statements
            rows = session.connection().exec_driver_sql("EXPLAIN " + statement, parameters)
            return "\n".join(row[0] for row in rows), len(found)
    finally:
        event.remove(engine, "before_cursor_execute", capture)


def test_each_lookup_uses_its_index_with_realistic_statistics(big_enterprise):
    enterprise_id, batch_id = big_enterprise
    start = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    transaction_id = f"xn-plan-{enterprise_id}-777"
    cases: list[tuple[dict[str, Any], str, int]] = [
        ({"transaction_id": transaction_id}, "uq_ent_notification_transaction_id", 1),
        ({"recipient": "p-42"}, "pk_ent_notification_key", 8),
        ({"tags": ["rare-7"]}, "pk_ent_notification_key", 1),
        ({"batch_id": batch_id}, "ix_ent_notification_enterprise_batch", ROWS // 400),
        (
            {
                "created_after": start + dt.timedelta(minutes=10_000),
                "created_before": start + dt.timedelta(minutes=10_030),
            },
            "ix_ent_notification_enterprise_created",
            30,
        ),
    ]
    for filters, index, count in cases:
        plan, found = _plan(enterprise_id, **filters)
        assert index in plan, (filters, plan)
        assert "Seq Scan" not in plan, (filters, plan)
        assert found == count, (filters, found)
