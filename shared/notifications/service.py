"""NotificationService: reads, cancels and retries of notifications, scoped to one enterprise.

Services take a session and never commit: the request or task edge owns the transaction.
Recording and delivering notifications is intake's and delivery's (docs/architecture.md).
"""

from __future__ import annotations

import datetime as dt
import enum
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session, aliased

from shared.db.enums import NotificationStatus as S
from shared.db.models import Notification, NotificationKey
from shared.notifications import transitions
from shared.notifications.timeline import Kind, NewEvent, append_events
from shared.novu.errors import NovuError


class CancelResult(enum.StrEnum):
    """What a cancel did."""

    RETRACTED = "retracted"
    ALREADY_RETRACTED = "already_retracted"
    ALREADY_DELIVERED = "already_delivered"
    # An attempt's outcome is unknown (Novu may hold the event) and Novu did not confirm a
    # cancel, or could not be asked: the notification may be delivered.
    DELIVERY_UNKNOWN = "delivery_unknown"
    INVALID_STATE = "invalid_state"
    NOT_FOUND = "not_found"


@dataclass(frozen=True, slots=True)
class BatchSummary:
    """The notifications of one bulk request: how many, by status, and when they were
    recorded."""

    batch_id: uuid.UUID
    total: int
    by_status: dict[S, int]
    created_at: dt.datetime


class NotificationService:
    """Enterprise-scoped reads and writes of `ent_notification`."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def get_notification(
        self, notification_id: int, enterprise_id: uuid.UUID
    ) -> Notification | None:
        """One notification of this enterprise, or None (another enterprise's id is None too)."""
        return self.session.scalars(
            select(Notification).where(
                Notification.id == notification_id, Notification.enterprise_id == enterprise_id
            )
        ).one_or_none()

    def list_notifications(
        self,
        enterprise_id: uuid.UUID,
        *,
        status: S | None = None,
        workflow_key: str | None = None,
        tags: Sequence[str] | None = None,
        transaction_id: str | None = None,
        recipient: str | None = None,
        batch_id: uuid.UUID | None = None,
        created_after: dt.datetime | None = None,
        created_before: dt.datetime | None = None,
        limit: int = 100,
        before_id: int | None = None,
    ) -> Sequence[Notification]:
        """A keyset page, newest first: rows with id below `before_id` matching every filter
        given: carrying every tag of `tags`, `recipient` among their recipients (a
        subscriberId or topicKey), created at or after `created_after` and before
        `created_before`. Each filter has an index within the enterprise (migration 0010)."""
        stmt = select(Notification).where(Notification.enterprise_id == enterprise_id)
        if status is not None:
            stmt = stmt.where(Notification.notification_status == status)
        if workflow_key is not None:
            stmt = stmt.where(Notification.workflow_key == workflow_key)
        if tags:
            # The first tag's keys find the candidates; the rows must carry the others too.
            stmt = _with_key(stmt, enterprise_id, NotificationKey.of_tag(tags[0]))
            if len(tags) > 1:
                stmt = stmt.where(Notification.tags.contains(list(tags[1:])))
        if transaction_id is not None:
            stmt = stmt.where(Notification.transaction_id == transaction_id)
        if recipient is not None:
            stmt = _with_key(stmt, enterprise_id, NotificationKey.of_recipient(recipient))
        if batch_id is not None:
            stmt = stmt.where(Notification.batch_id == batch_id)
        if created_after is not None:
            stmt = stmt.where(Notification.created_at >= created_after)
        if created_before is not None:
            stmt = stmt.where(Notification.created_at < created_before)
        if before_id is not None:
            stmt = stmt.where(Notification.id < before_id)
        return self.session.scalars(stmt.order_by(Notification.id.desc()).limit(limit)).all()

    def batch_summary(self, batch_id: uuid.UUID, enterprise_id: uuid.UUID) -> BatchSummary | None:
        """Counts by status of the notifications one bulk request created in this enterprise;
        None when it has none (an unknown batch, or another enterprise's)."""
        rows = self.session.execute(
            select(
                Notification.notification_status, func.count(), func.min(Notification.created_at)
            )
            .where(Notification.enterprise_id == enterprise_id, Notification.batch_id == batch_id)
            .group_by(Notification.notification_status)
        ).all()
        if not rows:
            return None
        by_status = dict.fromkeys(S, 0) | {status: count for status, count, _ in rows}
        return BatchSummary(
            batch_id=batch_id,
            total=sum(by_status.values()),
            by_status=by_status,
            created_at=min(created for _, _, created in rows),
        )

    def cancel_notification(
        self,
        notification_id: int,
        enterprise_id: uuid.UUID,
        *,
        reason: str | None,
        cancel_at_novu: Callable[[str], bool],
        commit: Callable[[], None],
        hold_seconds: float,
    ) -> tuple[CancelResult, Notification | None]:
        """Retract a notification. PENDING that never reached Novu is retracted here; SENT, or
        PENDING whose outcome is unknown, only if Novu cancels the transaction
        (`cancel_at_novu(transaction_id)` answers True; it raises NovuError when Novu cannot
        be asked). `commit` is the edge's commit: a row of unknown outcome is held
        (`transitions.hold_for_cancel`, for `hold_seconds`) and committed before Novu is
        asked, so that no worker sends it meanwhile and no row lock is held across HTTP.

        The timeline gets `cancel.requested`, then `retracted` or `cancel.refused` (a cancel of
        a row already RETRACTED records nothing)."""
        requested = False
        for _ in range(3):  # the row may move under us; each pass re-reads it
            row = self.get_notification(notification_id, enterprise_id)
            if row is None:
                return CancelResult.NOT_FOUND, None
            if row.notification_status is S.RETRACTED:
                return CancelResult.ALREADY_RETRACTED, row
            if not requested:
                requested = True
                event = NewEvent(notification_id, Kind.CANCEL_REQUESTED, detail={"reason": reason})
                append_events(self.session, enterprise_id, [event])
            match row.notification_status:
                case S.PENDING if row.outcome_unknown_at is not None:
                    hold = transitions.hold_for_cancel(
                        self.session,
                        notification_id=notification_id,
                        enterprise_id=enterprise_id,
                        hold_seconds=hold_seconds,
                    )
                    if hold is not None:
                        commit()
                        return self._cancel_held(
                            notification_id, enterprise_id, hold, reason, cancel_at_novu, commit
                        )
                    done = None
                case S.PENDING:
                    # Conditional on the outcome still being known: an attempt whose answer is
                    # lost after this read makes it fail, and the next pass asks Novu.
                    done = transitions.retract_pending(
                        self.session,
                        notification_id=notification_id,
                        enterprise_id=enterprise_id,
                        reason=reason,
                    )
                case S.SENT:
                    transaction_id = row.transaction_id
                    commit()  # nothing of ours stays open while Novu answers
                    try:
                        cancelled = cancel_at_novu(transaction_id)
                    except NovuError:
                        self._refused(enterprise_id, row, "novu_unavailable")
                        commit()
                        raise
                    if not cancelled:
                        self._refused(enterprise_id, row, "already_delivered")
                        return CancelResult.ALREADY_DELIVERED, row
                    done = transitions.retract_sent(
                        self.session,
                        notification_id=notification_id,
                        enterprise_id=enterprise_id,
                        reason=reason,
                    )
                case _:
                    self._refused(enterprise_id, row, "invalid_state")
                    return CancelResult.INVALID_STATE, row
            if done is not None:
                return CancelResult.RETRACTED, done
            self.session.expire_all()
        row = self.get_notification(notification_id, enterprise_id)
        if row is not None:
            self._refused(enterprise_id, row, "invalid_state")
        return CancelResult.INVALID_STATE, row

    def _refused(self, enterprise_id: uuid.UUID, row: Notification, code: str) -> None:
        """The timeline's `cancel.refused`: why the cancel left the row as it is."""
        detail = {"code": code, "status": row.notification_status.value}
        event = NewEvent(row.id, Kind.CANCEL_REFUSED, detail=detail)
        append_events(self.session, enterprise_id, [event])

    def _cancel_held(
        self,
        notification_id: int,
        enterprise_id: uuid.UUID,
        hold: transitions.CancelHold,
        reason: str | None,
        cancel_at_novu: Callable[[str], bool],
        commit: Callable[[], None],
    ) -> tuple[CancelResult, Notification | None]:
        """Ask Novu to cancel a held row: RETRACTED only when Novu confirms; otherwise the row
        goes back to PENDING as it was (delivered as usual) and the delivery is unknown."""

        def release() -> None:
            transitions.release_hold(
                self.session,
                notification_id=notification_id,
                enterprise_id=enterprise_id,
                hold=hold,
            )

        try:
            cancelled = cancel_at_novu(hold.transaction_id)
        except NovuError:
            cancelled = False  # not reached, or no answer: nothing is confirmed
        except BaseException:
            release()
            commit()
            raise
        if cancelled:
            done = transitions.retract_held(
                self.session,
                notification_id=notification_id,
                enterprise_id=enterprise_id,
                hold=hold,
                reason=reason,
            )
            if done is not None:
                return CancelResult.RETRACTED, done
        else:
            release()
        # Not confirmed, or the hold ran out before Novu answered (the reconciler took the row
        # back, and a worker may send it again): what Novu will deliver is not known.
        row = self.get_notification(notification_id, enterprise_id)
        if row is not None:
            self._refused(enterprise_id, row, "delivery_unknown")
        return CancelResult.DELIVERY_UNKNOWN, row

    def retry_notification(
        self, notification_id: int, enterprise_id: uuid.UUID
    ) -> tuple[bool, Notification | None]:
        """FAILED → PENDING; (False, row) from another state, (False, None) if absent."""
        row = transitions.requeue_failed(
            self.session, notification_id=notification_id, enterprise_id=enterprise_id
        )
        if row is not None:
            return True, row
        return False, self.get_notification(notification_id, enterprise_id)


def _with_key(
    stmt: Select[Notification], enterprise_id: uuid.UUID, key: str
) -> Select[Notification]:
    """Only the notifications with this recipient or tag key: a join on the key's ids, which
    PostgreSQL reads newest first from ent_notification_key's b-tree (migration 0010)."""
    keys = aliased(NotificationKey)
    return stmt.join(
        keys,
        (keys.notification_id == Notification.id)
        & (keys.enterprise_id == enterprise_id)
        & (keys.key == key),
    )
