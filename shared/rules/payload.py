"""A rule's `rule_payload` as the trigger it fires, checked by the intake's own checks.

The API writes `{"recipients": [...], "payload": {...}, "overrides": {...}, "tags": [...]}`
(every key optional). Rows other services wrote in the original's form are read as the
original read them: `recipients` (or a single `recipient`) and, when there is no `payload`
object, every other key as the payload (the original sent the whole object as the payload).
"""

from __future__ import annotations

import uuid
from typing import Any

from pydantic import ValidationError

from shared.errors import InvalidInput
from shared.notifications.intake import Trigger, check
from shared.notifications.repository import NewNotification
from shared.notifications.schemas import TriggerRequest
from shared.settings import Settings
from shared.workflows.instance import WorkflowInstance

# Keys of rule_payload that are not the payload itself.
_FIELDS = frozenset({"recipients", "recipient", "payload", "overrides", "tags"})


def trigger_request(workflow_key: str, rule_payload: Any) -> TriggerRequest:
    """The trigger a rule fires. InvalidInput naming each field the trigger would refuse."""
    body = rule_payload if rule_payload is not None else {}
    if not isinstance(body, dict):
        raise InvalidInput(
            "invalid_rule_payload",
            "rule_payload must be an object",
            [{"field": "rule_payload", "message": "must be an object"}],
        )
    recipients = body.get("recipients")
    if recipients is None and body.get("recipient") is not None:
        recipients = [body["recipient"]]
    payload = body.get("payload")
    if not isinstance(payload, dict):
        payload = {key: value for key, value in body.items() if key not in _FIELDS}
    fields = {
        "workflowId": workflow_key,
        "payload": payload,
        "recipients": recipients,
        "overrides": body.get("overrides"),
        "tags": body.get("tags"),
    }
    try:
        return TriggerRequest.model_validate(fields)
    except ValidationError as exc:
        details = [
            {
                "field": ".".join(["rule_payload", *(str(part) for part in error["loc"])]),
                "message": error["msg"],
            }
            for error in exc.errors(include_url=False)
        ]
        raise InvalidInput(
            "invalid_rule_payload", "the rule's payload is not a trigger XNovu accepts", details
        ) from None


def checked_notification(
    rule_payload: Any,
    workflow: WorkflowInstance,
    enterprise_id: uuid.UUID,
    settings: Settings,
    index: int = 0,
) -> NewNotification:
    """What a fire of the rule records, after every check a trigger gets at intake
    (payload size and schema, recipients, storable values). Raises the DomainError a trigger
    with this body would answer with."""
    trigger = Trigger(trigger_request(workflow.key, rule_payload), index=index)
    checked = check(trigger, enterprise_id, workflow, settings)
    assert isinstance(checked, tuple)  # a rule's trigger never names a notificationId
    return checked[1]
