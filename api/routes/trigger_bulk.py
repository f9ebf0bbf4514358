"""POST /api/trigger/bulk: up to 1,000 triggers in one request, each answered on its own.

Every event goes through the same intake as a single `POST /api/trigger`; one that fails its
checks is rejected with the status and error the single trigger would have answered, and the
others go on. Events of one enterprise are committed together by the trigger recorder, then
published (docs/architecture.md, "The life of one notification").
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Header
from pydantic import ValidationError

from api.deps import PrincipalDep
from api.errors import api_error_of
from api.schemas.bulk import (
    BulkEventError,
    BulkEventResult,
    BulkTriggerEvent,
    BulkTriggerRequest,
    BulkTriggerResponse,
)
from shared.db.enums import NotificationStatus
from shared.notifications import intake

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


@router.post(
    "/api/trigger/bulk",
    status_code=202,
    response_model=BulkTriggerResponse,
    responses=ERRORS,
    summary="Trigger up to 1,000 notifications",
)
async def trigger_bulk(
    body: BulkTriggerRequest,
    principal: PrincipalDep,
    x_enterprise_id: Annotated[uuid.UUID | None, Header()] = None,
) -> BulkTriggerResponse:
    """Accept up to 1,000 triggers: each result is `accepted` (recorded as PENDING before this
    answers) or `rejected` with the status and error a single trigger would have answered;
    503 when the database is unavailable and nothing was recorded. `batchId` names the
    notifications this request created (`GET /api/batches/{batchId}`)."""
    batch_id = uuid.uuid4()
    results: dict[int, BulkEventResult] = {}
    triggers: list[intake.Trigger] = []
    for index, raw in enumerate(body.events):
        try:
            event = BulkTriggerEvent.model_validate(raw)
        except ValidationError as exc:
            problem = "the event is invalid"
            results[index] = _rejected(index, 422, "validation_error", problem, _details(exc))
            continue
        triggers.append(intake.Trigger(event, event.idempotencyKey, index, batch_id))

    outcomes = await intake.accept(triggers, principal=principal, enterprise_id=x_enterprise_id)
    recorded = any(isinstance(outcome, intake.Accepted) for outcome in outcomes)
    # Whether a notification carries this request's batchId: replayed events keep the batch of
    # the request that created them, and one naming a recorded notificationId creates none.
    created = False
    for trigger, outcome in zip(triggers, outcomes, strict=True):
        if isinstance(outcome, intake.Accepted):
            results[trigger.index] = _accepted(outcome)
            created = created or not (outcome.replayed or trigger.request.notificationId)
            continue
        error = api_error_of(outcome)
        if error is None:
            raise outcome  # a bug: the request answers 500
        if not recorded and error.status_code == 503:
            raise outcome  # the database is unavailable and nothing was recorded: retry it all
        results[trigger.index] = _rejected(
            trigger.index, error.status_code, error.code, error.message, error.details
        )

    ordered = [results[index] for index in range(len(body.events))]
    accepted = sum(1 for result in ordered if result.result == "accepted")
    return BulkTriggerResponse(
        batchId=batch_id if created else None,
        accepted=accepted,
        rejected=len(ordered) - accepted,
        results=ordered,
    )


def _accepted(accepted: intake.Accepted) -> BulkEventResult:
    # Built from values this request just checked or read back: no validation needed.
    return BulkEventResult.model_construct(
        index=accepted.index,
        result="accepted",
        statusCode=202,
        workflowId=accepted.workflow_key,
        enterpriseId=accepted.enterprise_id,
        notificationId=accepted.notification_id,
        transactionId=accepted.transaction_id,
        status=NotificationStatus.PENDING,
        scheduledFor=accepted.scheduled_for,
        replayed=accepted.replayed,
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


def _details(exc: ValidationError) -> list[dict[str, str]]:
    return [
        {
            "field": ".".join(str(part) for part in err.get("loc", ())) or "event",
            "message": err.get("msg", "invalid"),
        }
        for err in exc.errors(include_url=False)
    ]
