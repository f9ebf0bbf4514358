"""The Novu trigger of one claimed notification: its workflow, every channel rendered, its
recipients and the transactionId fixed at insert (docs/architecture.md, guarantee 4).

The worker renders every channel before calling Novu, so a template error is a FAILED row with
its reason, never a half-sent notification. The rendered content travels in the payload
under XNOVU_PAYLOAD_KEY, where the bridge's `execute` returns it as each step's output, when
the event stays within Novu's size limit with it; otherwise it is left out and the bridge
renders each step from the payload when Novu executes it (docs/architecture.md, "Size").
Intake refuses a trigger whose event would be over the limit even without it
(`event_bytes_without_rendered`), so an accepted notification always fits.

Novu's subscribers and topics are global to a Novu environment, and a trigger creates or
updates the subscribers it names. So every subscriberId and topicKey in `to` goes to Novu in
its enterprise's namespace, `<enterprise uuid>_<caller's id>` (docs/architecture.md,
"Recipients"): an enterprise can neither reach nor rewrite another's subscribers. The row keeps
the caller's ids; only the event carries the namespaced ones.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from shared.errors import InvalidInput
from shared.notifications.repository import ClaimedRow, json_text
from shared.novu.client import trigger_idempotency_key
from shared.novu.schemas import TriggerEvent
from shared.payloads import json_depth
from shared.settings import get_settings
from shared.templates.cache import MAX_LOCALE_LENGTH, usable_locale
from shared.templates.errors import RenderMemoryExceeded, TemplateNotPublished
from shared.templates.renderer import TemplateNotFound, get_template_renderer
from shared.templates.sandbox import RenderError
from shared.workflows.instance import WorkflowInstance
from shared.workflows.registry import get_registry

# Key under which XNovu's own data travels in the Novu payload (the bridge reads it back).
XNOVU_PAYLOAD_KEY = "_xnovu"
# What the envelope keeps for the locale a notification is rendered in (`_xnovu.locale`).
LOCALE_RESERVE_BYTES = len(',"locale":""') + MAX_LOCALE_LENGTH
# What a channel says when its template is missing (the fallback is recorded on the row).
FALLBACK_SUBJECT = "{{ _workflow_name }}"
FALLBACK_BODY = "{{ message if message is string else 'You have a new notification.' }}"
# Between the enterprise's id and the caller's in a subscriberId or topicKey sent to Novu: a
# character every form of Novu's subscriberId rule allows, in an email-like id's local part too.
NAMESPACE_SEPARATOR = "_"
# Novu's limit on one trigger event, as compact JSON (it answers 413 above it).
NOVU_EVENT_MAX_BYTES = 524_288
# The event's bytes besides its payload, recipients and overrides, at their largest: the keys,
# the transactionId and XNovu's metadata in the payload (every step id in `channels`).
_ENVELOPE_BYTES = len(
    json_text(
        {
            "name": "",
            "to": None,
            "payload": {
                XNOVU_PAYLOAD_KEY: {
                    "enterpriseId": "00000000-0000-0000-0000-000000000000",
                    "notificationId": 2**63 - 1,
                    "workflowType": "DYNAMIC",
                    "channels": ["chat", "email", "in_app", "push", "sms"],
                    "locale": "x" * MAX_LOCALE_LENGTH,  # usable_locale's longest
                }
            },
            "overrides": None,
            "transactionId": "xn-00000000-0000-0000-0000-000000000000",
        }
    )
)


class PermanentDeliveryError(Exception):
    """Delivery cannot succeed by retrying (no such workflow, a template error, no recipient);
    `details` names the fields at fault, as intake's 422 does."""

    def __init__(self, code: str, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.details = details


@dataclass(frozen=True, slots=True)
class PreparedTrigger:
    event: TriggerEvent
    render_fallbacks: list[dict[str, Any]]


def render_workflow(
    workflow: WorkflowInstance,
    enterprise_id: uuid.UUID,
    payload: Mapping[str, Any],
    locale: str | None = None,
) -> tuple[dict[str, dict[str, str]], list[dict[str, Any]]]:
    """Every channel's content by step id (templates in their variant for `locale`), and the
    channels that fell back to default content."""
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
                content = renderer.render_template(
                    step.template_id, enterprise_id, payload, locale=locale
                )
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


def notification_locale(to: Sequence[Any], payload: Mapping[str, Any]) -> str | None:
    """The locale a notification is rendered in: its recipients' `locale` when the subscriber
    objects that give one agree, else the payload's `locale`, else None (the templates' own
    content). One render serves every recipient of a notification (docs/architecture.md,
    "Locales")."""
    given = {
        recipient["locale"]
        for recipient in to
        if isinstance(recipient, dict) and usable_locale(recipient.get("locale"))
    }
    if len(given) == 1:
        chosen: str = given.pop()
        return chosen
    return usable_locale(payload.get("locale"))


def derived_subscriber(
    workflow: WorkflowInstance, payload: Mapping[str, Any]
) -> dict[str, Any] | None:
    """The subscriber object the workflow derives from the payload, its unset fields left out;
    None when it derives none. InvalidInput when the workflow's code fails on the payload."""
    try:
        derived = workflow.default_subscriber(payload)
    except Exception as exc:  # a workflow's own code, on a payload it did not expect
        raise InvalidInput(
            "invalid_payload", f"the workflow cannot derive its subscriber from the payload: {exc}"
        ) from None
    if not derived or not derived.get("subscriberId"):
        return None
    subscriber = {key: value for key, value in derived.items() if value is not None}
    subscriber["subscriberId"] = str(subscriber["subscriberId"])  # e.g. a numeric user id
    return subscriber


def subscriber_namespace(enterprise_id: uuid.UUID) -> str:
    """What the enterprise's subscriberIds and topicKeys are prefixed with at Novu; empty when
    NOVU_NAMESPACE_SUBSCRIBERS is off (bare ids, for moving a deployment over)."""
    if not get_settings().novu_namespace_subscribers:
        return ""
    return f"{enterprise_id}{NAMESPACE_SEPARATOR}"


def novu_recipients(
    recipients: Sequence[str],
    recipient_objects: Sequence[Any] | None,
    derived: Mapping[str, Any] | None,
    namespace: str,
) -> list[Any]:
    """Novu's `to`: the recipients as given (a null field means "not given" and is left out),
    a bare subscriberId the workflow derives a subscriber for as that subscriber object, every
    subscriberId and topicKey (and a topic's `exclude`) in the enterprise's namespace."""
    to: list[Any] = []
    for recipient in recipient_objects if recipient_objects is not None else recipients:
        if isinstance(recipient, str):
            if derived is not None and recipient == derived["subscriberId"]:
                to.append(_namespaced(dict(derived), namespace))
            else:
                to.append(namespace + recipient)
        else:
            given = {key: value for key, value in recipient.items() if value is not None}
            to.append(_namespaced(given, namespace))
    return to


def _namespaced(recipient: dict[str, Any], namespace: str) -> dict[str, Any]:
    """A subscriber object or topic with its ids in the namespace (changed in place)."""
    for key in ("subscriberId", "topicKey"):
        if key in recipient:
            recipient[key] = namespace + recipient[key]
    if "exclude" in recipient:
        recipient["exclude"] = [namespace + excluded for excluded in recipient["exclude"]]
    return recipient


def event_bytes_without_rendered(
    workflow_key: str, *, to_bytes: int, payload_bytes: int, overrides_bytes: int
) -> int:
    """At most the bytes of a notification's Novu event without its rendered content, from the
    JSON sizes of its `to`, payload and overrides (what intake holds against
    NOVU_EVENT_MAX_BYTES)."""
    return _ENVELOPE_BYTES + len(workflow_key.encode()) + to_bytes + payload_bytes + overrides_bytes


def build_trigger_event(row: ClaimedRow) -> PreparedTrigger:
    """The Novu trigger for a claimed row, with every channel rendered up front; the rendered
    content rides in the payload only when the event stays within Novu's limit with it."""
    workflow = get_registry().get_workflow(row.workflow_key, row.enterprise_id)
    if workflow is None:
        raise PermanentDeliveryError("workflow_not_found", f"no workflow {row.workflow_key!r}")
    _check_depth(row)
    try:
        derived = derived_subscriber(workflow, row.payload)
    except InvalidInput:
        derived = None  # intake accepted it, so its recipients do not need the derived one
    namespace = subscriber_namespace(row.enterprise_id)
    to = novu_recipients(row.recipients, row.recipient_objects, derived, namespace)
    locale = notification_locale(to, row.payload)
    overrides = row.overrides
    try:
        rendered, fallbacks = render_workflow(workflow, row.enterprise_id, row.payload, locale)
        if overrides:
            overrides = get_template_renderer().render_values(
                overrides, row.payload, enterprise_id=row.enterprise_id, locale=locale
            )
    except RenderMemoryExceeded as exc:
        raise PermanentDeliveryError("render_memory_exceeded", str(exc)) from exc
    except TemplateNotPublished as exc:
        raise PermanentDeliveryError("template_not_published", str(exc)) from exc
    except RenderError as exc:
        raise PermanentDeliveryError("render_failed", str(exc)) from exc
    if not to:
        raise PermanentDeliveryError("no_recipients", "the notification has no recipients")

    metadata: dict[str, Any] = {
        "enterpriseId": str(row.enterprise_id),
        "notificationId": row.id,
        "workflowType": workflow.workflow_type.value,
        "channels": sorted(rendered),
    }
    if locale is not None:
        metadata["locale"] = locale  # the bridge renders in it too
    body: dict[str, Any] = {"name": row.workflow_key, "to": to, "transactionId": row.transaction_id}
    if overrides:
        body["overrides"] = overrides
    # Measured as the JSON Novu receives (the same bytes as the client's canonical body, whose
    # keys are only sorted), before the rendered content is let in.
    try:
        text = json_text({**body, "payload": {**row.payload, XNOVU_PAYLOAD_KEY: metadata}})
    except (ValueError, RecursionError) as exc:  # only a row recorded before intake checked it
        raise PermanentDeliveryError(
            "payload_unserialisable", f"the Novu event cannot be written as JSON: {exc}"
        ) from exc
    size = len(text.encode())
    if size > NOVU_EVENT_MAX_BYTES:  # only a row recorded before intake checked the size
        raise PermanentDeliveryError(
            "event_too_large",
            f"the Novu event is {size} bytes, over Novu's limit of {NOVU_EVENT_MAX_BYTES}",
        )
    carried = len(json_text(rendered).encode()) + len(',"rendered":')
    if size + carried <= NOVU_EVENT_MAX_BYTES:
        metadata["rendered"] = rendered
    # else the bridge renders each step from the payload when Novu executes it
    # (api/bridge/execute.py).
    try:
        event = TriggerEvent.model_validate(
            {**body, "payload": {**row.payload, XNOVU_PAYLOAD_KEY: metadata}}
        )
    except ValidationError as exc:
        raise PermanentDeliveryError(
            "invalid_trigger", f"cannot build the Novu trigger: {exc}"
        ) from exc
    return PreparedTrigger(event=event, render_fallbacks=fallbacks)


def _check_depth(row: ClaimedRow) -> None:
    """Refuse a row whose payload or overrides nest deeper than MAX_PAYLOAD_DEPTH (recorded
    before intake checked it): the event's JSON encoder gives up near 250 levels, failing the
    whole call it is in, and the bridge refuses such an event when Novu executes it."""
    limit = get_settings().max_payload_depth
    for field, value in (("payload", row.payload), ("overrides", row.overrides)):
        depth = json_depth(value)
        if depth > limit:
            raise PermanentDeliveryError(
                "payload_unserialisable",
                f"the {field} is nested {depth} levels deep, over MAX_PAYLOAD_DEPTH ({limit}): "
                "a Novu trigger cannot carry it",
            )


def attempt_idempotency_key(transaction_id: str, attempt: int) -> str:
    """The Idempotency-Key of one attempt: deterministic, and new for each attempt."""
    return f"{trigger_idempotency_key(transaction_id)}-{attempt}"
