"""The checks every trigger passes, single or one event of a bulk request: one place, so the
two endpoints cannot drift apart."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from api.errors import ApiError
from shared.payloads import payload_errors
from shared.settings import Settings
from shared.workflows.instance import WorkflowInstance
from shared.workflows.registry import get_registry


def resolve_workflow(workflow_id: str, enterprise_id: uuid.UUID) -> WorkflowInstance:
    """The workflow the key means for the enterprise; 404 when unknown or unpublished."""
    workflow = get_registry().get_workflow(workflow_id, enterprise_id)
    if workflow is None:
        raise ApiError(404, "workflow_not_found", f"workflow {workflow_id!r} not found")
    return workflow


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
