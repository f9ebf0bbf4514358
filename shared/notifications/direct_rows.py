"""Rows other services insert into `ent_notification` themselves, as the original XNovu's
services did: checked at their claim as intake checks a trigger (docs/architecture.md, "Rows
written by other services").

The database fills in what such a row lacks when it is inserted (migration 0013: its
`workflow_key` from the workflow row it names, its `transaction_id`), beat publishes it like
any PENDING row never published, and the claim reads what checking it needs
(`repository.DIRECT_ROW_SQL`). `vet` then refuses what intake would have refused, before any
Novu call: the row fails alone, FAILED with the reason, and its batch goes on. Intake's rows
are not checked again (their `direct` is None).
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from shared.db.enums import PublishStatus
from shared.errors import DomainError
from shared.notifications.intake import Trigger, check
from shared.notifications.novu_trigger import PermanentDeliveryError
from shared.notifications.repository import ClaimedRow
from shared.notifications.schemas import TriggerRequest
from shared.settings import Settings
from shared.workflows.registry import get_registry

# A row's own publish status that lets it be sent: NONE is this schema's default (intake's
# rows), PUBLISH what the original's services write. The original sent PUBLISH only.
SENDABLE_ROW_STATUSES = frozenset({PublishStatus.NONE.value, PublishStatus.PUBLISH.value})


def vet(row: ClaimedRow, settings: Settings) -> None:
    """Make every check intake makes of a trigger on a row another service inserted; raise
    PermanentDeliveryError saying why it cannot be sent (the row or its workflow not published
    or deactivated, the workflow another enterprise's or unknown, the payload or recipients
    refused, with intake's field errors)."""
    direct = row.direct or {}
    status = direct.get("publishStatus")
    if status not in SENDABLE_ROW_STATUSES:
        raise PermanentDeliveryError(
            "notification_not_published",
            f"the notification is {status}: a row another service inserts is sent when its "
            "publish_status is PUBLISH (or left NONE)",
        )
    if direct.get("deactivated"):
        raise PermanentDeliveryError(
            "notification_deactivated", "the notification is deactivated: it is not sent"
        )
    _check_workflow_row(row.workflow_key, direct.get("workflowId"), direct.get("workflow"))
    workflow = get_registry().get_workflow(row.workflow_key, row.enterprise_id)
    if workflow is None:
        raise PermanentDeliveryError(
            "workflow_not_found", f"no published workflow {row.workflow_key!r}"
        )
    try:
        request = TriggerRequest.model_validate(
            {
                "workflowId": row.workflow_key,
                "payload": row.payload,
                "recipients": (
                    row.recipient_objects if row.recipient_objects is not None else row.recipients
                ),
                "overrides": row.overrides,
                "tags": direct.get("tags"),
            }
        )
        check(Trigger(request), row.enterprise_id, workflow, settings)
    except ValidationError as exc:
        details = [
            {
                "field": ".".join(str(part) for part in error["loc"]) or "row",
                "message": error["msg"],
            }
            for error in exc.errors(include_url=False)
        ]
        raise PermanentDeliveryError(
            "validation_error", "the row is not a notification intake would accept", details
        ) from None
    except DomainError as exc:
        raise PermanentDeliveryError(exc.code, exc.message, exc.details) from None


def _check_workflow_row(
    workflow_key: str, workflow_id: int | None, workflow: dict[str, Any] | None
) -> None:
    """Refuse a row whose workflow row is not this enterprise's (or shared), not the key's,
    not published or deactivated. A row with no workflow row (its key names a workflow defined
    in code only) passes: the registry decides."""
    if workflow is None:
        if workflow_id is not None:
            raise PermanentDeliveryError(
                "workflow_not_found", f"workflow {workflow_id} is not a workflow of this enterprise"
            )
        return
    name = f"workflow {workflow['key']!r} (id {workflow['id']})"
    if workflow["key"] != workflow_key:
        raise PermanentDeliveryError(
            "workflow_mismatch", f"workflow_key {workflow_key!r} is not the key of {name}"
        )
    if workflow["deactivated"]:
        raise PermanentDeliveryError("workflow_deactivated", f"{name} is deactivated")
    if workflow["publishStatus"] != PublishStatus.PUBLISH.value:
        raise PermanentDeliveryError(
            "workflow_not_published",
            f"{name} is {workflow['publishStatus']}: only published workflows are sent",
        )
