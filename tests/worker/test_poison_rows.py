"""A row that cannot be delivered fails alone, at once, with the true reason (issue 12): a
payload stored before intake bounded its depth never holds its batch nor breaks a read."""

from __future__ import annotations

import time
from typing import Any

import pytest

from shared.notifications.publisher import publish_enterprise
from tests.conftest import signup_payload
from tests.rows import insert_notification

pytestmark = pytest.mark.integration

# Nested 300 levels: past the depth the Novu event's JSON encoder can write (about 250), which
# failed the whole batch task before any Novu call, on every retry.
DEPTH = 300


def _nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


def _settled(client, tenant, ids: list[int], timeout: float = 30) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    rows: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        rows = []
        for notification_id in ids:
            response = client.get(f"/api/notifications/{notification_id}", headers=tenant.headers)
            assert response.status_code == 200, response.text
            rows.append(response.json())
        if all(row["notification_status"] in {"SENT", "FAILED"} for row in rows):
            return rows
        time.sleep(0.1)
    raise AssertionError(f"not settled: {[row['notification_status'] for row in rows]}")


def _signups(tenant, users: list[str]) -> list[int]:
    """A PENDING user-signup row for each user, not yet published."""
    return [
        insert_notification(
            tenant.enterprise_id, payload=signup_payload(user), recipients=[user]
        ).notification_id
        for user in users
    ]


def test_a_payload_too_deep_to_send_fails_alone_and_its_batch_is_sent(client, tenant, worker):
    users = [f"poison-{i}" for i in range(6)]
    good = _signups(tenant, users[:5])
    # Recorded as an earlier intake would have: bypassing today's depth check.
    bad = insert_notification(
        tenant.enterprise_id,
        payload={**signup_payload(users[5]), "deep": _nested(DEPTH)},
        recipients=[users[5]],
    ).notification_id
    publish_enterprise(tenant.enterprise_id, [*good[:2], bad, *good[2:]])  # one message

    rows = _settled(client, tenant, [*good, bad])
    *sent, failed = rows
    for row in sent:
        assert row["notification_status"] == "SENT", row
        assert row["attempts"] == 1, row  # not left PROCESSING for the lease to expire
    assert failed["notification_status"] == "FAILED"
    assert failed["attempts"] == 1  # a deterministic failure is not retried
    assert failed["error_details"]["code"] == "payload_unserialisable"
    assert "nested 301 levels deep" in failed["error_details"]["message"]


def test_reads_of_a_row_too_deep_to_serialise_answer(client, tenant):
    bad = insert_notification(
        tenant.enterprise_id, payload={"userId": "u", "deep": _nested(DEPTH)}
    ).notification_id
    one = client.get(f"/api/notifications/{bad}", headers=tenant.headers)
    assert one.status_code == 200, one.text
    payload = one.json()["payload"]
    assert payload["userId"] == "u"
    # The payload is shown as stored down to READ_MAX_DEPTH levels; below, a note says so.
    from api.schemas.notifications import READ_MAX_DEPTH, TOO_DEEP

    node = payload["deep"]
    for _ in range(READ_MAX_DEPTH - 1):  # payload is level 1, "deep" level 2
        node = node["a"]
    assert node == TOO_DEEP

    page = client.get("/api/notifications", headers=tenant.headers)
    assert page.status_code == 200, page.text
    assert [item["id"] for item in page.json()["items"]] == [bad]
    cancelled = client.post(f"/api/notifications/{bad}/cancel", headers=tenant.headers)
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["notification_status"] == "RETRACTED"


def test_any_failure_to_build_one_rows_trigger_fails_that_row_alone(client, tenant, worker):
    from sqlalchemy import text

    from shared.db.session import transaction

    ids = _signups(tenant, [f"corrupt-{i}" for i in range(3)])
    # A recipient list no intake would store (a number where an id or object belongs): building
    # its `to` raises, which is neither a render error nor a known refusal.
    with transaction(tenant.enterprise_id) as session:
        session.execute(
            text("UPDATE notify.ent_notification SET recipient_objects = '[42]' WHERE id = :id"),
            {"id": ids[1]},
        )
    publish_enterprise(tenant.enterprise_id, ids)

    first, corrupt, last = _settled(client, tenant, ids)
    assert (first["notification_status"], last["notification_status"]) == ("SENT", "SENT")
    assert (first["attempts"], last["attempts"]) == (1, 1)
    assert corrupt["notification_status"] == "FAILED"
    assert corrupt["attempts"] == 1
    assert corrupt["error_details"]["code"] == "trigger_unbuildable"
    assert "AttributeError" in corrupt["error_details"]["message"]
