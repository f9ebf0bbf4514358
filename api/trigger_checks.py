"""The checks every trigger passes, single or one event of a bulk request: one place, so the
two endpoints cannot drift apart."""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from typing import Any

from starlette.concurrency import run_in_threadpool

from api.errors import ApiError
from shared.notifications.bulk import json_text
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


def check_payload(
    workflow: WorkflowInstance, payload: dict[str, Any], *, size: int, settings: Settings
) -> None:
    """413 over the payload limit (`size` = bytes of its JSON), 422 naming each field that
    fails the workflow's schema."""
    if size > settings.max_payload_bytes:
        raise ApiError(
            413, "payload_too_large", f"payload exceeds {settings.max_payload_bytes} bytes"
        )
    errors = payload_errors(workflow.payload_schema, payload)
    if errors:
        raise ApiError(
            422, "invalid_payload", "the payload does not match the workflow's schema", errors
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
