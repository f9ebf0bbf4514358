"""Delivering one notification: claim → resolve workflow → render → trigger Novu → record.

Each step commits on its own so that a crash at any point leaves a row the reconciler can
finish: PROCESSING with a lease, or PENDING. The transactionId fixed at insert makes a
repeated trigger harmless, because Novu drops a transactionId it has already seen.
"""

from __future__ import annotations

import enum
import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from shared.db.enums import NotificationStatus as S
from shared.db.session import connection, enterprise_transaction
from shared.notifications.transitions import ClaimedRow, RowOutcome, claim_due, record_outcomes
from shared.novu.client import NovuClient, trigger_idempotency_key
from shared.novu.errors import NovuPermanentError, NovuRetryableError
from shared.novu.retry import backoff_delay
from shared.novu.schemas import TriggerEvent
from shared.rendering import RenderError
from shared.settings import Settings
from shared.templates.renderer import TemplateNotFound, get_template_renderer
from shared.workflows.instance import WorkflowInstance
from shared.workflows.registry import get_registry

log = logging.getLogger(__name__)

# Key under which XNovu's own data travels in the Novu payload (the bridge reads it back).
XNOVU_PAYLOAD_KEY = "_xnovu"
# What a channel says when its template is missing (the fallback is recorded on the row).
FALLBACK_SUBJECT = "{{ _workflow_name }}"
FALLBACK_BODY = "{{ message if message is string else 'You have a new notification.' }}"


class Outcome(enum.StrEnum):
    SENT = "sent"
    FAILED = "failed"
    RETRY = "retry"
    SKIPPED = "skipped"
    LOST_RACE = "lost_race"


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    outcome: Outcome
    retry_in: float | None = None
    message_published: bool = False


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


def deliver(
    notification_id: int, enterprise_id: uuid.UUID, *, novu: NovuClient, settings: Settings
) -> DeliveryResult:
    """Run one delivery attempt of a notification and record its outcome.

    The claim and the outcome are two transactions (a crash in between leaves the row
    PROCESSING with a lease, for the reconciler) on one pooled connection, checked out once."""
    with connection() as conn:
        with enterprise_transaction(conn, enterprise_id):
            claimed, generation = claim_due(
                conn,
                enterprise_id=enterprise_id,
                notification_ids=[notification_id],
                lease_seconds=settings.processing_lease_seconds,
            )
        if not claimed:
            # Already claimed, sent, retracted, not due yet, or a duplicate message.
            return DeliveryResult(Outcome.SKIPPED)
        row = claimed[0]
        # A reload that happened before this claim is honoured by this very delivery.
        get_registry().observe_generation(enterprise_id, generation)
        outcome = _attempt(row, novu, settings)
        with enterprise_transaction(conn, enterprise_id):
            moved = record_outcomes(conn, enterprise_id=enterprise_id, outcomes=[outcome])
    if not moved:
        return DeliveryResult(Outcome.LOST_RACE)
    if outcome.status is S.FAILED:
        log.warning("notification %s failed: %s", notification_id, outcome.error)
        return DeliveryResult(Outcome.FAILED)
    if outcome.status is S.PENDING:
        log.info(
            "notification %s attempt %s retry in %.1fs: %s",
            notification_id,
            row.attempts,
            outcome.retry_in,
            outcome.error.get("message") if outcome.error else None,
        )
        return DeliveryResult(
            Outcome.RETRY, retry_in=outcome.retry_in, message_published=outcome.by_message
        )
    return DeliveryResult(Outcome.SENT)


def _attempt(row: ClaimedRow, novu: NovuClient, settings: Settings) -> RowOutcome:
    """Render and send one claimed row; what its attempt ended in (not yet recorded)."""
    attempt = row.attempts
    try:
        prepared = build_trigger_event(row)
        # transactionId is what keeps Novu from sending twice. The Idempotency-Key is fixed per
        # attempt: Novu keeps a key's answer, errors included, for 24 h, so one key for every
        # attempt would replay a transient 500 forever.
        novu.trigger(
            prepared.event,
            idempotency_key=attempt_idempotency_key(row.transaction_id, attempt),
        )
    except PermanentDeliveryError as exc:
        error = {"code": exc.code, "message": str(exc), "attempt": attempt}
        return RowOutcome(row.id, attempt, S.FAILED, error=error)
    except NovuPermanentError as exc:
        return RowOutcome(
            row.id, attempt, S.FAILED, error=_novu_error("novu_rejected", exc, attempt)
        )
    except NovuRetryableError as exc:
        error = _novu_error("novu_unavailable", exc, attempt)
        if attempt >= settings.delivery_max_attempts:
            error["code"] = "attempts_exhausted"
            return RowOutcome(row.id, attempt, S.FAILED, error=error)
        delay = backoff_delay(
            attempt,
            base=settings.retry_base_seconds,
            cap=settings.retry_max_seconds,
            retry_after=exc.retry_after,
        )
        # Retries sooner than MAX_COUNTDOWN_SECONDS ride a countdown message; later ones wait in
        # the database for beat.
        by_message = delay <= settings.max_countdown_seconds
        return RowOutcome(
            row.id, attempt, S.PENDING, error=error, retry_in=delay, by_message=by_message
        )
    return RowOutcome(row.id, attempt, S.SENT, render_fallbacks=prepared.render_fallbacks or None)


def _novu_error(
    code: str, exc: NovuPermanentError | NovuRetryableError, attempt: int
) -> dict[str, Any]:
    return {
        "code": code,
        "message": str(exc),
        "statusCode": exc.status_code,
        "novu": exc.body,
        "attempt": attempt,
    }
