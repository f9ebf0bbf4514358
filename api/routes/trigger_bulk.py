"""POST /api/trigger/bulk: up to 1,000 triggers in one request, each answered on its own.

Every event gets the checks of a single `POST /api/trigger` (body, enterprise, workflow,
payload size and schema, recipients, idempotency key); one that fails them is rejected with
the status and error the single trigger would have answered, and the others go on. Valid
events are grouped by enterprise (a service key may name several) and each group is recorded
in its own row-level-security scoped transaction with one INSERT, committed, and only then
published as deliver_batch messages, so the rules of DESIGN.md hold as for a single trigger.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections import defaultdict
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Header
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session

from api.deps import PrincipalDep, SessionDep, resolve_enterprise
from api.errors import ApiError
from api.schemas.bulk import (
    BulkEventError,
    BulkEventResult,
    BulkTriggerEvent,
    BulkTriggerRequest,
    BulkTriggerResponse,
)
from api.trigger_checks import check_payload, new_notification, resolve_workflow
from shared.apikeys import Principal
from shared.db.enums import NotificationStatus
from shared.db.models import Notification
from shared.db.session import scope_session
from shared.notifications.bulk import (
    BulkNotification,
    BulkOutcome,
    BulkRecorded,
    record_notifications,
    session_executor,
)
from shared.notifications.transitions import clear_enqueued
from shared.queue import publish_deliver_batch
from shared.settings import Settings, get_settings

log = logging.getLogger(__name__)
router = APIRouter(tags=["trigger"])

# Errors of the request as a whole; each event's own error is in its result.
ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "Malformed JSON, or a service key naming no enterprise for an event"},
    401: {"description": "Missing or invalid API key"},
    413: {"description": "Body over the limit"},
    422: {"description": "Not `{events: [...]}` with 1 to 1,000 objects"},
    429: {"description": "The API key is over its rate"},
    503: {"description": "The database is unavailable (nothing was recorded)"},
}


@dataclass(frozen=True, slots=True)
class _Valid:
    """An event that passed every check, ready to record for its enterprise."""

    index: int
    event: BulkTriggerEvent
    enterprise_id: uuid.UUID
    notification: BulkNotification | None  # None: it triggers an existing row (notificationId)


@router.post(
    "/api/trigger/bulk",
    status_code=202,
    response_model=BulkTriggerResponse,
    responses=ERRORS,
    summary="Trigger up to 1,000 notifications",
)
def trigger_bulk(
    body: BulkTriggerRequest,
    session: SessionDep,
    principal: PrincipalDep,
    x_enterprise_id: Annotated[uuid.UUID | None, Header()] = None,
) -> BulkTriggerResponse:
    """Accept up to 1,000 triggers: each result is `accepted` (recorded as PENDING before this
    answers) or `rejected` with the status and error a single trigger would have answered."""
    settings = get_settings()
    results: dict[int, BulkEventResult] = {}
    groups: dict[uuid.UUID, list[_Valid]] = defaultdict(list)
    for index, raw in enumerate(body.events):
        try:
            valid = _check(index, raw, principal, x_enterprise_id, settings)
        except ApiError as exc:
            results[index] = _rejected(index, exc.status_code, exc.code, exc.message, exc.details)
            continue
        groups[valid.enterprise_id].append(valid)

    created_by = f"api-key:{principal.key_id}"
    for number, (enterprise_id, events) in enumerate(groups.items()):
        try:
            results.update(_record_group(session, enterprise_id, events, created_by))
        except (OperationalError, DBAPIError) as exc:
            session.rollback()
            if number == 0:
                raise  # nothing recorded yet: the whole request is a 503, safe to retry
            # Other enterprises' events are recorded: this group's events answer 503 each.
            code = "database_unavailable" if isinstance(exc, OperationalError) else "database_error"
            message = "the database could not record this event, try again"
            results.update({v.index: _rejected(v.index, 503, code, message) for v in events})

    ordered = [results[index] for index in range(len(body.events))]
    accepted = sum(1 for result in ordered if result.result == "accepted")
    return BulkTriggerResponse(accepted=accepted, rejected=len(ordered) - accepted, results=ordered)


def _check(
    index: int,
    raw: dict[str, Any],
    principal: Principal,
    header_enterprise: uuid.UUID | None,
    settings: Settings,
) -> _Valid:
    """The checks of a single trigger, for one event; raises ApiError with its answer."""
    try:
        event = BulkTriggerEvent.model_validate(raw)
    except ValidationError as exc:
        raise ApiError(
            422, "validation_error", "the event is invalid", _validation_details(exc)
        ) from None
    enterprise_id = resolve_enterprise(principal, event.enterpriseId or header_enterprise)
    workflow = resolve_workflow(event.workflowId, enterprise_id)
    check_payload(workflow, event.payload, settings)
    if event.notificationId is not None:
        return _Valid(index, event, enterprise_id, None)
    notification = new_notification(
        event,
        index=index,
        enterprise_id=enterprise_id,
        workflow=workflow,
        idempotency_key=event.idempotencyKey,
        settings=settings,
    )
    return _Valid(index, event, enterprise_id, notification)


def _record_group(
    session: Session, enterprise_id: uuid.UUID, events: list[_Valid], created_by: str
) -> dict[int, BulkEventResult]:
    """Record one enterprise's events in one transaction, commit, then publish them; a
    database error propagates with nothing of this group recorded."""
    scope_session(session, enterprise_id)
    new = [valid.notification for valid in events if valid.notification is not None]
    existing = [valid for valid in events if valid.notification is None]
    results: dict[int, BulkEventResult] = {}
    recorded = record_notifications(
        session_executor(session),
        enterprise_id=enterprise_id,
        notifications=new,
        created_by=created_by,
    )
    to_publish = [row.notification_id for row in recorded if row.publish]
    for valid in existing:
        result, publish = _trigger_existing(session, valid)
        results[valid.index] = result
        if publish and result.notificationId is not None:
            to_publish.append(result.notificationId)
    session.commit()

    if to_publish:
        failed = publish_deliver_batch(enterprise_id, to_publish)
        if failed:
            # Redis is down: the rows are the record, and beat publishes them when it is back.
            try:
                clear_enqueued(session, notification_ids=failed)
                session.commit()
            except (OperationalError, DBAPIError) as exc:
                # Then beat republishes them once enqueued_at is older than
                # REDELIVER_AFTER_SECONDS; the events are recorded either way.
                session.rollback()
                log.warning("could not mark %d unpublished rows: %s", len(failed), exc)
    for row in recorded:
        results[row.index] = _recorded_result(row, enterprise_id)
    return results


def _trigger_existing(session: Session, valid: _Valid) -> tuple[BulkEventResult, bool]:
    """An event naming `notificationId`: a PENDING row another service recorded; also
    whether it is due (published after commit)."""
    event, index = valid.event, valid.index
    row = session.scalars(
        select(Notification).where(
            Notification.id == event.notificationId,
            Notification.enterprise_id == valid.enterprise_id,
        )
    ).one_or_none()
    if row is None:
        return _rejected(index, 404, "not_found", "notification not found"), False
    if row.workflow_key != event.workflowId:
        message = "the notification belongs to another workflow"
        return _rejected(index, 422, "workflow_mismatch", message), False
    if row.notification_status is not NotificationStatus.PENDING:
        message = f"the notification is {row.notification_status.value}, not PENDING"
        return _rejected(index, 409, "invalid_state", message), False
    due = row.scheduled_for is None or row.scheduled_for <= dt.datetime.now(dt.UTC)
    return (
        BulkEventResult(
            index=index,
            result="accepted",
            statusCode=202,
            workflowId=row.workflow_key,
            enterpriseId=valid.enterprise_id,
            notificationId=row.id,
            transactionId=row.transaction_id,
            status=NotificationStatus.PENDING,
            scheduledFor=row.scheduled_for,
        ),
        due,
    )


def _recorded_result(row: BulkRecorded, enterprise_id: uuid.UUID) -> BulkEventResult:
    if row.outcome is BulkOutcome.CONFLICT:
        return _rejected(
            row.index,
            422,
            "idempotency_key_reused",
            "this idempotencyKey was used with a different request body",
            {"notificationId": row.notification_id},
        )
    # Built from values this request just checked or read back: no validation needed.
    return BulkEventResult.model_construct(
        index=row.index,
        result="accepted",
        statusCode=202,
        workflowId=row.workflow_key,
        enterpriseId=enterprise_id,
        notificationId=row.notification_id,
        transactionId=row.transaction_id,
        status=NotificationStatus.PENDING,
        scheduledFor=row.scheduled_for,
        replayed=row.outcome is BulkOutcome.REPLAYED,
    )


def _rejected(
    index: int, status_code: int, code: str, message: str, details: Any = None
) -> BulkEventResult:
    return BulkEventResult.model_construct(
        index=index,
        result="rejected",
        statusCode=status_code,
        error=BulkEventError.model_construct(code=code, message=message, details=details),
    )


def _validation_details(exc: ValidationError) -> list[dict[str, str]]:
    return [
        {
            "field": ".".join(str(part) for part in err.get("loc", ())) or "event",
            "message": err.get("msg", "invalid"),
        }
        for err in exc.errors(include_url=False)
    ]
