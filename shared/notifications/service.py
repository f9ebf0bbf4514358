"""NotificationService: reads, cancels and retries of notifications, scoped to one enterprise.

Services take a session and never commit: the request or task edge owns the transaction.
Recording and delivering notifications is intake's and delivery's (docs/architecture.md).
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Callable, Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.db.enums import NotificationStatus as S
from shared.db.models import Notification
from shared.notifications import transitions


class CancelResult(enum.StrEnum):
    """What a cancel did."""

    RETRACTED = "retracted"
    ALREADY_RETRACTED = "already_retracted"
    ALREADY_DELIVERED = "already_delivered"
    INVALID_STATE = "invalid_state"
    NOT_FOUND = "not_found"


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
        limit: int = 100,
        before_id: int | None = None,
    ) -> Sequence[Notification]:
        """A keyset page, newest first: rows with id below `before_id`, carrying every tag of
        `tags`."""
        stmt = select(Notification).where(Notification.enterprise_id == enterprise_id)
        if status is not None:
            stmt = stmt.where(Notification.notification_status == status)
        if workflow_key is not None:
            stmt = stmt.where(Notification.workflow_key == workflow_key)
        if tags:
            stmt = stmt.where(Notification.tags.contains(list(tags)))
        if before_id is not None:
            stmt = stmt.where(Notification.id < before_id)
        return self.session.scalars(stmt.order_by(Notification.id.desc()).limit(limit)).all()

    def cancel_notification(
        self,
        notification_id: int,
        enterprise_id: uuid.UUID,
        *,
        reason: str | None,
        cancel_at_novu: Callable[[str], bool],
    ) -> tuple[CancelResult, Notification | None]:
        """Retract a notification. PENDING is retracted here; SENT only if Novu cancels the
        transaction's pending steps (`cancel_at_novu(transaction_id)` answers True)."""
        for _ in range(3):  # the row may move under us; each pass re-reads it
            row = self.get_notification(notification_id, enterprise_id)
            if row is None:
                return CancelResult.NOT_FOUND, None
            match row.notification_status:
                case S.RETRACTED:
                    return CancelResult.ALREADY_RETRACTED, row
                case S.PENDING:
                    done = transitions.retract_pending(
                        self.session,
                        notification_id=notification_id,
                        enterprise_id=enterprise_id,
                        reason=reason,
                    )
                case S.SENT:
                    if not cancel_at_novu(row.transaction_id):
                        return CancelResult.ALREADY_DELIVERED, row
                    done = transitions.retract_sent(
                        self.session,
                        notification_id=notification_id,
                        enterprise_id=enterprise_id,
                        reason=reason,
                    )
                case _:
                    return CancelResult.INVALID_STATE, row
            if done is not None:
                return CancelResult.RETRACTED, done
            self.session.expire_all()
        return CancelResult.INVALID_STATE, self.get_notification(notification_id, enterprise_id)

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
