"""POST /api/trigger: record a PENDING notification, commit, then publish its delivery."""

from __future__ import annotations

import datetime as dt
import inspect
import json
import uuid
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from api.deps import PrincipalDep, get_principal, resolve_enterprise
from api.errors import ApiError
from api.ingest import trigger_recorder
from api.ratelimit import get_rate_limiter
from api.schemas.notifications import TriggerRequest, TriggerResponse
from api.trigger_checks import check_payload, new_notification, resolve_workflow_async
from shared.apikeys import Principal
from shared.db.enums import NotificationStatus
from shared.db.models import Notification
from shared.db.session import transaction
from shared.notifications.bulk import BulkOutcome
from shared.notifications.service import NotificationService
from shared.notifications.transitions import clear_enqueued
from shared.queue import publish_deliver
from shared.settings import get_settings


class TriggerRoute(APIRoute):
    """Serves POST /api/trigger without FastAPI's generic request handler.

    The route is declared and documented as any other (`trigger`'s signature: the body model,
    the principal, the Idempotency-Key header). FastAPI's generic handler resolves that
    signature through its dependency machinery on every request, which measured as about a
    fifth of a trigger's CPU (docs/performance.md). This handler takes the same steps in the
    same order, directly: read the body and parse it as JSON when its content type is JSON
    (400 when malformed), authenticate (401, 429, with the app's dependency overrides
    honoured), validate the body (422 in FastAPI's shape), then accept_trigger().
    tests/api/test_trigger_route.py checks that both handlers answer alike."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        async def handle(request: Request) -> Response:
            body = await _json_body(request)
            limiter = await _dependency(request, get_rate_limiter)
            principal = await get_principal(request, limiter)
            return await accept_trigger(_validated(body), principal, request)

        return handle


router = APIRouter(tags=["trigger"], route_class=TriggerRoute)

_NO_BODY = object()


async def _json_body(request: Request) -> Any:
    """The body as FastAPI reads one for a model: JSON when the content type says so, the raw
    bytes otherwise, _NO_BODY when empty."""
    raw = await request.body()
    if not raw:
        return _NO_BODY
    content_type = request.headers.get("content-type")
    if content_type is None or not _is_json(content_type):
        return raw
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise RequestValidationError(
            [
                {
                    "type": "json_invalid",
                    "loc": ("body", exc.pos),
                    "msg": "JSON decode error",
                    "input": {},
                    "ctx": {"error": exc.msg},
                }
            ]
        ) from exc
    except ValueError as exc:  # not UTF-8, or nesting too deep
        raise HTTPException(400, "There was an error parsing the body") from exc


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    main, _, sub = media.partition("/")
    return main == "application" and (sub == "json" or sub.endswith("+json"))


def _validated(body: Any) -> TriggerRequest:
    """The body as a TriggerRequest, or FastAPI's 422 for a body parameter."""
    if body is _NO_BODY:
        raise RequestValidationError(
            [{"type": "missing", "loc": ("body",), "msg": "Field required", "input": None}]
        )
    try:
        return TriggerRequest.model_validate(body, from_attributes=True)
    except ValidationError as exc:
        raise RequestValidationError(
            [{**error, "loc": ("body", *error["loc"])} for error in exc.errors(include_url=False)]
        ) from None


async def _dependency(request: Request, dependency: Callable[[], Any]) -> Any:
    """Call a parameterless dependency as FastAPI would, through the app's overrides."""
    provider = request.app.dependency_overrides.get(dependency, dependency)
    value = provider()
    return await value if inspect.isawaitable(value) else value


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


# Declared here rather than as a parameter: FastAPI's per-parameter handling was a measurable
# share of a trigger's cost (docs/performance.md); _idempotency_key() checks it the same way.
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
    """Accept a notification: it is recorded as PENDING before this answers 202.

    (Served by TriggerRoute, which does what FastAPI does with this signature, directly.)"""
    return await accept_trigger(body, principal, request)


async def accept_trigger(body: TriggerRequest, principal: Principal, request: Request) -> Response:
    """The trigger itself. The checks run on the event loop; the row is recorded by the
    process's trigger recorder (api/ingest.py), which commits the triggers that arrive together
    in one transaction."""
    idempotency_key = _idempotency_key(request)
    settings = get_settings()
    enterprise_id = resolve_enterprise(principal, body.enterpriseId)
    workflow = await resolve_workflow_async(body.workflowId, enterprise_id)
    check_payload(workflow, body.payload, settings)
    if body.notificationId is not None:
        return _json(await run_in_threadpool(_trigger_existing, body, enterprise_id))

    notification = new_notification(
        body,
        index=0,
        enterprise_id=enterprise_id,
        workflow=workflow,
        idempotency_key=idempotency_key,
        settings=settings,
    )
    row = await trigger_recorder().record(
        enterprise_id, f"api-key:{principal.key_id}", notification
    )
    if row.outcome is BulkOutcome.CONFLICT:
        raise ApiError(
            422,
            "idempotency_key_reused",
            "this Idempotency-Key was used with a different request body",
            {"notificationId": row.notification_id},
        )
    accepted = _accepted(
        enterprise_id, row.workflow_key, row.notification_id, row.transaction_id, row.scheduled_for
    )
    replayed = row.outcome is BulkOutcome.REPLAYED
    return _json(accepted, {"Idempotency-Replay": "true"} if replayed else None)


def trigger_route() -> APIRoute:
    """The POST /api/trigger route (for api/hotpath.py)."""
    for route in router.routes:
        if isinstance(route, TriggerRoute):
            return route
    raise LookupError("POST /api/trigger is not declared")


def _idempotency_key(request: Request) -> str | None:
    """The Idempotency-Key header, 422 unless 1 to 255 characters (as its OpenAPI schema)."""
    key = request.headers.get("idempotency-key")
    if key is None or 1 <= len(key) <= 255:
        return key
    problem = "string_too_short" if not key else "string_too_long"
    raise RequestValidationError(
        [
            {
                "type": problem,
                "loc": ("header", "Idempotency-Key"),
                "msg": "Idempotency-Key must be 1 to 255 characters",
                "input": key,
            }
        ]
    )


def _json(accepted: TriggerResponse, headers: dict[str, str] | None = None) -> Response:
    """The 202 answer, serialised directly: the model was built from checked values, so
    FastAPI's validation of the returned value would only repeat the work."""
    return Response(
        accepted.model_dump_json().encode(),
        status_code=202,
        media_type="application/json",
        headers=headers,
    )


def _accepted(
    enterprise_id: uuid.UUID,
    workflow_key: str,
    notification_id: int,
    transaction_id: str,
    scheduled_for: dt.datetime | None,
) -> TriggerResponse:
    return TriggerResponse(
        message="Notification triggered successfully"
        if _due(scheduled_for)
        else "Notification scheduled",
        workflowId=workflow_key,
        enterpriseId=enterprise_id,
        notificationId=notification_id,
        transactionId=transaction_id,
        status=NotificationStatus.PENDING,
        scheduledFor=scheduled_for,
    )


def _due(scheduled_for: dt.datetime | None) -> bool:
    return scheduled_for is None or scheduled_for <= dt.datetime.now(dt.UTC)


def _trigger_existing(body: TriggerRequest, enterprise_id: uuid.UUID) -> TriggerResponse:
    """Trigger a PENDING notification another service already recorded (the original
    `notificationId`): publish it if it is due."""
    with transaction(enterprise_id) as session:
        row = _existing(NotificationService(session), body, enterprise_id)
    response = _accepted(
        enterprise_id, row.workflow_key, row.id, row.transaction_id, row.scheduled_for
    )
    if _due(row.scheduled_for):
        failed = publish_deliver([(row.id, enterprise_id)])
        if failed:
            # Redis is down: the row is the record, and beat publishes it when Redis is back.
            with transaction(enterprise_id) as session:
                clear_enqueued(session, notification_ids=failed)
    return response


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
