"""The state machine's transitions against the real database: only one actor ever wins."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest

from shared.db.enums import NotificationStatus as S
from shared.db.models import Notification
from shared.db.session import transaction
from shared.notifications import transitions
from shared.notifications.service import NotificationService
from tests.rows import claim, insert_notification, record


@pytest.fixture()
def pending(stack):
    enterprise = uuid.uuid4()
    return insert_notification(enterprise).notification_id, enterprise


def _claim(nid, enterprise):
    with transaction() as session:
        return claim(session, nid, enterprise, lease_seconds=30)


def test_only_one_claim_wins(pending):
    nid, enterprise = pending
    first = _claim(nid, enterprise)
    second = _claim(nid, enterprise)
    assert first is not None and first.attempts == 1
    assert second is None
    with transaction() as session:
        assert session.get(Notification, nid).notification_status is S.PROCESSING


def test_claim_is_scoped_to_the_enterprise(pending):
    nid, _ = pending
    assert _claim(nid, uuid.uuid4()) is None


def test_claim_refuses_a_row_that_is_not_due(pending):
    nid, enterprise = pending
    with transaction() as session:
        claimed = claim(session, nid, enterprise, lease_seconds=30)
        assert claimed is not None
        record(session, enterprise, nid, 1, S.PENDING, error={}, retry_in=60, by_message=False)
    assert _claim(nid, enterprise) is None


def test_cancel_after_claim_loses(pending):
    nid, enterprise = pending
    assert _claim(nid, enterprise) is not None
    with transaction() as session:
        assert (
            transitions.retract_pending(
                session, notification_id=nid, enterprise_id=enterprise, reason=None
            )
            is None
        )


def test_claim_after_cancel_loses(pending):
    nid, enterprise = pending
    with transaction() as session:
        assert (
            transitions.retract_pending(
                session, notification_id=nid, enterprise_id=enterprise, reason="stop"
            )
            is not None
        )
    assert _claim(nid, enterprise) is None


def test_a_stale_attempt_cannot_record_an_outcome(pending):
    nid, enterprise = pending
    assert _claim(nid, enterprise) is not None
    with transaction() as session:  # the lease ran out and the reconciler requeued it
        session.execute(
            transitions.update(transitions.N)
            .where(transitions.N.id == nid)
            .values(locked_until=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1))
        )
        requeued, failed = transitions.expire_leases(session, max_attempts=5, limit=10)
    assert (nid, enterprise) in requeued and failed == []
    second = _claim(nid, enterprise)
    assert second is not None and second.attempts == 2
    with transaction() as session:
        assert not record(session, enterprise, nid, 1, S.SENT)
        assert record(session, enterprise, nid, 2, S.SENT)


def test_expired_lease_on_the_last_attempt_fails_the_row(pending):
    nid, enterprise = pending
    assert _claim(nid, enterprise) is not None
    with transaction() as session:
        session.execute(
            transitions.update(transitions.N)
            .where(transitions.N.id == nid)
            .values(locked_until=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1))
        )
        requeued, failed = transitions.expire_leases(session, max_attempts=1, limit=10)
    assert failed == [(nid, enterprise)] and (nid, enterprise) not in requeued
    with transaction() as session:
        row = NotificationService(session).get_notification(nid, enterprise)
        assert row is not None and row.notification_status is S.FAILED
        assert row.error_details["code"] == "attempts_exhausted"


def test_sent_cannot_go_back_to_pending_or_failed(pending):
    nid, enterprise = pending
    assert _claim(nid, enterprise) is not None
    with transaction() as session:
        assert record(session, enterprise, nid, 1, S.SENT)
        assert not record(session, enterprise, nid, 1, S.FAILED, error={})
        assert (
            transitions.retract_pending(
                session, notification_id=nid, enterprise_id=enterprise, reason=None
            )
            is None
        )
        assert (
            transitions.requeue_failed(session, notification_id=nid, enterprise_id=enterprise)
            is None
        )
