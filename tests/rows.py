"""Notification rows written and moved by the production statements themselves
(shared/notifications/repository.py), for the tests that work below the API."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, update
from sqlalchemy.orm import Session

from shared.db.enums import NotificationStatus as S
from shared.db.models import Notification
from shared.db.session import transaction
from shared.notifications.repository import (
    AttemptOutcome,
    ClaimedRow,
    Execute,
    NewNotification,
    Recorded,
    claim_due,
    insert_pending,
    record_outcomes,
)


def session_executor(session: Session) -> Execute:
    """Run the repository's statements in an ORM session's transaction (the driver's own
    parameter style), as the recorder runs them on its own connection."""

    def execute(sql: str, parameters: dict[str, Any]) -> Sequence[Any]:
        return session.connection().exec_driver_sql(sql, parameters).all()

    return execute


def insert_notification(
    enterprise_id: uuid.UUID,
    *,
    session: Session | None = None,
    workflow_key: str = "user-signup",
    payload: dict[str, Any] | None = None,
    recipients: list[str] | None = None,
    scheduled_for: dt.datetime | None = None,
    row_enterprise_id: uuid.UUID | None = None,
) -> Recorded:
    """One PENDING row, inserted by intake's INSERT in `session`'s transaction, or in an
    enterprise-scoped transaction of its own. `row_enterprise_id` writes a row of another
    enterprise than the transaction's (row-level security refuses it)."""
    notification = NewNotification(
        index=0,
        workflow_key=workflow_key,
        payload=payload if payload is not None else {"userId": "u"},
        recipients=recipients if recipients is not None else ["u"],
        scheduled_for=scheduled_for,
    )

    def insert(in_session: Session) -> Recorded:
        [row] = insert_pending(
            session_executor(in_session),
            enterprise_id=row_enterprise_id or enterprise_id,
            notifications=[notification],
            created_by="test",
        )
        return row

    if session is not None:
        return insert(session)
    with transaction(enterprise_id) as own:
        return insert(own)


def claim(
    connection: Connection | Session,
    notification_id: int,
    enterprise_id: uuid.UUID,
    *,
    lease_seconds: int = 30,
) -> ClaimedRow | None:
    """The worker's claim of one row; None when someone else has it or it is not due."""
    claimed, _ = claim_due(
        connection,
        enterprise_id=enterprise_id,
        notification_ids=[notification_id],
        lease_seconds=lease_seconds,
    )
    return claimed[0] if claimed else None


def record(
    connection: Connection | Session,
    enterprise_id: uuid.UUID,
    notification_id: int,
    attempt: int,
    status: S,
    **fields: Any,
) -> bool:
    """The worker's record of one attempt's outcome; False when that attempt no longer owns
    the row."""
    outcome = AttemptOutcome(notification_id, attempt, status, **fields)
    moved = record_outcomes(connection, enterprise_id=enterprise_id, outcomes=[outcome])
    return notification_id in moved


def set_columns(notification_id: int, **values: Any) -> None:
    """Set columns of one notification directly, as no statement of the service would (a
    status forced, a creation time back-dated), in a system transaction of its own."""
    with transaction() as session:
        session.execute(
            update(Notification).where(Notification.id == notification_id).values(**values)
        )
