"""The checks every trigger passes, single or one event of a bulk request: one place, so the
two endpoints cannot drift apart."""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from typing import Any

from starlette.concurrency import run_in_threadpool

from api.errors import ApiError
from api.schemas.notifications import TriggerRequest
from shared.notifications.bulk import BulkNotification, json_text
from shared.notifications.service import request_fingerprint
from shared.payloads import payload_errors
from shared.settings import Settings
from shared.workflows.instance import WorkflowInstance
from shared.workflows.registry import get_registry

# A NUL character as json.dumps writes it: `\u0000` after an even number of backslashes (an odd
# number means the backslash itself was escaped, i.e. the text holds a literal "\u0000").
_ESCAPED_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


def resolve_workflow(workflow_id: str, enterprise_id: uuid.UUID) -> WorkflowInstance:
    """The workflow the key means for the enterprise; 404 when unknown or unpublished."""
    workflow = get_registry().get_workflow(workflow_id, enterprise_id)
    if workflow is None:
        raise ApiError(404, "workflow_not_found", f"workflow {workflow_id!r} not found")
    return workflow


async def resolve_workflow_async(workflow_id: str, enterprise_id: uuid.UUID) -> WorkflowInstance:
    """resolve_workflow() for async routes: from memory when the registry is fresh for the
    enterprise, otherwise from a worker thread (it reads the database)."""
    if get_registry().is_fresh(enterprise_id):
        return resolve_workflow(workflow_id, enterprise_id)
    return await run_in_threadpool(resolve_workflow, workflow_id, enterprise_id)


def check_payload(workflow: WorkflowInstance, payload: dict[str, Any], settings: Settings) -> None:
    """422 for a value PostgreSQL cannot store, 413 over the payload limit (bytes of its JSON),
    422 naming each field that fails the workflow's schema."""
    size = len(storable_json(payload, "payload").encode())
    if size > settings.max_payload_bytes:
        raise ApiError(
            413, "payload_too_large", f"payload exceeds {settings.max_payload_bytes} bytes"
        )
    errors = payload_errors(workflow.payload_schema, payload)
    if errors:
        raise ApiError(
            422, "invalid_payload", "the payload does not match the workflow's schema", errors
        )


def new_notification(
    event: TriggerRequest,
    *,
    index: int,
    enterprise_id: uuid.UUID,
    workflow: WorkflowInstance,
    idempotency_key: str | None,
    settings: Settings,
) -> BulkNotification:
    """The row to record for a trigger body whose payload passed check_payload: its
    recipients (422 over MAX_RECIPIENTS), every value PostgreSQL must store checked (422), and
    the fingerprint an Idempotency-Key is compared by."""
    recipients = resolve_recipients(
        recipients=event.recipients,
        subscriber_id=event.subscriberId,
        workflow=workflow,
        payload=event.payload,
        enterprise_id=enterprise_id,
        settings=settings,
    )
    for name, value in (
        ("overrides", event.overrides),
        ("recipients", recipients),
        ("tags", event.tags),
        ("idempotencyKey", idempotency_key),
    ):
        if value is not None:
            storable_json(value, name)
    # Only a key's later uses compare fingerprints. The body without its own key (a bulk
    # event's idempotencyKey): the same body sent to either endpoint is the same request.
    fingerprint = (
        request_fingerprint(
            {
                "enterpriseId": str(enterprise_id),
                "body": event.model_dump(mode="json", exclude={"idempotencyKey"}),
            }
        )
        if idempotency_key is not None
        else None
    )
    return BulkNotification(
        index=index,
        workflow_key=event.workflowId,
        notification_workflow_id=workflow.workflow_id,
        payload=event.payload,
        recipients=recipients,
        overrides=event.overrides,
        tags=event.tags,
        scheduled_for=event.scheduledFor,
        idempotency_key=idempotency_key,
        request_fingerprint=fingerprint,
    )


def resolve_recipients(
    *,
    recipients: Sequence[str] | None,
    subscriber_id: str | None,
    workflow: WorkflowInstance,
    payload: dict[str, Any],
    enterprise_id: uuid.UUID,
    settings: Settings,
) -> list[str]:
    """Who receives it: the trigger's recipients or subscriberId, else the subscriber the
    workflow derives from the payload, else the enterprise itself (its own Novu subscriber,
    as the original XNovu's default subscriber). 422 over MAX_RECIPIENTS."""
    if recipients:
        chosen = list(recipients)
    elif subscriber_id:
        chosen = [subscriber_id]
    else:
        derived = workflow.default_subscriber(payload)
        subscriber = derived.get("subscriberId") if derived else None
        chosen = [str(subscriber)] if subscriber else [str(enterprise_id)]
    if len(chosen) > settings.max_recipients:
        raise ApiError(422, "too_many_recipients", f"at most {settings.max_recipients} recipients")
    return chosen


def storable_json(value: Any, field: str) -> str:
    """The value's JSON text, refusing what PostgreSQL cannot store (NUL characters, lone
    surrogates, NaN) so that one such event cannot fail the statement its group shares."""
    try:
        text = json_text(value)
    except ValueError:
        raise ApiError(422, "invalid_value", f"{field} holds NaN or Infinity") from None
    try:
        text.encode()
    except UnicodeEncodeError:
        raise ApiError(
            422, "invalid_value", f"{field} holds text that is not valid Unicode"
        ) from None
    if "\\u0000" in text and _ESCAPED_NUL.search(text):
        raise ApiError(422, "invalid_value", f"{field} holds a NUL character")
    return text
