"""Property test of the notification state machine against the real database.

Hypothesis interleaves every actor's transition on a few notifications: the worker's claim,
recording SENT / FAILED / a retry (record_outcomes, its answer known or lost) with the current
or a stale attempt, cancels (retract_pending, retract_sent, and
NotificationService.cancel_notification with Novu saying yes or no), the retry API
(requeue_failed, NotificationService.retry_notification), and the reconciler's
expire_leases after a worker "died". Each step runs in one transaction that first
locks the row, so what the step saw before and after is exact:

- a transition that reports failure left the row unchanged (a stale attempt never writes; a
  cancel Novu did not confirm touches only enqueued_at and updated_at);
- a transition that reports success made exactly its edge of the state machine, and it
  succeeds exactly when its precondition held;
- across all steps: the status is one of the five, RETRACTED is never left, SENT is left only
  for RETRACTED, and attempts only decrease through requeue_failed (reset to 0).

A worker and beat of another test may share the database; they use the same transitions, so a
change made between two steps is checked against the same rules and then adopted.
"""

from __future__ import annotations

import datetime as dt
import itertools
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    invariant,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from shared.db.enums import NotificationStatus as S
from shared.db.models import Notification as N
from shared.db.session import transaction
from shared.notifications import transitions
from shared.notifications.service import CancelResult, NotificationService
from tests.rows import claim, insert_notification, record

MAX_ATTEMPTS = 3
LEASE_SECONDS = 30
STATUSES = frozenset(S)
# Every column a transition may write: "unchanged" means all of them are.
SNAPSHOT = (
    N.notification_status,
    N.attempts,
    N.locked_until,
    N.next_attempt_at,
    N.enqueued_at,
    N.processed_at,
    N.retracted_at,
    N.retraction_reason,
    N.error_details,
    N.transaction_id,
    N.updated_at,
    N.outcome_unknown_at,
)
# What a cancel Novu did not confirm may still touch: the hold it took and gave back.
CANCEL_MAY_TOUCH = (SNAPSHOT.index(N.enqueued_at), SNAPSHOT.index(N.updated_at))
# The edge each transition makes when it succeeds.
EDGES: dict[str, set[tuple[S, S]]] = {
    "claim": {(S.PENDING, S.PROCESSING)},
    "mark_sent": {(S.PROCESSING, S.SENT)},
    "mark_failed": {(S.PROCESSING, S.FAILED)},
    "schedule_retry": {(S.PROCESSING, S.PENDING)},
    "retract_pending": {(S.PENDING, S.RETRACTED)},
    "retract_sent": {(S.SENT, S.RETRACTED)},
    "requeue_failed": {(S.FAILED, S.PENDING)},
    "expire_leases": {(S.PROCESSING, S.PENDING), (S.PROCESSING, S.FAILED)},
    "cancel": {(S.PENDING, S.RETRACTED), (S.SENT, S.RETRACTED)},
    "retry": {(S.FAILED, S.PENDING)},
}
RESETS_ATTEMPTS = {"requeue_failed", "retry"}


@dataclass(frozen=True)
class Row:
    status: S
    attempts: int
    values: tuple[Any, ...]
    now: dt.datetime
    next_attempt_at: dt.datetime | None
    outcome_unknown_at: dt.datetime | None

    @property
    def due(self) -> bool:
        return self.next_attempt_at is None or self.next_attempt_at <= self.now

    @property
    def unknown(self) -> bool:
        """An attempt's answer was lost: Novu may hold it."""
        return self.outcome_unknown_at is not None


@dataclass
class Tracked:
    """What the test last saw of one notification."""

    notification_id: int
    enterprise_id: uuid.UUID
    last: Row
    history: list[S] = field(default_factory=list)


def _read(session: Session, notification_id: int, enterprise_id: uuid.UUID, *, lock: bool) -> Row:
    stmt = select(*SNAPSHOT, func.now()).where(
        N.id == notification_id, N.enterprise_id == enterprise_id
    )
    values = session.execute(stmt.with_for_update() if lock else stmt).one()
    return Row(
        status=values[0],
        attempts=values[1],
        values=tuple(values[:-1]),
        now=values[-1],
        next_attempt_at=values[3],
        outcome_unknown_at=values[11],
    )


def _without(values: tuple[Any, ...], positions: tuple[int, ...]) -> tuple[Any, ...]:
    return tuple(value for index, value in enumerate(values) if index not in positions)


def _check_edge(before: Row, after: Row, *, may_reset: bool, what: str) -> None:
    """The rules every change of a row obeys, whoever made it."""
    assert after.status in STATUSES, what
    if before.status is S.RETRACTED:
        assert after.status is S.RETRACTED, f"{what}: left RETRACTED for {after.status}"
    if before.status is S.SENT:
        assert after.status in (S.SENT, S.RETRACTED), f"{what}: left SENT for {after.status}"
    if not may_reset:
        assert after.attempts >= before.attempts, f"{what}: attempts went down"


class NotificationMachine(RuleBasedStateMachine):
    notifications = Bundle("notifications")

    def __init__(self) -> None:
        super().__init__()
        self.enterprise_id = uuid.uuid4()
        self.tracked: list[Tracked] = []

    @rule(target=notifications)
    def create(self) -> Tracked:
        with transaction() as session:
            row = insert_notification(
                self.enterprise_id,
                session=session,
                # No such workflow: should a test worker pick it up, it fails it at once.
                workflow_key="state-machine-probe",
                payload={},
                recipients=["probe"],
            )
            first = _read(session, row.notification_id, self.enterprise_id, lock=False)
            assert first.status is S.PENDING and first.attempts == 0
        target = Tracked(
            row.notification_id, self.enterprise_id, last=first, history=[first.status]
        )
        self.tracked.append(target)
        return target

    def _step(
        self,
        target: Tracked,
        name: str,
        act: Callable[[Session, Row], bool],
        expected: Callable[[Row], bool],
    ) -> None:
        """Lock the row, act, re-read, and check what the transition did (see the docstring)."""
        with transaction() as session:
            before = _read(session, *self._key(target), lock=True)
            if before.values != target.last.values:  # another actor moved it between steps
                _check_edge(target.last, before, may_reset=False, what="between steps")
                target.history.append(before.status)
            succeeded = act(session, before)
            after = _read(session, *self._key(target), lock=False)
        what = f"{name} from {before.status} (attempts {before.attempts})"
        assert succeeded == expected(before), f"{what}: reported {succeeded}"
        if succeeded:
            assert (before.status, after.status) in EDGES[name], f"{what} -> {after.status}"
            if name == "claim":
                assert after.attempts == before.attempts + 1, what
            elif name in RESETS_ATTEMPTS:
                assert after.attempts == 0, what
            else:
                assert after.attempts == before.attempts, what
        else:
            touched = CANCEL_MAY_TOUCH if name == "cancel" else ()
            assert _without(after.values, touched) == _without(before.values, touched), (
                f"{what}: failed but changed the row"
            )
        _check_edge(before, after, may_reset=name in RESETS_ATTEMPTS, what=what)
        target.last = after
        target.history.append(after.status)

    @staticmethod
    def _key(target: Tracked) -> tuple[int, uuid.UUID]:
        return target.notification_id, target.enterprise_id

    @staticmethod
    def _outcome_key(target: Tracked) -> tuple[uuid.UUID, int]:
        return target.enterprise_id, target.notification_id

    def _ids(self, target: Tracked) -> dict[str, Any]:
        return {"notification_id": target.notification_id, "enterprise_id": target.enterprise_id}

    @staticmethod
    def _attempt(row: Row, stale: bool) -> int:
        return row.attempts - 1 if stale else row.attempts

    @rule(notification=notifications)
    def claim(self, notification: Tracked) -> None:
        def act(session: Session, row: Row) -> bool:
            claimed = claim(session, *self._key(notification), lease_seconds=LEASE_SECONDS)
            return claimed is not None

        self._step(notification, "claim", act, lambda row: row.status is S.PENDING and row.due)

    @rule(notification=notifications, stale=st.booleans())
    def mark_sent(self, notification: Tracked, stale: bool) -> None:
        def act(session: Session, row: Row) -> bool:
            return record(
                session, *self._outcome_key(notification), self._attempt(row, stale), S.SENT
            )

        self._step(
            notification, "mark_sent", act, lambda row: row.status is S.PROCESSING and not stale
        )

    @rule(notification=notifications, stale=st.booleans())
    def mark_failed(self, notification: Tracked, stale: bool) -> None:
        def act(session: Session, row: Row) -> bool:
            return record(
                session,
                *self._outcome_key(notification),
                self._attempt(row, stale),
                S.FAILED,
                error={"code": "probe"},
            )

        self._step(
            notification, "mark_failed", act, lambda row: row.status is S.PROCESSING and not stale
        )

    @rule(
        notification=notifications,
        stale=st.booleans(),
        delay=st.sampled_from([0.0, 3600.0]),
        published=st.booleans(),
        lost=st.booleans(),
    )
    def schedule_retry(
        self, notification: Tracked, stale: bool, delay: float, published: bool, lost: bool
    ) -> None:
        def act(session: Session, row: Row) -> bool:
            return record(
                session,
                *self._outcome_key(notification),
                self._attempt(row, stale),
                S.PENDING,
                error={"code": "probe"},
                retry_in=delay,
                by_message=published,
                outcome_unknown=lost,
            )

        self._step(
            notification,
            "schedule_retry",
            act,
            lambda row: row.status is S.PROCESSING and not stale,
        )

    @rule(notification=notifications)
    def retract_pending(self, notification: Tracked) -> None:
        def act(session: Session, row: Row) -> bool:
            return (
                transitions.retract_pending(session, **self._ids(notification), reason="probe")
                is not None
            )

        self._step(
            notification,
            "retract_pending",
            act,
            lambda row: row.status is S.PENDING and not row.unknown,
        )

    @rule(notification=notifications)
    def retract_sent(self, notification: Tracked) -> None:
        def act(session: Session, row: Row) -> bool:
            return (
                transitions.retract_sent(session, **self._ids(notification), reason="probe")
                is not None
            )

        self._step(notification, "retract_sent", act, lambda row: row.status is S.SENT)

    @rule(notification=notifications, novu_cancels=st.booleans())
    def cancel(self, notification: Tracked, novu_cancels: bool) -> None:
        """The cancel API: NotificationService.cancel_notification."""

        def asks_novu(row: Row) -> bool:
            return row.status is S.SENT or (row.status is S.PENDING and row.unknown)

        def act(session: Session, row: Row) -> bool:
            outcome, _ = NotificationService(session).cancel_notification(
                notification.notification_id,
                notification.enterprise_id,
                reason="probe",
                cancel_at_novu=lambda _transaction_id: novu_cancels,
                # The step's one transaction: the hold and its end are checked together.
                commit=lambda: None,
                hold_seconds=LEASE_SECONDS,
            )
            unconfirmed = CancelResult.DELIVERY_UNKNOWN if row.unknown else CancelResult.RETRACTED
            expected_outcome = {
                S.PENDING: CancelResult.RETRACTED if novu_cancels else unconfirmed,
                S.SENT: (
                    CancelResult.RETRACTED if novu_cancels else CancelResult.ALREADY_DELIVERED
                ),
                S.RETRACTED: CancelResult.ALREADY_RETRACTED,
                S.PROCESSING: CancelResult.INVALID_STATE,
                S.FAILED: CancelResult.INVALID_STATE,
            }[row.status]
            assert outcome is expected_outcome, f"cancel from {row.status}: {outcome}"
            return outcome is CancelResult.RETRACTED

        self._step(
            notification,
            "cancel",
            act,
            lambda row: (
                (row.status is S.PENDING and not row.unknown) or (asks_novu(row) and novu_cancels)
            ),
        )

    @rule(notification=notifications)
    def requeue_failed(self, notification: Tracked) -> None:
        def act(session: Session, row: Row) -> bool:
            return transitions.requeue_failed(session, **self._ids(notification)) is not None

        self._step(notification, "requeue_failed", act, lambda row: row.status is S.FAILED)

    @rule(notification=notifications)
    def retry(self, notification: Tracked) -> None:
        """The retry API: NotificationService.retry_notification."""

        def act(session: Session, row: Row) -> bool:
            moved, found = NotificationService(session).retry_notification(
                notification.notification_id, notification.enterprise_id
            )
            assert found is not None
            return moved

        self._step(notification, "retry", act, lambda row: row.status is S.FAILED)

    @rule(notification=notifications)
    def expire_leases(self, notification: Tracked) -> None:
        """The worker holding the row died: its lease runs out and the reconciler runs."""

        def act(session: Session, row: Row) -> bool:
            session.execute(
                update(N)
                .where(
                    N.id == notification.notification_id,
                    N.enterprise_id == notification.enterprise_id,
                    N.notification_status == S.PROCESSING,
                )
                .values(locked_until=func.now() - dt.timedelta(seconds=1))
            )
            requeued, _ = transitions.expire_leases(
                session, max_attempts=MAX_ATTEMPTS, limit=10_000
            )
            after = _read(session, *self._key(notification), lock=False)
            if row.status is S.PROCESSING:
                expected = S.PENDING if row.attempts < MAX_ATTEMPTS else S.FAILED
                assert after.status is expected, f"expired lease -> {after.status}"
                assert ((notification.notification_id, notification.enterprise_id) in requeued) == (
                    expected is S.PENDING
                )
            return after.status is not row.status

        self._step(notification, "expire_leases", act, lambda row: row.status is S.PROCESSING)

    @invariant()
    def histories_are_legal(self) -> None:
        for notification in self.tracked:
            history = notification.history
            assert all(status in STATUSES for status in history)
            if S.RETRACTED in history:
                first = history.index(S.RETRACTED)
                assert set(history[first:]) == {S.RETRACTED}, f"after RETRACTED: {history}"
            for before, after in itertools.pairwise(history):
                if before is S.SENT:
                    assert after in (S.SENT, S.RETRACTED), f"left SENT: {history}"


@pytest.mark.timeout(120)
def test_any_interleaving_of_transitions_is_legal(stack: Any) -> None:
    run_state_machine_as_test(
        NotificationMachine,
        settings=settings(
            max_examples=60,
            stateful_step_count=30,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
