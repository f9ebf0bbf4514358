"""The timeline's table and its append API: events in order, confined to their enterprise by
row-level security, and append-only for enterprise transactions."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy import text, update
from sqlalchemy.exc import DBAPIError, ProgrammingError

from shared.db.enums import NotificationStatus as S
from shared.db.models import Notification
from shared.db.session import transaction
from shared.notifications import transitions
from shared.notifications.repository import defer_pending
from shared.notifications.service import CancelResult, NotificationService
from shared.notifications.timeline import (
    EXCERPT_CHARS,
    MAX_DETAIL_CHARS,
    TABLE,
    NewEvent,
    append_events,
    excerpt,
    list_events,
)
from shared.novu.errors import NovuRetryableError
from tests.rows import claim, insert_notification, record


def test_appended_events_read_back_oldest_first_in_keyset_pages(stack):
    enterprise = uuid.uuid4()
    row = insert_notification(enterprise).notification_id
    events = [
        NewEvent(row, "delivery.message.sent", None, {"channel": "email", "n": i}) for i in range(5)
    ]
    with transaction(enterprise) as session:
        append_events(session, enterprise, events)
    with transaction(enterprise) as session:
        first = list_events(session, enterprise, row, limit=3)
        rest = list_events(session, enterprise, row, after_id=first[-1].id, limit=10)
    kinds = [e.kind for e in [*first, *rest]]
    # The insert itself wrote `accepted` first.
    assert kinds == ["accepted"] + ["delivery.message.sent"] * 5
    assert [e.detail["n"] for e in [*first, *rest][1:]] == [0, 1, 2, 3, 4]
    stamps = [e.created_at for e in [*first, *rest]]
    assert stamps == sorted(stamps)


def test_another_enterprise_neither_reads_nor_writes_the_events(stack):
    mine, theirs = uuid.uuid4(), uuid.uuid4()
    row = insert_notification(mine).notification_id
    with transaction(theirs) as session:
        # Deliberately no enterprise filter: row-level security alone hides them.
        seen = session.execute(
            text(f"SELECT count(*) FROM {TABLE} WHERE notification_id = :id"), {"id": row}
        ).scalar_one()
        assert seen == 0
        assert list_events(session, mine, row) == []
    refused = pytest.raises(ProgrammingError, match="row-level security")
    with refused, transaction(theirs) as session:
        append_events(session, mine, [NewEvent(row, "retried")])


@pytest.mark.parametrize(
    "statement",
    [
        f"UPDATE {TABLE} SET kind = 'sent' WHERE notification_id = :id",
        f"DELETE FROM {TABLE} WHERE notification_id = :id",
    ],
)
def test_enterprise_transactions_cannot_change_or_remove_events(stack, statement):
    enterprise = uuid.uuid4()
    row = insert_notification(enterprise).notification_id
    refused = pytest.raises(ProgrammingError, match="permission denied")
    with refused, transaction(enterprise) as session:
        session.execute(text(statement), {"id": row})
    with transaction(enterprise) as session:
        assert [e.kind for e in list_events(session, enterprise, row)] == ["accepted"]


def test_a_kind_outside_the_vocabulary_format_is_refused(stack):
    enterprise = uuid.uuid4()
    row = insert_notification(enterprise).notification_id
    with pytest.raises(DBAPIError, match="kind_format"), transaction(enterprise) as session:
        append_events(session, enterprise, [NewEvent(row, "Sent; DROP")])


def test_details_and_excerpts_are_bounded(stack):
    enterprise = uuid.uuid4()
    row = insert_notification(enterprise).notification_id
    huge = {"body": "x" * (MAX_DETAIL_CHARS * 2)}
    with transaction(enterprise) as session:
        append_events(session, enterprise, [NewEvent(row, "delivery.message.failed", 1, huge)])
    with transaction(enterprise) as session:
        [_, event] = list_events(session, enterprise, row)
    assert event.detail is not None and event.detail["truncated"] is True
    assert len(event.detail["excerpt"]) < MAX_DETAIL_CHARS
    assert event.attempt == 1

    long = excerpt({"message": "y" * 5000})
    assert long is not None and len(long) == EXCERPT_CHARS and long.endswith("…")
    assert excerpt({"a": 1}) == '{"a":1}'
    assert excerpt(None) is None


def _kinds(enterprise: uuid.UUID, notification_id: int) -> list[tuple[str, int | None]]:
    with transaction(enterprise) as session:
        return [(e.kind, e.attempt) for e in list_events(session, enterprise, notification_id)]


def _last(enterprise: uuid.UUID, notification_id: int) -> dict[str, Any]:
    with transaction(enterprise) as session:
        detail = list_events(session, enterprise, notification_id)[-1].detail
    assert detail is not None
    return detail


def test_each_attempt_is_on_the_timeline_with_its_answer(stack):
    enterprise = uuid.uuid4()
    row = insert_notification(enterprise).notification_id
    novu_503 = {"code": "novu_unavailable", "message": "Novu HTTP 503: down", "statusCode": 503}
    with transaction(enterprise) as session:
        assert claim(session, row, enterprise) is not None
        assert record(
            session,
            enterprise,
            row,
            1,
            S.PENDING,
            error={**novu_503, "novu": {"message": "down " * 400}},
            retry_in=0.0,
            outcome_unknown=True,
            call={"durationMs": 12},
        )
    failed = _last(enterprise, row)
    assert failed["statusCode"] == 503 and failed["code"] == "novu_unavailable"
    assert failed["answer"].startswith('{"message":"down down') and len(failed["answer"]) == 1024
    assert failed["durationMs"] == 12 and failed["retryInSeconds"] == 0.0
    assert failed["outcomeUnknown"] is True

    answer = {"statusCode": 201, "answer": '{"acknowledged":true}', "durationMs": 3}
    with transaction(enterprise) as session:
        assert claim(session, row, enterprise) is not None
        assert record(session, enterprise, row, 2, S.SENT, call=answer)
    assert _kinds(enterprise, row) == [
        ("accepted", None),
        ("attempt.started", 1),
        ("attempt.failed", 1),
        ("attempt.started", 2),
        ("sent", 2),
    ]
    assert _last(enterprise, row) == answer
    with transaction(enterprise) as session:
        started = list_events(session, enterprise, row)[1].detail
    assert started is not None and started["worker"]["pid"] > 0


def test_an_attempt_given_back_or_deferred_is_attempt_deferred(stack):
    enterprise = uuid.uuid4()
    row = insert_notification(enterprise).notification_id
    throttled = {"code": "novu_rate_limited", "message": "Novu HTTP 429", "statusCode": 429}
    with transaction(enterprise) as session:
        claim(session, row, enterprise)
        record(
            session,
            enterprise,
            row,
            1,
            S.PENDING,
            error=throttled,
            retry_in=0.0,
            attempt_used=False,
        )
        deferred = defer_pending(
            session,
            enterprise_id=enterprise,
            notification_ids=[row],
            delay=1.5,
            by_message=True,
            code="render_deferred",
            why="wait for their enterprise's renders",
        )
    assert deferred == [row]
    assert _kinds(enterprise, row)[1:] == [
        ("attempt.started", 1),
        ("attempt.deferred", 1),
        ("attempt.deferred", 1),  # the same attempt, still not made
    ]
    assert _last(enterprise, row) == {
        "code": "render_deferred",
        "message": "wait for their enterprise's renders",
        "delaySeconds": 1.5,
    }


def test_a_stale_attempt_records_no_event(stack):
    enterprise = uuid.uuid4()
    row = insert_notification(enterprise).notification_id
    with transaction(enterprise) as session:
        claim(session, row, enterprise)
        assert not record(session, enterprise, row, 7, S.SENT)
    assert [kind for kind, _ in _kinds(enterprise, row)] == ["accepted", "attempt.started"]


def test_cancel_retract_and_retry_are_on_the_timeline(stack):
    enterprise = uuid.uuid4()
    pending = insert_notification(enterprise).notification_id
    with transaction(enterprise) as session:
        result, _ = NotificationService(session).cancel_notification(
            pending,
            enterprise,
            reason="typo",
            cancel_at_novu=lambda _: pytest.fail("a PENDING row never asks Novu"),
            commit=lambda: None,  # the test's one transaction
            hold_seconds=5,
        )
    assert result is CancelResult.RETRACTED
    assert _kinds(enterprise, pending)[1:] == [("cancel.requested", None), ("retracted", None)]
    assert _last(enterprise, pending) == {"reason": "typo"}

    failed = insert_notification(enterprise).notification_id
    with transaction(enterprise) as session:
        claim(session, failed, enterprise)
        record(session, enterprise, failed, 1, S.FAILED, error={"code": "novu_rejected"})
    with transaction(enterprise) as session:
        service = NotificationService(session)
        result, _ = service.cancel_notification(
            failed,
            enterprise,
            reason=None,
            cancel_at_novu=lambda _: pytest.fail("a FAILED row never asks Novu"),
            commit=lambda: None,  # the test's one transaction
            hold_seconds=5,
        )
        assert result is CancelResult.INVALID_STATE
        moved, _ = service.retry_notification(failed, enterprise)
        assert moved
    assert [kind for kind, _ in _kinds(enterprise, failed)][-4:] == [
        "failed",
        "cancel.requested",
        "cancel.refused",
        "retried",
    ]
    with transaction(enterprise) as session:
        refused = list_events(session, enterprise, failed)[-2].detail
    assert refused == {"code": "invalid_state", "status": "FAILED"}


def test_a_sent_row_novu_already_delivered_is_cancel_refused(stack):
    enterprise = uuid.uuid4()
    row = insert_notification(enterprise).notification_id
    with transaction(enterprise) as session:
        claim(session, row, enterprise)
        record(session, enterprise, row, 1, S.SENT)
    with transaction(enterprise) as session:
        result, _ = NotificationService(session).cancel_notification(
            row,
            enterprise,
            reason=None,
            cancel_at_novu=lambda _: False,
            commit=lambda: None,  # the test's one transaction
            hold_seconds=5,
        )
    assert result is CancelResult.ALREADY_DELIVERED
    assert [kind for kind, _ in _kinds(enterprise, row)][-2:] == [
        "cancel.requested",
        "cancel.refused",
    ]
    assert _last(enterprise, row) == {"code": "already_delivered", "status": "SENT"}


def test_a_cancel_novu_could_not_answer_is_refused_and_the_held_one_unknown(stack):
    enterprise = uuid.uuid4()
    sent = insert_notification(enterprise).notification_id
    unknown = insert_notification(enterprise).notification_id
    with transaction(enterprise) as session:
        claim(session, sent, enterprise)
        record(session, enterprise, sent, 1, S.SENT)
        claim(session, unknown, enterprise)
        lost = {"code": "novu_unavailable", "message": "no answer"}
        # Its retry rides a countdown message, as a short retry does: beat does not hand it to
        # the suite's running worker (the reconciler would, REDELIVER_AFTER_SECONDS later).
        record(
            session,
            enterprise,
            unknown,
            1,
            S.PENDING,
            error=lost,
            outcome_unknown=True,
            retry_in=0.0,
            by_message=True,
        )

    def unreachable(_transaction_id: str) -> bool:
        raise NovuRetryableError(None, "connection refused")

    for row, expected in ((sent, "novu_unavailable"), (unknown, "delivery_unknown")):
        with transaction(enterprise) as session:
            service = NotificationService(session)
            try:
                result, _ = service.cancel_notification(
                    row,
                    enterprise,
                    reason=None,
                    cancel_at_novu=unreachable,
                    commit=lambda: None,  # the test's one transaction
                    hold_seconds=5,
                )
            except NovuRetryableError:
                result = None
        assert result is (None if row == sent else CancelResult.DELIVERY_UNKNOWN)
        # The cancel's own events (a running worker may claim the row, PENDING again, after).
        cancels = [kind for kind, _ in _kinds(enterprise, row) if kind.startswith("cancel.")]
        assert cancels[-2:] == ["cancel.requested", "cancel.refused"]
        assert _last(enterprise, row)["code"] == expected


def test_the_reconciler_records_expired_leases(stack):
    enterprise = uuid.uuid4()
    again = insert_notification(enterprise).notification_id
    last = insert_notification(enterprise).notification_id
    with transaction(enterprise) as session:
        claim(session, again, enterprise, lease_seconds=0)
        claim(session, last, enterprise, lease_seconds=0)
    with transaction() as session:  # the reconciler's system transaction
        session.execute(update(Notification).where(Notification.id == last).values(attempts=4))
        requeued, failed = transitions.expire_leases(session, max_attempts=4, limit=10_000)
    assert (again, enterprise) in requeued and (last, enterprise) in failed
    assert _kinds(enterprise, again)[-1] == ("lease.expired", 1)
    assert _last(enterprise, again) == {"outcomeUnknown": True}
    assert _kinds(enterprise, last)[-1] == ("failed", 4)
    assert _last(enterprise, last)["code"] == "attempts_exhausted"
