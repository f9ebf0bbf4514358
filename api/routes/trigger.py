"""POST /api/trigger: record a PENDING notification, commit, then publish its delivery."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Header, Response

from api.deps import PrincipalDep, SessionDep, resolve_enterprise
from api.errors import ApiError
from api.schemas.notifications import TriggerRequest, TriggerResponse
from api.trigger_checks import check_payload, resolve_recipients, resolve_workflow
from shared.db.enums import NotificationStatus
from shared.db.models import Notification
from shared.db.session import scope_session
from shared.notifications.service import (
    IdempotencyConflict,
    NewNotification,
    NotificationService,
    request_fingerprint,
)
from shared.notifications.transitions import clear_enqueued
from shared.payloads import json_size
from shared.queue import publish_deliver
from shared.settings import get_settings

router = APIRouter(tags=["trigger"])

ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "Malformed request"},
    401: {"description": "Missing or invalid API key"},
    403: {"description": "The key cannot act for that enterprise"},
    404: {"description": "Unknown or unpublished workflow"},
    409: {"description": "The notification is not in a state that can be triggered"},
    413: {"description": "Payload over the limit"},
    422: {"description": "Invalid body, payload failing the workflow's schema, key reused"},
    503: {"description": "The database is unavailable"},
}


@router.post("/api/trigger", status_code=202, response_model=TriggerResponse, responses=ERRORS)
def trigger(
    body: TriggerRequest,
    session: SessionDep,
    principal: PrincipalDep,
    response: Response,
    idempotency_key: Annotated[
        str | None, Header(alias="Idempotency-Key", min_length=1, max_length=255)
    ] = None,
) -> TriggerResponse:
    """Accept a notification: it is recorded as PENDING before this answers 202."""
    settings = get_settings()
    enterprise_id = resolve_enterprise(principal, body.enterpriseId)
    scope_session(session, enterprise_id)
    workflow = resolve_workflow(body.workflowId, enterprise_id)
    check_payload(workflow, body.payload, size=json_size(body.payload), settings=settings)

    service = NotificationService(session)
    if body.notificationId is not None:
        row = _existing(service, body, enterprise_id)
        created = False
    else:
        recipients = resolve_recipients(
            recipients=body.recipients,
            subscriber_id=body.subscriberId,
            workflow=workflow,
            payload=body.payload,
            enterprise_id=enterprise_id,
            settings=settings,
        )
        fingerprint = request_fingerprint(
            {"enterpriseId": str(enterprise_id), "body": body.model_dump(mode="json")}
        )
        try:
            row, created = service.create_notification(
                NewNotification(
                    enterprise_id=enterprise_id,
                    workflow_key=body.workflowId,
                    notification_workflow_id=workflow.workflow_id,
                    payload=body.payload,
                    recipients=recipients,
                    overrides=body.overrides,
                    tags=body.tags,
                    scheduled_for=body.scheduledFor,
                    idempotency_key=idempotency_key,
                    request_fingerprint=fingerprint,
                    created_by=f"api-key:{principal.key_id}",
                )
            )
        except IdempotencyConflict as exc:
            raise ApiError(
                422,
                "idempotency_key_reused",
                "this Idempotency-Key was used with a different request body",
                {"notificationId": exc.existing.id},
            ) from exc
    session.commit()

    due = row.scheduled_for is None or row.scheduled_for <= dt.datetime.now(dt.UTC)
    if (created or body.notificationId is not None) and due:
        failed = publish_deliver([(row.id, enterprise_id)])
        if failed:
            # Redis is down: the row is the record, and beat publishes it when Redis is back.
            clear_enqueued(session, notification_ids=failed)
            session.commit()
    if not created and idempotency_key is not None:
        response.headers["Idempotency-Replay"] = "true"
    return TriggerResponse(
        message="Notification triggered successfully" if due else "Notification scheduled",
        workflowId=row.workflow_key,
        enterpriseId=enterprise_id,
        notificationId=row.id,
        transactionId=row.transaction_id,
        status=NotificationStatus.PENDING,
        scheduledFor=row.scheduled_for,
    )


def _existing(
    service: NotificationService, body: TriggerRequest, enterprise_id: Any
) -> Notification:
    """Trigger a notification another service already recorded (the original `notificationId`)."""
    assert body.notificationId is not None
    row = service.get_notification(body.notificationId, enterprise_id)
    if row is None:
        raise ApiError(404, "not_found", "notification not found")
    if row.workflow_key != body.workflowId:
        raise ApiError(422, "workflow_mismatch", "the notification belongs to another workflow")
    if row.notification_status is not NotificationStatus.PENDING:
        raise ApiError(
            409,
            "invalid_state",
            f"the notification is {row.notification_status.value}, not PENDING",
        )
    return row
