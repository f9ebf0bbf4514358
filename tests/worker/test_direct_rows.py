"""Rows other services insert into ent_notification with the original XNovu's columns (issue
14): the database fills in the rest, beat publishes them, the claim checks them as intake
checks a trigger; a row that cannot be sent is FAILED with the reason, never sent."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest
from psycopg.types.json import Jsonb
from sqlalchemy import func, update

from shared.db.enums import NotificationStatus
from shared.db.models import Notification
from shared.db.session import transaction
from tests.conftest import Stack, signup_payload, wait_for_status
from tests.rows import claim, insert_notification, set_columns

pytestmark = pytest.mark.integration

# What another service runs (README, "Rows written by other services"): the original's
# columns only, as a login role of its own, in a transaction of its enterprise as xnovu_app
# (row-level security).
ORIGINAL_INSERT = """
    INSERT INTO notify.ent_notification (
        name, description, notification_workflow_id, payload, recipients, publish_status,
        enterprise_id, scheduled_for, workflow_version
    ) VALUES (
        %(name)s, 'written by another service', %(workflow)s, %(payload)s, %(recipients)s,
        %(publish_status)s, %(enterprise)s, %(scheduled_for)s, 1
    )
    RETURNING id, workflow_key, transaction_id
"""


@pytest.fixture(scope="module")
def service_url(stack: Stack) -> Iterator[str]:
    """A login role of another service's, a member of xnovu_app and nothing else, as the
    README tells deployments to make one; its connection URL."""
    role = f"svc_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(stack.database_url, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN")
        conn.execute(f"GRANT xnovu_app TO {role}")
    yield stack.database_url.replace(f"//{urlsplit(stack.database_url).username}@", f"//{role}@")
    with psycopg.connect(stack.database_url, autocommit=True) as conn:
        conn.execute(f"DROP ROLE {role}")


def _as_service(url: str, enterprise_id: uuid.UUID, sql: str, params: Any) -> list[Any]:
    """One statement in a transaction of the enterprise, as another service runs it."""
    with psycopg.connect(url) as conn:
        conn.execute("SET LOCAL ROLE xnovu_app")
        conn.execute("SELECT set_config('xnovu.enterprise_id', %s, true)", (str(enterprise_id),))
        return conn.execute(sql, params).fetchall()


def _workflow_row(
    url: str,
    enterprise_id: uuid.UUID,
    *,
    status: str = "PUBLISH",
    deactivated: bool = False,
) -> int:
    """The enterprise's row of the static workflow user-signup, as the original keeps one per
    enterprise."""
    [(workflow_id,)] = _as_service(
        url,
        enterprise_id,
        """
        INSERT INTO notify.ent_notification_workflow (
            name, workflow_key, workflow_type, default_channels, publish_status, deactivated,
            enterprise_id
        ) VALUES ('User sign-up', 'user-signup', 'STATIC', '{EMAIL,IN_APP}', %s, %s, %s)
        RETURNING id
        """,
        (status, deactivated, enterprise_id),
    )
    return int(workflow_id)


def _insert(
    url: str,
    enterprise_id: uuid.UUID,
    workflow_id: int,
    payload: dict[str, Any],
    *,
    publish_status: str = "PUBLISH",
    scheduled_for: Any = None,
    recipients: list[Any] | None = None,
) -> tuple[int, str, str]:
    [(notification_id, workflow_key, transaction_id)] = _as_service(
        url,
        enterprise_id,
        ORIGINAL_INSERT,
        {
            "name": f"direct-{uuid.uuid4().hex[:8]}",
            "workflow": workflow_id,
            "payload": Jsonb(payload),
            # The original's recipients are uuid[]; ours text[] takes them.
            "recipients": recipients if recipients is not None else [uuid.uuid4()],
            "publish_status": publish_status,
            "enterprise": enterprise_id,
            "scheduled_for": scheduled_for,
        },
    )
    return int(notification_id), str(workflow_key), str(transaction_id)


def _novu_events(emulator: Any, transaction_id: str) -> list[dict[str, Any]]:
    return list(emulator.get("/_emulator/events", params={"transactionId": transaction_id}).json())


def test_a_row_with_the_original_columns_is_sent(client, tenant, worker, emulator, service_url):
    workflow_id = _workflow_row(service_url, tenant.enterprise_id)
    user = uuid.uuid4()
    notification_id, workflow_key, transaction_id = _insert(
        service_url, tenant.enterprise_id, workflow_id, signup_payload(str(user)), recipients=[user]
    )
    assert workflow_key == "user-signup"  # derived from the workflow row
    assert transaction_id.startswith("xn-")  # the column's default

    # Nothing else is done: beat publishes it as any PENDING row never published.
    row = wait_for_status(client, tenant, notification_id, {"SENT", "FAILED"}, timeout=30)
    assert row["notification_status"] == "SENT", row
    assert row["recipients"] == [str(user)]
    [event] = _novu_events(emulator, transaction_id)
    assert event["name"] == "user-signup"
    assert event["payload"]["userId"] == str(user)

    timeline = client.get(f"/api/notifications/{notification_id}/events", headers=tenant.headers)
    assert timeline.status_code == 200, timeline.text
    # Novu's delivery events (delivery.*) join on their own time.
    kinds = [e["kind"] for e in timeline.json()["items"] if not e["kind"].startswith("delivery.")]
    assert kinds == ["accepted", "attempt.started", "sent"], kinds


def test_a_scheduled_row_is_sent_when_due(client, tenant, worker, service_url):
    workflow_id = _workflow_row(service_url, tenant.enterprise_id)
    due = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=3)
    notification_id, _, _ = _insert(
        service_url, tenant.enterprise_id, workflow_id, signup_payload(), scheduled_for=due
    )
    row = wait_for_status(client, tenant, notification_id, {"SENT", "FAILED"}, timeout=30)
    assert row["notification_status"] == "SENT", row
    assert dt.datetime.fromisoformat(row["processed_at"]) >= due  # not before it was due


@pytest.mark.parametrize(
    ("workflow_status", "deactivated", "row_status", "code"),
    [
        ("DRAFT", False, "PUBLISH", "workflow_not_published"),
        ("PUBLISH", True, "PUBLISH", "workflow_deactivated"),
        ("PUBLISH", False, "DRAFT", "notification_not_published"),
    ],
)
def test_a_row_that_is_not_to_be_sent_fails_with_the_reason(
    client, tenant, worker, emulator, service_url, workflow_status, deactivated, row_status, code
):
    workflow_id = _workflow_row(
        service_url, tenant.enterprise_id, status=workflow_status, deactivated=deactivated
    )
    notification_id, _, transaction_id = _insert(
        service_url, tenant.enterprise_id, workflow_id, signup_payload(), publish_status=row_status
    )
    row = wait_for_status(client, tenant, notification_id, {"SENT", "FAILED"}, timeout=30)
    assert row["notification_status"] == "FAILED", row
    assert row["error_details"]["code"] == code, row["error_details"]
    assert row["attempts"] == 1  # failed at once, not retried
    assert _novu_events(emulator, transaction_id) == []  # Novu was never called


def test_a_payload_the_workflow_refuses_fails_with_the_triggers_field_errors(
    client, tenant, worker, emulator, service_url
):
    workflow_id = _workflow_row(service_url, tenant.enterprise_id)
    payload = {"userId": "u-1", "email": "not an address"}  # no name, a bad email
    notification_id, _, transaction_id = _insert(
        service_url, tenant.enterprise_id, workflow_id, payload
    )
    row = wait_for_status(client, tenant, notification_id, {"SENT", "FAILED"}, timeout=30)
    assert row["notification_status"] == "FAILED", row
    assert _novu_events(emulator, transaction_id) == []

    # The same payload through the trigger route: the same code and field errors.
    refused = client.post(
        "/api/trigger",
        json={"workflowId": "user-signup", "payload": payload, "subscriberId": "u-1"},
        headers=tenant.headers,
    )
    assert refused.status_code == 422, refused.text
    error = refused.json()["error"]
    assert row["error_details"]["code"] == error["code"] == "invalid_payload"
    assert row["error_details"]["details"] == error["details"]
    assert {d["field"] for d in error["details"]} == {"email", "name"}


def test_a_row_naming_another_enterprises_workflow_is_refused(client, tenant, stack, service_url):
    other = uuid.uuid4()
    theirs = _workflow_row(service_url, other)
    name = f"foreign-{uuid.uuid4().hex[:8]}"
    with pytest.raises(psycopg.errors.ForeignKeyViolation, match="not a workflow of enterprise"):
        _as_service(
            service_url,
            tenant.enterprise_id,
            ORIGINAL_INSERT,
            {
                "name": name,
                "workflow": theirs,
                "payload": Jsonb(signup_payload()),
                "recipients": ["u-1"],
                "publish_status": "PUBLISH",
                "enterprise": tenant.enterprise_id,
                "scheduled_for": None,
            },
        )
    # A role that bypasses row-level security is refused too: the trigger checks the enterprise.
    with psycopg.connect(stack.database_url) as conn:
        with pytest.raises(psycopg.errors.ForeignKeyViolation):
            conn.execute(
                "INSERT INTO notify.ent_notification"
                " (name, notification_workflow_id, payload, recipients, enterprise_id)"
                " VALUES (%s, %s, '{}', '{u-1}', %s)",
                (name, theirs, tenant.enterprise_id),
            )
        conn.rollback()
        with pytest.raises(psycopg.errors.NotNullViolation, match="names its workflow"):
            conn.execute(
                "INSERT INTO notify.ent_notification (name, payload, recipients, enterprise_id)"
                " VALUES (%s, '{}', '{u-1}', %s)",
                (name, tenant.enterprise_id),
            )
        conn.rollback()
        [(count,)] = conn.execute(
            "SELECT count(*) FROM notify.ent_notification WHERE name = %s", (name,)
        ).fetchall()
    assert count == 0


def test_only_rows_other_services_inserted_are_checked_at_claim(tenant, service_url):
    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)  # beat leaves them alone
    workflow_id = _workflow_row(service_url, tenant.enterprise_id)
    direct, _, _ = _insert(
        service_url, tenant.enterprise_id, workflow_id, signup_payload(), scheduled_for=later
    )
    recorded = insert_notification(
        tenant.enterprise_id, payload=signup_payload(), scheduled_for=later
    ).notification_id
    ids = [direct, recorded]
    with transaction(tenant.enterprise_id) as session:
        # Due now and marked published, so that only this test's claim takes them.
        session.execute(
            update(Notification)
            .where(Notification.id.in_(ids))
            .values(scheduled_for=func.now() - dt.timedelta(seconds=1), enqueued_at=func.now())
        )
    with transaction(tenant.enterprise_id) as session:
        claimed = {i: claim(session, i, tenant.enterprise_id) for i in ids}
    for notification_id in ids:  # not left PROCESSING for the reconciler to send
        set_columns(notification_id, notification_status=NotificationStatus.RETRACTED)

    intake_row = claimed[recorded]
    assert intake_row is not None and intake_row.direct is None  # intake checked it already
    direct_row = claimed[direct]
    assert direct_row is not None and direct_row.direct is not None
    assert direct_row.direct["workflow"] == {
        "id": workflow_id,
        "key": "user-signup",
        "publishStatus": "PUBLISH",
        "deactivated": False,
    }
    assert direct_row.direct["publishStatus"] == "PUBLISH"


@pytest.mark.parametrize(
    ("names", "code"),
    [
        ("another enterprise's workflow id", "workflow_not_found"),
        ("its key only, the workflow a DRAFT", "workflow_not_published"),
        ("its own workflow id under another key", "workflow_mismatch"),
    ],
)
def test_a_row_giving_workflow_key_is_checked_against_the_workflow_it_names(
    client, tenant, worker, emulator, service_url, names, code
):
    if names == "another enterprise's workflow id":
        workflow_id: int | None = _workflow_row(service_url, uuid.uuid4())
        key = "user-signup"
    elif names == "its key only, the workflow a DRAFT":
        _workflow_row(service_url, tenant.enterprise_id, status="DRAFT")
        workflow_id, key = None, "user-signup"
    else:
        workflow_id, key = _workflow_row(service_url, tenant.enterprise_id), "user-signup-2"
    [(notification_id, transaction_id)] = _as_service(
        service_url,
        tenant.enterprise_id,
        "INSERT INTO notify.ent_notification"
        " (notification_workflow_id, workflow_key, payload, recipients, enterprise_id)"
        " VALUES (%s, %s, %s, '{u-1}', %s) RETURNING id, transaction_id",
        (workflow_id, key, Jsonb(signup_payload("u-1")), tenant.enterprise_id),
    )
    row = wait_for_status(client, tenant, notification_id, {"SENT", "FAILED"}, timeout=30)
    assert row["notification_status"] == "FAILED", row
    assert row["error_details"]["code"] == code, row["error_details"]
    assert _novu_events(emulator, transaction_id) == []


def test_a_notification_id_trigger_of_a_draft_workflow_row_is_accepted_then_failed(
    client, tenant, worker, emulator, service_url
):
    # As documented (docs/architecture.md, "Rows written by other services"): intake answers
    # by the stored payload, the claim refuses the DRAFT workflow row.
    workflow_id = _workflow_row(service_url, tenant.enterprise_id, status="DRAFT")
    due = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=3)  # beat leaves it until then
    notification_id, _, transaction_id = _insert(
        service_url, tenant.enterprise_id, workflow_id, signup_payload(), scheduled_for=due
    )
    answer = client.post(
        "/api/trigger",
        json={"workflowId": "user-signup", "notificationId": notification_id},
        headers=tenant.headers,
    )
    assert answer.status_code == 202, answer.text
    row = wait_for_status(client, tenant, notification_id, {"SENT", "FAILED"}, timeout=30)
    assert row["notification_status"] == "FAILED", row
    assert row["error_details"]["code"] == "workflow_not_published"
    assert _novu_events(emulator, transaction_id) == []
