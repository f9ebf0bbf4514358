"""NotificationService: every read and write of notifications, always scoped to one enterprise.

Services take a session and never commit: the request or task edge owns the transaction.
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import json
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from shared.db.enums import NotificationStatus as S
from shared.db.models import Notification
from shared.notifications import transitions


def request_fingerprint(body: Any) -> str:
    """A stable hash of a request body, to tell a replay from a different request."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def new_transaction_id() -> str:
    """The transactionId sent to Novu on every attempt of one notification."""
    return f"xn-{uuid.uuid4()}"


@dataclass(frozen=True, slots=True)
class NewNotification:
    enterprise_id: uuid.UUID
    workflow_key: str
    payload: dict[str, Any]
    recipients: list[str]
    notification_workflow_id: int | None = None
    overrides: dict[str, Any] | None = None
    tags: list[str] | None = None
    scheduled_for: dt.datetime | None = None
    idempotency_key: str | None = None
    request_fingerprint: str | None = None
    created_by: str | None = None


class IdempotencyConflict(Exception):
    """The idempotency key was used before with a different request body."""

    def __init__(self, existing: Notification) -> None:
        super().__init__("idempotency key reused with a different body")
        self.existing = existing


class CancelOutcome(enum.StrEnum):
    RETRACTED = "retracted"
    ALREADY_RETRACTED = "already_retracted"
    ALREADY_DELIVERED = "already_delivered"
    INVALID_STATE = "invalid_state"
    NOT_FOUND = "not_found"


# The state machine: which statuses each status may be entered from.
LEGAL_PREDECESSORS: dict[S, frozenset[S]] = {
    S.PENDING: frozenset({S.PROCESSING, S.FAILED}),
    S.PROCESSING: frozenset({S.PENDING}),
    S.SENT: frozenset({S.PROCESSING}),
    S.FAILED: frozenset({S.PROCESSING}),
    S.RETRACTED: frozenset({S.PENDING, S.SENT}),
}


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

    def create_notification(self, new: NewNotification) -> tuple[Notification, bool]:
        """Insert a PENDING row; with an idempotency key, a replay returns the first row and False.

        Raises IdempotencyConflict when the key was used with a different body.
        """
        # Published right after commit; scheduled rows wait for beat to release them.
        enqueued_at = None if _in_future(new.scheduled_for) else dt.datetime.now(dt.UTC)
        values = {
            "enterprise_id": new.enterprise_id,
            "workflow_key": new.workflow_key,
            "notification_workflow_id": new.notification_workflow_id,
            "notification_status": S.PENDING,
            "payload": new.payload,
            "recipients": new.recipients,
            "overrides": new.overrides,
            "tags": new.tags,
            "transaction_id": new_transaction_id(),
            "scheduled_for": new.scheduled_for,
            "idempotency_key": new.idempotency_key,
            "request_fingerprint": new.request_fingerprint,
            "enqueued_at": enqueued_at,
            "created_by": new.created_by,
            "name": new.workflow_key,
        }
        stmt = insert(Notification).values(**values)
        if new.idempotency_key is not None:
            stmt = stmt.on_conflict_do_nothing(
                index_elements=[Notification.enterprise_id, Notification.idempotency_key]
            )
        created = self.session.scalars(
            stmt.returning(Notification), execution_options={"synchronize_session": False}
        ).one_or_none()
        if created is not None:
            return created, True
        existing = self.session.scalars(
            select(Notification).where(
                Notification.enterprise_id == new.enterprise_id,
                Notification.idempotency_key == new.idempotency_key,
            )
        ).one()
        if existing.request_fingerprint != new.request_fingerprint:
            raise IdempotencyConflict(existing)
        return existing, False

    def update_notification_status(
        self,
        notification_id: int,
        status: S,
        enterprise_id: uuid.UUID,
        error_message: str | None = None,
        transaction_id: str | None = None,
    ) -> Notification | None:
        """Move a notification to `status` if the state machine allows it from where it is;
        None when it is absent or the move is illegal. The transaction id is fixed at insert:
        one that differs is refused (ValueError)."""
        row = self.get_notification(notification_id, enterprise_id)
        if row is None or row.notification_status not in LEGAL_PREDECESSORS[status]:
            return None
        if transaction_id is not None and transaction_id != row.transaction_id:
            raise ValueError("transaction_id is fixed when the notification is created")
        values: dict[str, Any] = {"notification_status": status, "updated_at": func.now()}
        if error_message is not None:
            values["error_details"] = {"code": "status_update", "message": error_message}
        if status in (S.SENT, S.FAILED):
            values["processed_at"] = func.now()
            values["locked_until"] = None
        elif status is S.RETRACTED:
            values["retracted_at"] = func.now()
        elif status is S.PENDING:
            values["next_attempt_at"] = None
            values["enqueued_at"] = None  # beat publishes it
        return self.session.scalars(
            update(Notification)
            .where(
                Notification.id == notification_id,
                Notification.enterprise_id == enterprise_id,
                Notification.notification_status == row.notification_status,
            )
            .values(**values)
            .returning(Notification),
            execution_options={"synchronize_session": False, "populate_existing": True},
        ).one_or_none()

    def get_notifications_by_status(
        self, status: S, enterprise_id: uuid.UUID, limit: int = 100
    ) -> Sequence[Notification]:
        """Newest first."""
        return self.list_notifications(enterprise_id, status=status, limit=limit)

    def get_notifications_by_workflow(
        self, workflow_key: str, enterprise_id: uuid.UUID, limit: int = 100
    ) -> Sequence[Notification]:
        """Newest first."""
        return self.list_notifications(enterprise_id, workflow_key=workflow_key, limit=limit)

    def list_notifications(
        self,
        enterprise_id: uuid.UUID,
        *,
        status: S | None = None,
        workflow_key: str | None = None,
        limit: int = 100,
        before_id: int | None = None,
    ) -> Sequence[Notification]:
        """A keyset page, newest first: rows with id below `before_id`."""
        stmt = select(Notification).where(Notification.enterprise_id == enterprise_id)
        if status is not None:
            stmt = stmt.where(Notification.notification_status == status)
        if workflow_key is not None:
            stmt = stmt.where(Notification.workflow_key == workflow_key)
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
    ) -> tuple[CancelOutcome, Notification | None]:
        """Retract a notification. PENDING is retracted here; SENT only if Novu cancels the
        transaction's pending steps (`cancel_at_novu(transaction_id)` answers True)."""
        for _ in range(3):  # the row may move under us; each pass re-reads it
            row = self.get_notification(notification_id, enterprise_id)
            if row is None:
                return CancelOutcome.NOT_FOUND, None
            match row.notification_status:
                case S.RETRACTED:
                    return CancelOutcome.ALREADY_RETRACTED, row
                case S.PENDING:
                    done = transitions.retract_pending(
                        self.session,
                        notification_id=notification_id,
                        enterprise_id=enterprise_id,
                        reason=reason,
                    )
                case S.SENT:
                    if not cancel_at_novu(row.transaction_id):
                        return CancelOutcome.ALREADY_DELIVERED, row
                    done = transitions.retract_sent(
                        self.session,
                        notification_id=notification_id,
                        enterprise_id=enterprise_id,
                        reason=reason,
                    )
                case _:
                    return CancelOutcome.INVALID_STATE, row
            if done is not None:
                return CancelOutcome.RETRACTED, done
            self.session.expire_all()
        return CancelOutcome.INVALID_STATE, self.get_notification(notification_id, enterprise_id)

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


def _in_future(when: dt.datetime | None) -> bool:
    return when is not None and when > dt.datetime.now(dt.UTC)
