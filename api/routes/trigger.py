"""POST /api/trigger: accept one notification (recorded PENDING before the 202)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.routing import APIRoute

from api.deps import PrincipalDep
from api.hotpath import TriggerRoute, idempotency_key
from api.request_ids import request_id_header
from api.schemas.notifications import TriggerRequest, TriggerResponse
from shared.db.enums import NotificationStatus
from shared.notifications import intake

router = APIRouter(tags=["trigger"], route_class=TriggerRoute)

ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "Malformed request"},
    401: {"description": "Missing or invalid API key"},
    403: {"description": "The key cannot act for that enterprise"},
    404: {"description": "Unknown or unpublished workflow"},
    409: {"description": "The notification is not in a state that can be triggered"},
    413: {"description": "Payload over the limit, or its Novu event over Novu's 512 KB"},
    422: {
        "description": "Invalid body or recipient, payload failing the workflow's schema,"
        " key reused"
    },
    503: {"description": "The database is unavailable"},
}

# Declared here rather than as a parameter: FastAPI's per-parameter handling was a measurable
# share of a trigger's cost (docs/performance.md); hotpath.idempotency_key() checks it the same
# way.
IDEMPOTENCY_KEY_PARAMETER = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "The same key and body answer the first notification again (replayed);"
    " the same key with another body is a 422 idempotency_key_reused.",
    "schema": {"type": "string", "minLength": 1, "maxLength": 255},
}


@router.post(
    "/api/trigger",
    status_code=202,
    response_model=TriggerResponse,
    responses=ERRORS,
    openapi_extra={"parameters": [IDEMPOTENCY_KEY_PARAMETER]},
)
async def trigger(body: TriggerRequest, principal: PrincipalDep, request: Request) -> Response:
    """Accept a notification: it is recorded as PENDING before this answers 202."""
    trigger = intake.Trigger(body, idempotency_key(request))
    [result] = await intake.accept([trigger], principal=principal)
    if isinstance(result, BaseException):
        raise result
    # Serialised directly: the answer is built from checked values, so FastAPI's validation of
    # the returned value would only repeat the work.
    return Response(
        accepted_response(result).model_dump_json().encode(),
        status_code=202,
        media_type="application/json",
        headers=(
            {"Idempotency-Replay": "true", **request_id_header()}
            if result.replayed
            else request_id_header()
        ),
    )


def accepted_response(accepted: intake.Accepted) -> TriggerResponse:
    """The 202 body of an accepted trigger."""
    # Validated: pydantic's Rust validation is faster than model_construct's Python loop.
    return TriggerResponse(
        message="Notification triggered successfully" if accepted.due else "Notification scheduled",
        workflowId=accepted.workflow_key,
        enterpriseId=accepted.enterprise_id,
        notificationId=accepted.notification_id,
        transactionId=accepted.transaction_id,
        status=NotificationStatus.PENDING,
        scheduledFor=accepted.scheduled_for,
    )


def trigger_route() -> APIRoute:
    """The POST /api/trigger route (for api/hotpath.py)."""
    for route in router.routes:
        if isinstance(route, TriggerRoute):
            return route
    raise LookupError("POST /api/trigger is not declared")
