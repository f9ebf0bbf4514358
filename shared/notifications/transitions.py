"""The transitions of cancel, retry and the reconciler, one conditional UPDATE each.

A cancel of a row whose outcome is unknown (Novu may hold it) holds the row while it asks
Novu (`hold_for_cancel`), then retracts or releases it (docs/architecture.md, "Cancel").

Each transition appends its timeline event (timeline.py) in the caller's transaction:
`retracted`, `retried`, and the reconciler's `lease.expired` and `failed`; the cancel's own
events (`cancel.requested`, `cancel.refused`) are the service's.

Every transition names the state it expects, so two actors (a worker and a cancel, two
workers, a worker and the reconciler) can never both win (docs/architecture.md, guarantee 2).
The delivery path's own statements (insert, claim, record an attempt) are in `repository`.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session

from shared.db.enums import NotificationStatus as S
from shared.db.models import Notification
from shared.notifications.timeline import Kind, NewEvent, append_events, append_events_across

N = Notification

LEASE_LOST_ON_LAST_ATTEMPT = "worker lease expired on the last attempt"


# ORM UPDATE … RETURNING refreshes rows already in the session instead of keeping stale copies.
_RETURNING_OPTIONS = {"synchronize_session": False, "populate_existing": True}


def _one_or_none(session: Session, stmt: Any) -> Notification | None:
    return session.scalars(stmt, execution_options=_RETURNING_OPTIONS).one_or_none()


def _due() -> Any:
    now = func.now()
    return and_(
        or_(N.scheduled_for.is_(None), N.scheduled_for <= now),
        or_(N.next_attempt_at.is_(None), N.next_attempt_at <= now),
    )


def _update_in_state(notification_id: int, enterprise_id: uuid.UUID, expected: S) -> Any:
    """An UPDATE of one notification of the enterprise that applies only while it is in the
    `expected` state: the conditional transition every actor races with."""
    return update(N).where(
        N.id == notification_id,
        N.enterprise_id == enterprise_id,
        N.notification_status == expected,
    )


def retract_pending(
    session: Session, *, notification_id: int, enterprise_id: uuid.UUID, reason: str | None
) -> Notification | None:
    """PENDING → RETRACTED for a row no attempt of which may have reached Novu; the worker's
    claim will then find nothing to send. A row whose outcome is unknown is not retracted
    here (None): Novu may hold it, and only Novu's confirmed cancel may retract it
    (`hold_for_cancel`)."""
    return _retract(
        session, notification_id, enterprise_id, S.PENDING, reason, N.outcome_unknown_at.is_(None)
    )


def retract_sent(
    session: Session, *, notification_id: int, enterprise_id: uuid.UUID, reason: str | None
) -> Notification | None:
    """SENT → RETRACTED, after Novu confirmed it cancelled the pending steps."""
    return _retract(session, notification_id, enterprise_id, S.SENT, reason)


def _retract(
    session: Session,
    notification_id: int,
    enterprise_id: uuid.UUID,
    expected: S,
    reason: str | None,
    *conditions: Any,
    **values: Any,
) -> Notification | None:
    stmt = (
        _update_in_state(notification_id, enterprise_id, expected)
        .where(*conditions)
        .values(
            notification_status=S.RETRACTED,
            retracted_at=func.now(),
            retraction_reason=reason,
            locked_until=None,
            updated_at=func.now(),
            **values,
        )
        .returning(N)
    )
    row = _one_or_none(session, stmt)
    if row is not None:
        event = NewEvent(notification_id, Kind.RETRACTED, detail={"reason": reason})
        append_events(session, enterprise_id, [event])
    return row


@dataclass(frozen=True, slots=True)
class CancelHold:
    """A PENDING row of unknown outcome held by a cancel while Novu is asked: PROCESSING under
    the attempt `attempt`, so that no worker claims (and sends) it meanwhile."""

    transaction_id: str
    attempt: int


def hold_for_cancel(
    session: Session, *, notification_id: int, enterprise_id: uuid.UUID, hold_seconds: float
) -> CancelHold | None:
    """PENDING (outcome unknown) → PROCESSING under a lease of `hold_seconds`, as a worker's
    claim takes it (attempt + 1, so a worker whose lease ran out cannot record over the hold,
    guarantee 3), but without sending anything. None when the row is not such a row.

    Why no path can both send and retract: while held, the worker's claim (PENDING only)
    skips the row, and the hold ends only by `retract_held` or `release_hold`, each fenced by
    the hold's attempt; a hold whose lease ran out (the API process died) is taken back by the
    reconciler like a dead worker's, and then neither fenced update applies."""
    stmt = (
        _update_in_state(notification_id, enterprise_id, S.PENDING)
        .where(N.outcome_unknown_at.is_not(None))
        .values(
            notification_status=S.PROCESSING,
            attempts=N.attempts + 1,
            locked_until=func.now() + dt.timedelta(seconds=hold_seconds),
            updated_at=func.now(),
        )
        .returning(N.transaction_id, N.attempts)
    )
    row = session.execute(stmt, execution_options={"synchronize_session": False}).one_or_none()
    return None if row is None else CancelHold(row.transaction_id, row.attempts)


def retract_held(
    session: Session,
    *,
    notification_id: int,
    enterprise_id: uuid.UUID,
    hold: CancelHold,
    reason: str | None,
) -> Notification | None:
    """Held → RETRACTED, after Novu confirmed it cancelled the transaction, the hold's attempt
    given back (nothing was sent); None when the hold was lost (its lease ran out first)."""
    return _retract(
        session,
        notification_id,
        enterprise_id,
        S.PROCESSING,
        reason,
        N.attempts == hold.attempt,
        attempts=N.attempts - 1,
    )


def release_hold(
    session: Session, *, notification_id: int, enterprise_id: uuid.UUID, hold: CancelHold
) -> bool:
    """Held → PENDING as it was, the hold's attempt given back (Novu did not confirm the
    cancel): delivered as usual. enqueued_at is cleared, so beat publishes it again when due
    (its message may have been skipped meanwhile). False when the hold was lost."""
    stmt = (
        _update_in_state(notification_id, enterprise_id, S.PROCESSING)
        .where(N.attempts == hold.attempt)
        .values(
            notification_status=S.PENDING,
            attempts=N.attempts - 1,
            locked_until=None,
            enqueued_at=None,
            updated_at=func.now(),
        )
        .returning(N.id)
    )
    released = session.execute(stmt, execution_options={"synchronize_session": False})
    return released.one_or_none() is not None


def requeue_failed(
    session: Session, *, notification_id: int, enterprise_id: uuid.UUID
) -> Notification | None:
    """FAILED → PENDING (the retry API), with a fresh attempt budget."""
    stmt = (
        _update_in_state(notification_id, enterprise_id, S.FAILED)
        .values(
            notification_status=S.PENDING,
            attempts=0,
            next_attempt_at=None,
            processed_at=None,
            enqueued_at=func.now(),
            updated_at=func.now(),
        )
        .returning(N)
    )
    row = _one_or_none(session, stmt)
    if row is not None:
        append_events(session, enterprise_id, [NewEvent(notification_id, Kind.RETRIED)])
    return row


# (notification id, enterprise id): what a deliver message carries.
Target = tuple[int, uuid.UUID]


def _targets(rows: Sequence[Any]) -> list[Target]:
    return [(row.id, row.enterprise_id) for row in rows]


def by_enterprise(targets: Iterable[Target]) -> dict[uuid.UUID, list[int]]:
    """The targets' notification ids, grouped by enterprise."""
    grouped: dict[uuid.UUID, list[int]] = {}
    for notification_id, enterprise_id in targets:
        grouped.setdefault(enterprise_id, []).append(notification_id)
    return grouped


def _lock_batch(conditions: tuple[Any, ...], *, order_by: Any, limit: int) -> Any:
    """The ids of up to `limit` rows meeting `conditions`, locked for this transaction; rows
    another reconciler holds are skipped, so two beats running at once split the work."""
    return (
        select(N.id)
        .where(*conditions)
        .order_by(order_by)
        .limit(limit)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )


def _unknown_since() -> Any:
    return func.coalesce(N.outcome_unknown_at, func.now())


def expire_leases(
    session: Session, *, max_attempts: int, limit: int
) -> tuple[list[Target], list[Target]]:
    """PROCESSING rows whose worker died: back to PENDING (to be published again), or FAILED
    when their attempts are spent. Returns the rows to publish and the rows failed. The
    worker may have died after its call reached Novu: either way the outcome is unknown. Each
    row gets a `lease.expired` or `failed` event (one statement for all)."""
    expired = _lock_batch(
        (N.notification_status == S.PROCESSING, N.locked_until < func.now()),
        order_by=N.locked_until,
        limit=limit,
    )
    failed = session.execute(
        update(N)
        .where(N.id.in_(expired), N.attempts >= max_attempts)
        .values(
            notification_status=S.FAILED,
            processed_at=func.now(),
            locked_until=None,
            outcome_unknown_at=_unknown_since(),
            error_details=func.jsonb_build_object(
                "code", "attempts_exhausted", "message", LEASE_LOST_ON_LAST_ATTEMPT
            ),
            updated_at=func.now(),
        )
        .returning(N.id, N.enterprise_id, N.attempts),
        execution_options={"synchronize_session": False},
    ).all()
    requeued = session.execute(
        update(N)
        .where(N.id.in_(expired), N.attempts < max_attempts)
        .values(
            notification_status=S.PENDING,
            locked_until=None,
            outcome_unknown_at=_unknown_since(),
            next_attempt_at=None,
            enqueued_at=func.now(),
            updated_at=func.now(),
        )
        .returning(N.id, N.enterprise_id, N.attempts),
        execution_options={"synchronize_session": False},
    ).all()
    unknown = {"outcomeUnknown": True}
    lost = {"code": "attempts_exhausted", "message": LEASE_LOST_ON_LAST_ATTEMPT, **unknown}
    append_events_across(
        session,
        [(r.enterprise_id, NewEvent(r.id, Kind.FAILED, r.attempts, lost)) for r in failed]
        + [
            (r.enterprise_id, NewEvent(r.id, Kind.LEASE_EXPIRED, r.attempts, unknown))
            for r in requeued
        ],
    )
    return _targets(requeued), _targets(failed)


def mark_enqueued(session: Session, *, stale_after_seconds: int | None, limit: int) -> list[Target]:
    """Due PENDING rows never published (scheduled, long retries, broker was down) and, when
    stale_after_seconds is given, rows published that long ago and still not consumed: stamp
    enqueued_at and return them for publishing."""
    unpublished: Any = N.enqueued_at.is_(None)
    if stale_after_seconds is not None:
        cutoff = func.now() - dt.timedelta(seconds=stale_after_seconds)
        unpublished = or_(unpublished, N.enqueued_at < cutoff)
    stale = _lock_batch(
        (N.notification_status == S.PENDING, unpublished, _due()), order_by=N.id, limit=limit
    )
    rows = session.execute(
        update(N)
        .where(N.id.in_(stale))
        .values(enqueued_at=func.now())
        .returning(N.id, N.enterprise_id),
        execution_options={"synchronize_session": False},
    ).all()
    return _targets(rows)


def clear_enqueued(session: Session, *, notification_ids: Sequence[int]) -> None:
    """Forget that these rows were published (the publish failed), so beat picks them up."""
    if notification_ids:
        session.execute(
            update(N)
            .where(N.id.in_(list(notification_ids)), N.notification_status == S.PENDING)
            .values(enqueued_at=None),
            execution_options={"synchronize_session": False},
        )
