"""Cancel tells the truth (issue 12, item 1): a notification Novu may hold, because an attempt's
answer was lost (dropped connection, timeout, expired lease), is RETRACTED only when Novu
confirms the cancel; otherwise 409 `delivery_unknown` and the row is delivered as usual
(docs/architecture.md, "Cancel"). Real stack: PostgreSQL, Redis, a celery worker and beat,
the Novu emulator with its faults."""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, update

from shared.db.enums import NotificationStatus as S
from shared.db.models import Notification, NotificationEvent
from shared.db.session import scope_session, session_factory, transaction
from shared.notifications import transitions
from shared.notifications.service import CancelResult, NotificationService
from shared.queue import publish_deliver_batch
from shared.settings import get_settings
from tests.conftest import retract_leftover_rows, signup_payload, wait_for_status
from tests.rows import claim, insert_notification, record
from tests.worker.test_bridge_delay import _delayed_workflow
from tests.worker.test_bridge_e2e import _messages
from tests.worker.test_delivery import _events, _row, _wait_until

pytestmark = pytest.mark.integration

# Novu's 503 with this Retry-After parks the worker's retries in the database for a minute, so
# that the row stays PENDING with its outcome unknown while the test cancels it. A 5xx may
# itself have run at Novu, so it keeps the outcome unknown; it never clears it.
PARK_RETRIES = {"status": 503, "rate": 1.0, "retryAfter": 60}


def _trigger(client: Any, tenant: Any, **body: Any) -> dict[str, Any]:
    body.setdefault("workflowId", "user-signup")
    body.setdefault("payload", signup_payload())
    response = client.post("/api/trigger", json=body, headers=tenant.headers)
    assert response.status_code == 202, response.text
    accepted: dict[str, Any] = response.json()
    return accepted


def _fault_log(emulator: httpx.Client, transaction_id: str, kind: str) -> list[dict[str, Any]]:
    log: list[dict[str, Any]] = emulator.get(
        "/_emulator/faults/log", params={"transactionId": transaction_id, "kind": kind}
    ).json()
    return log


def _cancel(client: Any, tenant: Any, notification_id: int) -> httpx.Response:
    response: httpx.Response = client.post(
        f"/api/notifications/{notification_id}/cancel",
        json={"reason": "changed my mind"},
        headers=tenant.headers,
    )
    return response


def _parked(notification_id: int) -> bool:
    """PENDING with its next attempt far away (Novu's 503 Retry-After): nothing moves it."""
    row = _row(notification_id)
    far = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=30)
    return (
        row.notification_status is S.PENDING
        and row.next_attempt_at is not None
        and row.next_attempt_at > far
    )


@pytest.fixture(autouse=True)
def _no_rows_of_earlier_tests() -> None:
    """Earlier tests' rows due for a retry would meet this file's faults too (a 4.5 s latency,
    a 503 for a minute): in the full suite they held both worker processes while this file's
    row waited for its first attempt."""
    retract_leftover_rows("tests/worker/test_cancel_truth.py")


def _failed_attempts(notification_id: int) -> list[dict[str, Any]]:
    """The details of the notification's `attempt.failed` timeline events, oldest first."""
    with transaction() as session:
        E = NotificationEvent
        details = session.scalars(
            select(E.detail)
            .where(E.notification_id == notification_id, E.kind == "attempt.failed")
            .order_by(E.id)
        )
        return [dict(detail or {}) for detail in details]


def _lost_answer_then_parked(
    emulator: httpx.Client, accepted: dict[str, Any], lost: Callable[[dict[str, Any]], bool]
) -> None:
    """Wait until the worker recorded an attempt whose answer was lost (`lost` tells it from
    the attempt's error), then park its retries with Novu's 503.

    The timeline keeps every failed attempt, so the wait cannot miss one: the row shows an
    attempt's error only while it waits for its retry (a second in these tests)."""
    notification_id = accepted["notificationId"]

    def answer_lost() -> bool:
        return any(
            lost(detail) and detail.get("outcomeUnknown") is True
            for detail in _failed_attempts(notification_id)
        )

    try:
        _wait_until(answer_lost, what="an attempt whose answer was lost")
    except AssertionError as exc:
        row = _row(notification_id)
        raise AssertionError(
            f"{exc}: the row is {row.notification_status} after {row.attempts} attempts, "
            f"error {row.error_details}; its failed attempts: {_failed_attempts(notification_id)}"
        ) from None
    emulator.post("/_emulator/faults", json=PARK_RETRIES)
    _wait_until(lambda: _parked(notification_id), what="the retry parked by Novu's 503")


def _assert_refused_and_left_as_it_was(
    client: Any, tenant: Any, accepted: dict[str, Any]
) -> dict[str, Any]:
    notification_id = accepted["notificationId"]
    before = _row(notification_id)
    response = _cancel(client, tenant, notification_id)
    assert response.status_code == 409, response.text
    error = response.json()["error"]
    assert error["code"] == "delivery_unknown"
    assert "may have been delivered" in error["message"]
    after = _row(notification_id)
    kept = ("notification_status", "attempts", "next_attempt_at", "outcome_unknown_at")
    assert {name: getattr(after, name) for name in kept} == {
        name: getattr(before, name) for name in kept
    }
    assert after.locked_until is None and after.retracted_at is None
    shown = client.get(f"/api/notifications/{notification_id}", headers=tenant.headers).json()
    assert shown["notification_status"] == "PENDING"
    assert shown["outcome_unknown_at"] is not None
    return shown


def _deliver_now(notification_id: int) -> None:
    """The parked retry becomes due now (rather than in a minute); beat publishes it."""
    with transaction() as session:
        session.execute(
            update(Notification)
            .where(
                Notification.id == notification_id, Notification.notification_status == S.PENDING
            )
            .values(next_attempt_at=func.now(), enqueued_at=None)
        )


def _dropped(error: dict[str, Any]) -> bool:
    """The attempt's connection dropped without an answer."""
    return error.get("code") == "novu_unavailable" and error.get("statusCode") is None


def test_cancel_after_a_dropped_answer_is_delivery_unknown(client, tenant, worker, emulator):
    # Novu accepts the trigger and the connection drops before its answer (the attack).
    emulator.post("/_emulator/faults", json={"dropAfterAcceptRate": 1.0})
    accepted = _trigger(client, tenant)
    transaction_id = accepted["transactionId"]

    _lost_answer_then_parked(emulator, accepted, _dropped)
    assert _fault_log(emulator, transaction_id, "dropAfterAccept"), "Novu never accepted it"
    assert len(_events(emulator, transaction_id)) == 1  # Novu holds it

    _assert_refused_and_left_as_it_was(client, tenant, accepted)
    # Novu was asked, and still holds it: nothing was cancelled there.
    [event] = _events(emulator, transaction_id)
    assert event["cancelled"] is False

    # Delivered as usual: the next attempt is Novu's duplicate of what it already holds.
    emulator.delete("/_emulator/faults")
    _deliver_now(accepted["notificationId"])
    row = wait_for_status(client, tenant, accepted["notificationId"], {"SENT", "FAILED"})
    assert row["notification_status"] == "SENT", row
    assert row["outcome_unknown_at"] is None  # Novu's answer is known now
    assert len(_events(emulator, transaction_id)) == 1


def test_cancel_after_a_timeout_is_delivery_unknown(client, tenant, worker, emulator):
    # Novu answers after our read timeout (NOVU_TIMEOUT_SECONDS=3), having accepted the event.
    emulator.post("/_emulator/faults", json={"latencyMs": 4500})
    accepted = _trigger(client, tenant)
    transaction_id = accepted["transactionId"]

    def timed_out(error: dict[str, Any]) -> bool:
        return error.get("code") == "novu_unavailable" and "Timeout" in error.get("message", "")

    _lost_answer_then_parked(emulator, accepted, timed_out)
    _wait_until(lambda: len(_events(emulator, transaction_id)) == 1, 20, "Novu's late accept")

    _assert_refused_and_left_as_it_was(client, tenant, accepted)
    # Novu cannot be reached for the cancel either: still not confirmed, still not RETRACTED.
    emulator.post("/_emulator/faults", json={"dropRate": 1.0})
    drops = emulator.get("/_emulator/stats").json()["faults"]["drop"]
    _assert_refused_and_left_as_it_was(client, tenant, accepted)
    assert emulator.get("/_emulator/stats").json()["faults"]["drop"] > drops  # Novu was tried
    assert [event["cancelled"] for event in _events(emulator, transaction_id)] == [False]


def test_cancel_after_an_expired_lease_is_delivery_unknown(client, tenant, worker, emulator):
    # The worker's call reached Novu, then the worker died before recording anything.
    later = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat()
    payload = signup_payload()
    accepted = _trigger(client, tenant, payload=payload, scheduledFor=later)
    transaction_id = accepted["transactionId"]
    settings = get_settings()
    event = {"name": "user-signup", "to": payload["userId"], "payload": payload}
    sent = httpx.post(
        f"{settings.effective_novu_api_url}/v1/events/trigger",
        json={**event, "transactionId": transaction_id},
        headers={"Authorization": f"ApiKey {settings.effective_novu_secret_key}"},
    )
    assert sent.status_code == 201, sent.text
    with transaction() as session:
        session.execute(
            update(Notification)
            .where(Notification.id == accepted["notificationId"])
            .values(
                notification_status=S.PROCESSING,
                attempts=1,
                locked_until=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1),
            )
        )
    # Beat's reconciler takes the row back. It stays scheduled, so no worker claims it
    # afterwards: the cancel meets exactly what the reconciler left.
    _wait_until(
        lambda: _row(accepted["notificationId"]).notification_status is S.PENDING,
        what="the reconciler",
    )
    _assert_refused_and_left_as_it_was(client, tenant, accepted)
    assert [event["cancelled"] for event in _events(emulator, transaction_id)] == [False]


def test_novu_held_in_a_delay_step_is_cancelled_there_then_retracted(
    client, tenant, worker, emulator
):
    key = _delayed_workflow(client, tenant, 600)
    emulator.post("/_emulator/faults", json={"dropAfterAcceptRate": 1.0})
    accepted = _trigger(
        client,
        tenant,
        workflowId=key,
        payload={"buildingId": "B-7", "message": "Water off at noon"},
        subscriberId="resident-7",
    )
    notification_id, transaction_id = accepted["notificationId"], accepted["transactionId"]
    _lost_answer_then_parked(emulator, accepted, _dropped)

    # Novu holds the run in its delay step once the bridge executed that step; until then it
    # answers false, and the cancel is refused without changing the row.
    deadline = time.monotonic() + 20
    response = _cancel(client, tenant, notification_id)
    while response.status_code == 409 and time.monotonic() < deadline:
        assert response.json()["error"]["code"] == "delivery_unknown", response.text
        time.sleep(0.2)
        response = _cancel(client, tenant, notification_id)
    assert response.status_code == 200, response.text
    assert response.json()["notification_status"] == "RETRACTED"
    assert response.json()["retraction_reason"] == "changed my mind"
    [event] = _events(emulator, transaction_id)
    assert event["cancelled"] is True
    retracted = _row(notification_id)
    assert retracted.notification_status is S.RETRACTED

    # The worker never sends it again, even with its message delivered: one message carries it
    # and a control row; Novu's 503 logs every trigger that reaches it.
    later = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat()
    control = _trigger(client, tenant, scheduledFor=later)
    with transaction() as session:
        session.execute(
            update(Notification)
            .where(Notification.id.in_([notification_id, control["notificationId"]]))
            .values(scheduled_for=None, next_attempt_at=None)
        )
    refused_before = len(_fault_log(emulator, transaction_id, "status:503"))
    assert (
        publish_deliver_batch(tenant.enterprise_id, [notification_id, control["notificationId"]])
        == []
    )
    _wait_until(
        lambda: bool(_fault_log(emulator, control["transactionId"], "status:503")),
        what="the control row's trigger",
    )
    assert len(_fault_log(emulator, transaction_id, "status:503")) == refused_before
    after = _row(notification_id)
    assert (after.notification_status, after.attempts) == (S.RETRACTED, retracted.attempts)
    assert _messages(emulator, transaction_id) == []


def test_pending_row_never_sent_cancels_without_asking_novu(client, tenant, worker, emulator):
    later = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat()
    accepted = _trigger(client, tenant, scheduledFor=later)
    spent = emulator.get("/_emulator/stats").json()["tokens"]["byEndpoint"]
    response = _cancel(client, tenant, accepted["notificationId"])
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["notification_status"], body["outcome_unknown_at"]) == ("RETRACTED", None)
    after = emulator.get("/_emulator/stats").json()["tokens"]["byEndpoint"]
    assert after.get("cancel") == spent.get("cancel")  # Novu was not asked


# -- the transitions under the cancel, without the API ----------------------------------------


@pytest.fixture()
def pending(stack):
    enterprise = uuid.uuid4()
    return insert_notification(enterprise).notification_id, enterprise


def _attempt(notification_id: int, enterprise: uuid.UUID, status: S, **outcome: Any) -> int:
    """One attempt of the worker: claimed, then recorded with `status` and `outcome`'s fields.
    Returns its attempt."""
    with transaction() as session:
        claimed = claim(session, notification_id, enterprise)
        assert claimed is not None
        assert record(session, enterprise, notification_id, claimed.attempts, status, **outcome)
        return claimed.attempts


# These rows' retries ride a countdown message (`by_message`, as a worker's short retry does):
# beat's release leaves them alone, and the reconciler only after REDELIVER_AFTER_SECONDS, so the
# suite's running worker does not claim them while a test works on them.
BY_MESSAGE = {"retry_in": 0.0, "by_message": True}


def _ambiguous_retry(notification_id: int, enterprise: uuid.UUID) -> int:
    """One attempt whose answer was lost, recorded as a retry of unknown outcome, due at once."""
    lost = {"code": "novu_unavailable"}
    return _attempt(
        notification_id, enterprise, S.PENDING, error=lost, outcome_unknown=True, **BY_MESSAGE
    )


def _cancel_in_service(
    notification_id: int, enterprise: uuid.UUID, novu: Callable[[str], bool]
) -> CancelResult:
    """The cancel route's call, on a session like a request's (the route commits)."""
    session = session_factory()()
    scope_session(session, enterprise)
    try:
        outcome, _ = NotificationService(session).cancel_notification(
            notification_id,
            enterprise,
            reason=None,
            cancel_at_novu=novu,
            commit=session.commit,
            hold_seconds=30,
        )
        session.commit()
        return outcome
    finally:
        session.close()


def test_a_lost_answer_marks_the_row_and_only_sent_clears_it(pending):
    nid, enterprise = pending
    attempt = _ambiguous_retry(nid, enterprise)
    marked = _row(nid).outcome_unknown_at
    assert marked is not None
    with transaction() as session:  # a later, known failure keeps the first mark
        assert claim(session, nid, enterprise) is not None
        assert record(session, enterprise, nid, attempt + 1, S.PENDING, error={}, **BY_MESSAGE)
    assert _row(nid).outcome_unknown_at == marked
    with transaction() as session:
        assert claim(session, nid, enterprise) is not None
        assert record(session, enterprise, nid, attempt + 2, S.SENT)
    assert _row(nid).outcome_unknown_at is None


def test_the_reconciler_marks_a_dead_workers_row(pending):
    nid, enterprise = pending
    with transaction() as session:
        assert claim(session, nid, enterprise) is not None
        session.execute(
            update(Notification)
            .where(Notification.id == nid)
            .values(locked_until=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1))
        )
        requeued, _ = transitions.expire_leases(session, max_attempts=5, limit=10_000)
    assert (nid, enterprise) in requeued
    assert _row(nid).outcome_unknown_at is not None


def test_retract_pending_refuses_a_row_whose_outcome_is_unknown(pending):
    nid, enterprise = pending
    _ambiguous_retry(nid, enterprise)
    with transaction(enterprise) as session:
        retracted = transitions.retract_pending(
            session, notification_id=nid, enterprise_id=enterprise, reason=None
        )
    assert retracted is None
    assert _row(nid).notification_status is S.PENDING


def test_no_worker_claims_a_row_while_a_cancel_asks_novu(pending):
    nid, enterprise = pending
    attempt = _ambiguous_retry(nid, enterprise)
    seen: list[tuple[S, bool, bool]] = []

    def novu(transaction_id: str) -> bool:
        # While Novu is being asked: the hold is committed, a worker's claim gets nothing, and
        # the stale attempt (whose answer was lost) cannot record over it.
        with transaction() as other:
            claimed = claim(other, nid, enterprise)
            stale = record(other, enterprise, nid, attempt, S.SENT)
        seen.append((_row(nid).notification_status, claimed is None, not stale))
        return True

    assert _cancel_in_service(nid, enterprise, novu) is CancelResult.RETRACTED
    assert seen == [(S.PROCESSING, True, True)]
    with transaction() as session:
        assert claim(session, nid, enterprise) is None  # RETRACTED is final
    retracted = _row(nid)
    assert (retracted.notification_status, retracted.attempts) == (S.RETRACTED, attempt)


def test_an_unconfirmed_cancel_gives_the_row_back_unchanged(pending):
    nid, enterprise = pending
    _ambiguous_retry(nid, enterprise)
    before = _row(nid)

    def unreachable(transaction_id: str) -> bool:
        from shared.novu.errors import NovuRetryableError

        raise NovuRetryableError(None, "ConnectError: refused")

    for novu in (lambda _transaction_id: False, unreachable):
        assert _cancel_in_service(nid, enterprise, novu) is CancelResult.DELIVERY_UNKNOWN
        after = _row(nid)
        assert (after.notification_status, after.attempts, after.locked_until) == (
            S.PENDING,
            before.attempts,
            None,
        )
        assert after.outcome_unknown_at == before.outcome_unknown_at
    with transaction() as session:  # delivered as usual
        assert claim(session, nid, enterprise) is not None


def test_a_refused_attempt_is_known_and_still_cancels_without_novu(pending):
    nid, enterprise = pending
    # Novu's 429: it ran nothing, and the attempt is given back.
    throttled = {"code": "novu_rate_limited"}
    _attempt(nid, enterprise, S.PENDING, error=throttled, attempt_used=False, **BY_MESSAGE)

    def never(transaction_id: str) -> bool:
        raise AssertionError("Novu was asked about a row it never received")

    assert _cancel_in_service(nid, enterprise, never) is CancelResult.RETRACTED


def test_the_retry_api_keeps_the_mark_of_a_failed_row(pending):
    nid, enterprise = pending
    # The last attempt's answer was lost: FAILED, its outcome unknown.
    _attempt(nid, enterprise, S.FAILED, error={"code": "attempts_exhausted"}, outcome_unknown=True)
    with transaction(enterprise) as session:
        moved, _ = NotificationService(session).retry_notification(nid, enterprise)
    assert moved
    assert _row(nid).outcome_unknown_at is not None
    refused = _cancel_in_service(nid, enterprise, lambda _transaction_id: False)
    assert refused is CancelResult.DELIVERY_UNKNOWN
