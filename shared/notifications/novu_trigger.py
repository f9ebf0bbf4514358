"""The Novu trigger of one claimed notification: its workflow, every channel rendered, its
recipients and the transactionId fixed at insert (docs/architecture.md, guarantee 4).

The worker renders every channel before calling Novu, so a template error is a FAILED row with
its reason, never a half-sent notification. The rendered content travels in the payload
under XNOVU_PAYLOAD_KEY, where the bridge's `execute` returns it as each step's output.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from shared.notifications.repository import ClaimedRow
from shared.novu.client import trigger_idempotency_key
from shared.novu.schemas import TriggerEvent
from shared.templates.renderer import TemplateNotFound, get_template_renderer
from shared.templates.sandbox import RenderError
from shared.workflows.instance import WorkflowInstance
from shared.workflows.registry import get_registry

# Key under which XNovu's own data travels in the Novu payload (the bridge reads it back).
XNOVU_PAYLOAD_KEY = "_xnovu"
# What a channel says when its template is missing (the fallback is recorded on the row).
FALLBACK_SUBJECT = "{{ _workflow_name }}"
FALLBACK_BODY = "{{ message if message is string else 'You have a new notification.' }}"


class PermanentDeliveryError(Exception):
    """Delivery cannot succeed by retrying (no such workflow, a template error, no recipient)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class PreparedTrigger:
    event: TriggerEvent
    render_fallbacks: list[dict[str, Any]]


def render_workflow(
    workflow: WorkflowInstance, enterprise_id: uuid.UUID, payload: Mapping[str, Any]
) -> tuple[dict[str, dict[str, str]], list[dict[str, Any]]]:
    """Every channel's content by step id, and the channels that fell back to default content."""
    renderer = get_template_renderer()
    rendered: dict[str, dict[str, str]] = {}
    fallbacks: list[dict[str, Any]] = []
    for step in workflow.steps:
        if step.content is not None:
            content = renderer.render_source(
                step.channel,
                step.content.subject,
                step.content.body,
                payload,
                enterprise_id=enterprise_id,
            )
        else:
            assert step.template_id is not None
            try:
                content = renderer.render_template(step.template_id, enterprise_id, payload)
            except TemplateNotFound as exc:
                fallbacks.append(
                    {
                        "channel": step.channel.value,
                        "templateId": step.template_id,
                        "reason": str(exc),
                    }
                )
                content = renderer.render_source(
                    step.channel,
                    FALLBACK_SUBJECT,
                    FALLBACK_BODY,
                    {**payload, "_workflow_name": workflow.name or workflow.key},
                    enterprise_id=enterprise_id,
                )
        rendered[step.step_id] = content.as_dict()
    return rendered, fallbacks


def build_trigger_event(row: ClaimedRow) -> PreparedTrigger:
    """The Novu trigger for a claimed row, with every channel rendered up front."""
    workflow = get_registry().get_workflow(row.workflow_key, row.enterprise_id)
    if workflow is None:
        raise PermanentDeliveryError("workflow_not_found", f"no workflow {row.workflow_key!r}")
    try:
        rendered, fallbacks = render_workflow(workflow, row.enterprise_id, row.payload)
    except RenderError as exc:
        raise PermanentDeliveryError("render_failed", str(exc)) from exc

    derived = workflow.default_subscriber(row.payload)
    to: list[Any] = [
        {k: v for k, v in derived.items() if v is not None}
        if derived is not None and recipient == derived.get("subscriberId")
        else recipient
        for recipient in row.recipients
    ]
    if not to:
        raise PermanentDeliveryError("no_recipients", "the notification has no recipients")

    payload = dict(row.payload)
    payload[XNOVU_PAYLOAD_KEY] = {
        "enterpriseId": str(row.enterprise_id),
        "notificationId": row.id,
        "workflowType": workflow.workflow_type.value,
        "channels": sorted(rendered),
        "rendered": rendered,
    }
    try:
        event = TriggerEvent.model_validate(
            {
                "name": row.workflow_key,
                "to": to,
                "payload": payload,
                "overrides": row.overrides or None,
                "transactionId": row.transaction_id,
            }
        )
    except ValidationError as exc:
        raise PermanentDeliveryError(
            "invalid_trigger", f"cannot build the Novu trigger: {exc}"
        ) from exc
    return PreparedTrigger(event=event, render_fallbacks=fallbacks)


def attempt_idempotency_key(transaction_id: str, attempt: int) -> str:
    """The Idempotency-Key of one attempt: deterministic, and new for each attempt."""
    return f"{trigger_idempotency_key(transaction_id)}-{attempt}"
