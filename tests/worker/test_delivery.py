"""The delivery pipeline end to end: API → PostgreSQL → Redis → celery worker → Novu emulator."""

from __future__ import annotations

import datetime as dt
import itertools
import time

import pytest
from sqlalchemy import select, update

from shared.db.enums import NotificationStatus
from shared.db.models import Notification
from shared.db.session import transaction
from shared.queue import TaskName, publish_deliver_batch, task_writer
from tests.conftest import novu_workflows, retract_leftover_rows, signup_payload, wait_for_status
from tests.factories import trigger_signup as _trigger

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def _no_rows_of_earlier_tests():
    """A fault set for every trigger (a 429) would refuse earlier tests' rows too, and each
    refusal drains the Novu budget all rows share: in the full suite they took the calls this
    file's rows were waiting for."""
    retract_leftover_rows("tests/worker/test_delivery.py")


def _events(emulator, transaction_id):
    return emulator.get("/_emulator/events", params={"transactionId": transaction_id}).json()


def _row(notification_id: int) -> Notification:
    with transaction() as session:
        return session.scalars(select(Notification).where(Notification.id == notification_id)).one()


def _wait_until(predicate, timeout=15.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_trigger_reaches_sent_and_novu_records_it_once(client, tenant, worker, emulator):
    accepted = _trigger(client, tenant)
    row = wait_for_status(client, tenant, accepted["notificationId"], {"SENT", "FAILED"})
    assert row["notification_status"] == "SENT", row
    assert row["transaction_id"] == accepted["transactionId"]
    assert row["processed_at"] is not None
    events = _events(emulator, accepted["transactionId"])
    assert len(events) == 1
    event = events[0]
    assert event["name"] == "user-signup"
    rendered = event["payload"]["_xnovu"]["rendered"]
    assert rendered["email"]["subject"] == "Welcome to XNovu, Ada Lovelace!"
    assert "<h1>Welcome, Ada Lovelace!</h1>" in rendered["email"]["body"]
    assert "Ada Lovelace" in rendered["in_app"]["body"]
    assert event["payload"]["_xnovu"]["enterpriseId"] == str(tenant.enterprise_id)


def test_html_in_the_payload_is_escaped_in_email_and_in_app(client, tenant, worker, emulator):
    payload = {**signup_payload(), "name": "<script>x</script>"}
    accepted = client.post(
        "/api/trigger",
        json={"workflowId": "user-signup", "payload": payload},
        headers=tenant.headers,
    ).json()
    wait_for_status(client, tenant, accepted["notificationId"], {"SENT"})
    rendered = _events(emulator, accepted["transactionId"])[0]["payload"]["_xnovu"]["rendered"]
    assert "<script>" not in rendered["email"]["body"]
    assert "&lt;script&gt;" in rendered["in_app"]["body"]


def test_retryable_errors_are_retried_until_sent(client, tenant, worker, emulator):
    # Retry-After: 2 keeps the attempts apart, so the faults are cleared before the last one.
    emulator.post("/_emulator/faults", json={"status": 500, "rate": 1.0, "retryAfter": 2})
    accepted = _trigger(client, tenant)
    _wait_until(lambda: _row(accepted["notificationId"]).attempts >= 2, what="a second attempt")
    emulator.delete("/_emulator/faults")
    row = wait_for_status(client, tenant, accepted["notificationId"], {"SENT", "FAILED"})
    assert row["notification_status"] == "SENT"
    assert row["attempts"] >= 2
    assert len(_events(emulator, accepted["transactionId"])) == 1


def test_novus_429_never_uses_an_attempt_nor_fails_the_notification(
    client, tenant, worker, emulator
):
    emulator.post("/_emulator/faults", json={"status": 429, "rate": 1.0, "retryAfter": 1})
    accepted = _trigger(client, tenant)

    def refusals() -> int:
        log = emulator.get(
            "/_emulator/faults/log", params={"transactionId": accepted["transactionId"]}
        ).json()
        return sum(1 for entry in log if entry.get("status") == 429)

    # More refusals than DELIVERY_MAX_ATTEMPTS (4), and the row never spent an attempt.
    _wait_until(lambda: refusals() >= 5, timeout=20, what="five 429s")
    # Read at rest: just after a refusal the row may still be PROCESSING on its claim (attempt
    # 1) until the worker gives the attempt back.
    _wait_until(
        lambda: _row(accepted["notificationId"]).notification_status is NotificationStatus.PENDING,
        timeout=20,
        what="the row back at rest",
    )
    row = _row(accepted["notificationId"])
    while row.notification_status is not NotificationStatus.PENDING:  # claimed again meanwhile
        row = _row(accepted["notificationId"])
    assert (row.notification_status, row.attempts) == (NotificationStatus.PENDING, 0)
    assert row.error_details["code"] == "novu_rate_limited"
    emulator.delete("/_emulator/faults")
    row = wait_for_status(client, tenant, accepted["notificationId"], {"SENT", "FAILED"})
    assert (row["notification_status"], row["attempts"]) == ("SENT", 1)
    assert len(_events(emulator, accepted["transactionId"])) == 1


def test_a_workflow_novu_does_not_know_yet_waits_without_using_an_attempt(
    client, tenant, worker, emulator
):
    emulator.delete("/_emulator/workflows/user-signup")  # Novu does not know it (yet)
    accepted = _trigger(client, tenant)
    _wait_until(
        lambda: (
            (_row(accepted["notificationId"]).error_details or {}).get("code")
            == "novu_workflow_not_synced"
        ),
        what="Novu's 422 workflow_not_found",
    )
    row = _row(accepted["notificationId"])
    assert (row.notification_status, row.attempts) == (NotificationStatus.PENDING, 0)
    # The worker asked for a sync, which makes Novu know it again; the next try is sent with a
    # new Idempotency-Key, or Novu would replay its stored 422.
    emulator_url = str(emulator.base_url).rstrip("/")
    _wait_until(lambda: "user-signup" in novu_workflows(emulator_url), what="the sync")
    row = wait_for_status(client, tenant, accepted["notificationId"], {"SENT", "FAILED"})
    assert (row["notification_status"], row["attempts"]) == ("SENT", 1)
    assert len(_events(emulator, accepted["transactionId"])) == 1


def test_an_ambiguous_failure_is_not_sent_again_within_a_second(client, tenant, worker, emulator):
    # Novu's transactionId check is not atomic: two sends close together could both run.
    emulator.post("/_emulator/faults", json={"dropAfterAcceptRate": 1.0})
    accepted = _trigger(client, tenant)

    def drops() -> list[dt.datetime]:
        log = emulator.get(
            "/_emulator/faults/log",
            params={"transactionId": accepted["transactionId"], "kind": "dropAfterAccept"},
        ).json()
        return [dt.datetime.fromisoformat(entry["at"].replace("Z", "+00:00")) for entry in log]

    _wait_until(lambda: len(drops()) >= 3, timeout=20, what="three sends")
    emulator.delete("/_emulator/faults")
    times = drops()
    gaps = [(later - earlier).total_seconds() for earlier, later in itertools.pairwise(times)]
    assert min(gaps) >= 1.0, gaps
    row = wait_for_status(client, tenant, accepted["notificationId"], {"SENT", "FAILED"})
    assert row["notification_status"] == "SENT"
    assert len(_events(emulator, accepted["transactionId"])) == 1


def test_permanent_error_fails_with_novus_answer(client, tenant, worker, emulator):
    emulator.post("/_emulator/faults", json={"status": 400, "rate": 1.0})
    accepted = _trigger(client, tenant)
    row = wait_for_status(client, tenant, accepted["notificationId"], {"SENT", "FAILED"})
    assert row["notification_status"] == "FAILED"
    assert row["attempts"] == 1
    assert row["error_details"]["code"] == "novu_rejected"
    assert row["error_details"]["statusCode"] == 400
    assert _events(emulator, accepted["transactionId"]) == []


def test_exhausted_attempts_fail_with_the_last_error(client, tenant, worker, emulator):
    emulator.post("/_emulator/faults", json={"status": 503, "rate": 1.0})
    accepted = _trigger(client, tenant)
    row = wait_for_status(
        client, tenant, accepted["notificationId"], {"SENT", "FAILED"}, timeout=30
    )
    assert row["notification_status"] == "FAILED"
    assert row["attempts"] == 4  # DELIVERY_MAX_ATTEMPTS in the test settings
    assert row["error_details"]["code"] == "attempts_exhausted"
    assert row["error_details"]["statusCode"] == 503


def test_connection_lost_after_novu_accepted_does_not_send_twice(client, tenant, worker, emulator):
    emulator.post("/_emulator/faults", json={"dropAfterAcceptRate": 1.0})
    accepted = _trigger(client, tenant)
    _wait_until(lambda: len(_events(emulator, accepted["transactionId"])) == 1, what="the accept")
    _wait_until(lambda: _row(accepted["notificationId"]).attempts >= 1, what="the first attempt")
    emulator.delete("/_emulator/faults")
    row = wait_for_status(client, tenant, accepted["notificationId"], {"SENT", "FAILED"})
    assert row["notification_status"] == "SENT"
    assert row["attempts"] >= 2
    assert len(_events(emulator, accepted["transactionId"])) == 1


def test_retracted_notification_is_never_sent_even_with_its_message_queued(
    client, tenant, worker, emulator
):
    later = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat()
    held = _trigger(client, tenant, scheduledFor=later)
    cancelled = client.post(
        f"/api/notifications/{held['notificationId']}/cancel", headers=tenant.headers
    )
    assert cancelled.json()["notification_status"] == "RETRACTED"
    # Make it due and publish its message anyway, as a stale queue would.
    with transaction() as session:
        session.execute(
            update(Notification)
            .where(Notification.id == held["notificationId"])
            .values(scheduled_for=None)
        )
    assert publish_deliver_batch(tenant.enterprise_id, [held["notificationId"]]) == []
    control = _trigger(client, tenant)
    wait_for_status(client, tenant, control["notificationId"], {"SENT"})
    time.sleep(0.5)
    assert _row(held["notificationId"]).notification_status is NotificationStatus.RETRACTED
    assert _events(emulator, held["transactionId"]) == []


def test_scheduled_notification_waits_in_the_database_until_due(client, tenant, worker, emulator):
    due = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=2)
    accepted = _trigger(client, tenant, scheduledFor=due.isoformat())
    time.sleep(1.0)
    assert _row(accepted["notificationId"]).notification_status is NotificationStatus.PENDING
    row = wait_for_status(client, tenant, accepted["notificationId"], {"SENT"}, timeout=10)
    assert dt.datetime.fromisoformat(row["processed_at"]) >= due
    assert len(_events(emulator, accepted["transactionId"])) == 1


def test_reconciler_publishes_a_pending_row_whose_message_was_lost(
    client, tenant, worker, emulator
):
    later = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat()
    accepted = _trigger(client, tenant, scheduledFor=later)
    # A due row whose message was published long ago and never consumed.
    with transaction() as session:
        session.execute(
            update(Notification)
            .where(Notification.id == accepted["notificationId"])
            .values(
                scheduled_for=None, enqueued_at=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
            )
        )
    row = wait_for_status(client, tenant, accepted["notificationId"], {"SENT"}, timeout=10)
    assert row["attempts"] == 1


def test_reconciler_requeues_a_row_whose_worker_died_mid_delivery(client, tenant, worker, emulator):
    later = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat()
    accepted = _trigger(client, tenant, scheduledFor=later)
    with transaction() as session:
        session.execute(
            update(Notification)
            .where(Notification.id == accepted["notificationId"])
            .values(
                scheduled_for=None,
                notification_status=NotificationStatus.PROCESSING,
                attempts=1,
                locked_until=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1),
            )
        )
    row = wait_for_status(client, tenant, accepted["notificationId"], {"SENT"}, timeout=10)
    assert row["attempts"] == 2


def test_cancel_sent_after_delivery_is_409_already_delivered(client, tenant, worker, emulator):
    accepted = _trigger(client, tenant)
    wait_for_status(client, tenant, accepted["notificationId"], {"SENT"})
    response = client.post(
        f"/api/notifications/{accepted['notificationId']}/cancel", headers=tenant.headers
    )
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "already_delivered"
    assert _row(accepted["notificationId"]).notification_status is NotificationStatus.SENT


def test_a_message_of_the_old_single_notification_task_is_still_delivered(
    client, tenant, worker, emulator
):
    # Releases before 0.2 queued deliver_notification(id, enterprise): a message of it left in
    # the queue across an upgrade is consumed by the alias (docs/architecture.md, "Upgrading").
    later = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat()
    held = _trigger(client, tenant, scheduledFor=later)
    with transaction() as session:  # due, and left alone by beat: only the message can send it
        session.execute(
            update(Notification)
            .where(Notification.id == held["notificationId"])
            .values(scheduled_for=None, enqueued_at=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1))
        )
    writer = task_writer()
    assert writer is not None
    writer.publish(
        [(TaskName.DELIVER_NOTIFICATION, [held["notificationId"], str(tenant.enterprise_id)])]
    )
    row = wait_for_status(client, tenant, held["notificationId"], {"SENT", "FAILED"})
    assert row["notification_status"] == "SENT", row
    assert len(_events(emulator, held["transactionId"])) == 1
