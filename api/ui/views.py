"""What the delivery log's pages show, read through the same services as the API, in the
request's session scoped to the logged-in enterprise (row-level security applies)."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from sqlalchemy.orm import Session

from api.errors import ApiError
from api.routes.templates import preview_slots
from api.schemas.notifications import NotificationRead
from shared.db.enums import NotificationStatus
from shared.notifications import timeline
from shared.notifications.novu_trigger import notification_locale, render_workflow
from shared.notifications.schemas import SUBSCRIBER_ID_PATTERN
from shared.templates import RenderError
from shared.workflows.registry import get_registry

# What a flash code (the `flash` query parameter after a form) says; any other code is ignored,
# so a link cannot make the page say something of its choosing.
FLASHES = {
    "retracted": ("ok", "Cancelled: the notification is RETRACTED."),
    "already_retracted": ("ok", "The notification was already RETRACTED."),
    "retried": ("ok", "Retried: the notification is PENDING again with a fresh attempt budget."),
    "already_delivered": ("error", "Not cancelled: Novu has already delivered its steps."),
    "delivery_unknown": (
        "error",
        "Not cancelled: an earlier attempt's answer from Novu was lost and Novu did not confirm "
        "the cancel, so the notification may be delivered; it is left as it was.",
    ),
    "invalid_state": ("error", "Not possible in the notification's current status."),
    "novu_unavailable": ("error", "Novu could not be reached to cancel: try again later."),
    "too_many_requests": ("error", "Too many requests: try again in a moment."),
}

# Events shown on the page; the rest through GET /api/notifications/{id}/events.
TIMELINE_EVENTS = 200


def flash(code: str | None) -> tuple[str, str] | None:
    """The (kind, message) of a known flash code."""
    return FLASHES.get(code or "")


class ListFilters(BaseModel):
    """The list page's filters, bounded as the list endpoint bounds its parameters; a blank
    field is no filter, and a time without an offset is UTC."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    status: NotificationStatus | None = None
    workflow: str | None = Field(default=None, max_length=255)
    tag: str | None = Field(default=None, max_length=100)
    transactionId: str | None = Field(default=None, max_length=255)
    recipient: str | None = Field(default=None, max_length=255, pattern=SUBSCRIBER_ID_PATTERN)
    batchId: uuid.UUID | None = None
    createdAfter: dt.datetime | None = None
    createdBefore: dt.datetime | None = None

    @field_validator("*", mode="before")
    @classmethod
    def _blank_is_none(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("createdAfter", "createdBefore")
    @classmethod
    def _utc_unless_said(cls, value: dt.datetime | None) -> dt.datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value


FILTER_NAMES = tuple(ListFilters.model_fields)


def list_filters(query: Mapping[str, str]) -> tuple[ListFilters | None, str | None]:
    """The filters a query string asks for, or None and what is wrong with them (by field)."""
    try:
        return ListFilters.model_validate({name: query.get(name) for name in FILTER_NAMES}), None
    except ValidationError as exc:
        wrong = sorted({str(error["loc"][0]) for error in exc.errors() if error["loc"]})
        return None, "Invalid filter: " + ", ".join(wrong) + "."


def recipient_labels(read: NotificationRead) -> list[str]:
    """Each recipient as one line: a subscriberId, or an object's subscriberId / topicKey."""
    labels = []
    for recipient in read.recipients:
        if isinstance(recipient, dict):
            name = recipient.get("subscriberId") or recipient.get("topicKey")
            labels.append(str(name) if name is not None else "(object)")
        else:
            labels.append(recipient)
    return labels


@dataclass(frozen=True, slots=True)
class ChannelContent:
    """One channel step's content as the worker would render it now."""

    step_id: str
    channel: str
    fields: dict[str, str]


@dataclass(frozen=True, slots=True)
class ContentPreview:
    """The workflow's channels rendered with the row's payload, or why they are not."""

    channels: list[ChannelContent]
    problem: str | None = None


def content_preview(read: NotificationRead, enterprise_id: uuid.UUID) -> ContentPreview:
    """Render the workflow's channels with the notification's payload as the worker does
    (shared/notifications/novu_trigger.py), within the preview endpoint's bounds: a slot of
    the same pool (PREVIEW_CONCURRENCY) and the renderer's own time and size limits. Nothing
    rendered is stored, so this is today's workflow and templates, not a copy of what Novu
    received."""
    workflow = get_registry().get_workflow(read.workflow_key, enterprise_id)
    if workflow is None:
        return ContentPreview([], f"no workflow {read.workflow_key!r} to render")
    try:
        with preview_slots.slot(enterprise_id):
            locale = notification_locale(read.recipients, read.payload)
            rendered, _ = render_workflow(workflow, enterprise_id, read.payload, locale)
    except ApiError as exc:  # the preview slots are all taken
        return ContentPreview([], exc.message)
    except RenderError as exc:
        return ContentPreview([], f"the content does not render: {exc}")
    steps = {step.step_id: step.channel.value for step in workflow.steps}
    return ContentPreview(
        [
            ChannelContent(step_id, steps.get(step_id, step_id), fields)
            for step_id, fields in rendered.items()
        ]
    )


def page_context(read: NotificationRead) -> dict[str, Any]:
    """The fields the notification page lists, in order (label, value)."""
    return {
        "fields": [
            ("Status", read.notification_status.value),
            ("Workflow", read.workflow_key),
            ("Transaction id", read.transaction_id),
            ("Tags", ", ".join(read.tags or []) or "—"),
            ("Attempts", str(read.attempts)),
        ],
        "times": [
            ("Created", read.created_at),
            ("Scheduled for", read.scheduled_for),
            ("Next attempt", read.next_attempt_at),
            ("Processed", read.processed_at),
            ("Retracted", read.retracted_at),
            ("Updated", read.updated_at),
        ],
    }


def history(session: Session, read: NotificationRead) -> dict[str, Any]:
    """What happened to the notification: its timeline (the first TIMELINE_EVENTS events), and
    from it Novu's delivery events (`delivery.*`) and its status webhook attempts
    (`webhook.*`)."""
    events = timeline.list_events(session, read.enterprise_id, read.id, limit=TIMELINE_EVENTS + 1)
    shown = events[:TIMELINE_EVENTS]
    return {
        "timeline": shown,
        "timeline_more": len(events) > TIMELINE_EVENTS,
        "delivery_events": [e for e in shown if e.kind.startswith("delivery.")],
        "webhook_events": [e for e in shown if e.kind.startswith("webhook.")],
    }
