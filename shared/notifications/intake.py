"""Intake: every trigger enters here, whoever sends it (single, bulk, `notificationId`).

`accept` runs the same checks on every trigger (enterprise, workflow, payload size and schema,
recipients, storable values), builds its row with the fingerprint its Idempotency-Key is
compared by, has the process's recorder commit it, and answers each trigger on its own: an
`Accepted`, or the error that trigger answers with (a `DomainError`, or a database error). A
trigger naming `notificationId` asks to deliver a PENDING row another service recorded: it is
checked the same way, and published if due. See docs/architecture.md, "The life of one
notification".

A lone trigger is checked on the event loop (it costs tens of microseconds when the registry
is fresh, less than a hand-off to a thread) unless its payload's check against the workflow's
schema could cost more (payloads.LOOP_CHECK_WORK); many are checked on a worker thread, so a bulk
request cannot hold the loop for the milliseconds its checks take.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import re
import uuid
from asyncio import gather
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import anyio.to_thread
from pydantic import ValidationError
from sqlalchemy import select

from shared.apikeys import Principal
from shared.db.enums import NotificationStatus
from shared.db.models import Notification
from shared.db.session import transaction
from shared.errors import DomainError, InvalidInput, NotFound, StateConflict, TooLarge
from shared.notifications.novu_trigger import (
    NOVU_EVENT_MAX_BYTES,
    derived_subscriber,
    event_bytes_without_rendered,
    novu_recipients,
    subscriber_namespace,
)
from shared.notifications.publisher import publish_enterprise
from shared.notifications.recorder import Answer, log_accepted, trigger_recorder
from shared.notifications.repository import (
    NewNotification,
    Recorded,
    RecordResult,
    is_due,
    json_text,
)
from shared.notifications.schemas import (
    SUBSCRIBER,
    TriggerRequest,
    recipient_as_given,
    recipient_key,
)
from shared.payloads import LOOP_CHECK_WORK, check_estimate, json_depth, payload_errors
from shared.settings import Settings, get_settings
from shared.templates.renderer import override_errors
from shared.workflows.instance import WorkflowInstance
from shared.workflows.registry import get_registry

# A NUL character as json.dumps writes it: `\u0000` after an even number of backslashes (an odd
# number means the backslash itself was escaped, i.e. the text holds a literal "\u0000").
_ESCAPED_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Trigger:
    """One trigger to accept: its body, its Idempotency-Key, its position in its request, and
    the batchId of the bulk request it came in (recorded on its row)."""

    request: TriggerRequest
    idempotency_key: str | None = None
    index: int = 0
    batch_id: uuid.UUID | None = None


@dataclass(frozen=True, slots=True)
class Accepted:
    """A trigger recorded as (or naming) a PENDING notification."""

    index: int
    enterprise_id: uuid.UUID
    workflow_key: str
    notification_id: int
    transaction_id: str
    scheduled_for: dt.datetime | None
    replayed: bool = False

    @property
    def due(self) -> bool:
        return is_due(self.scheduled_for)


# What became of one trigger: accepted, or the error it answers with.
Result = Accepted | BaseException


@dataclass(frozen=True, slots=True)
class _Existing:
    """A checked trigger naming a notification another service recorded."""

    index: int
    enterprise_id: uuid.UUID
    notification_id: int
    workflow_key: str
    workflow: WorkflowInstance


_Checked = tuple[uuid.UUID, NewNotification] | _Existing | DomainError


async def accept(
    triggers: Sequence[Trigger], *, principal: Principal, enterprise_id: uuid.UUID | None = None
) -> list[Result]:
    """Check, record and publish triggers; a result for each, in order. `enterprise_id` is the
    one the request names for triggers whose body names none."""
    settings = get_settings()
    if not triggers:
        return []
    if len(triggers) == 1:
        checked = [await _check_one(triggers[0], principal, enterprise_id, settings)]
    else:
        checked = await anyio.to_thread.run_sync(
            _check_all, triggers, principal, enterprise_id, settings
        )

    results: list[Result | None] = [None] * len(triggers)
    position = {trigger.index: number for number, trigger in enumerate(triggers)}
    new: dict[uuid.UUID, list[NewNotification]] = {}
    existing: dict[uuid.UUID, list[_Existing]] = {}
    for number, item in enumerate(checked):
        if isinstance(item, DomainError):
            results[number] = item
        elif isinstance(item, _Existing):
            existing.setdefault(item.enterprise_id, []).append(item)
        else:
            new.setdefault(item[0], []).append(item[1])

    # Each enterprise's share is one submission; submitted together, they share a batch.
    record = trigger_recorder().record_all
    submissions = [record(enterprise, principal.actor, group) for enterprise, group in new.items()]
    answered = [await submissions[0]] if len(submissions) == 1 else await gather(*submissions)
    for (enterprise, notifications), answers in zip(new.items(), answered, strict=True):
        for notification, answer in zip(notifications, answers, strict=True):
            results[position[notification.index]] = _result(answer, enterprise)
    for enterprise, items in existing.items():
        for item, result in await _trigger_existing_async(enterprise, items):
            results[position[item.index]] = result
            if log.isEnabledFor(logging.INFO):
                _log_accepted(result)
    assert all(result is not None for result in results)
    return cast("list[Result]", results)


def _log_accepted(result: Result) -> None:
    """The line of a trigger naming a stored notification, as the recorder logs each one it
    records: what `grep <notification id>` finds first."""
    if isinstance(result, Accepted):
        log_accepted(
            log,
            result.enterprise_id,
            result.notification_id,
            result.transaction_id,
            result.workflow_key,
            replayed=result.replayed,
        )


async def _check_one(
    trigger: Trigger, principal: Principal, default: uuid.UUID | None, settings: Settings
) -> _Checked:
    try:
        enterprise = principal.acting_for(trigger.request.enterpriseId or default)
    except DomainError as exc:
        return exc
    registry = get_registry()
    if registry.is_fresh(enterprise):  # the workflow comes from memory: no I/O
        workflow = registry.get_workflow(trigger.request.workflowId, enterprise)
        schema = workflow.payload_schema if workflow is not None else None
        if check_estimate(schema, trigger.request.payload, LOOP_CHECK_WORK) <= LOOP_CHECK_WORK:
            return _checked_with(trigger, enterprise, workflow, settings)
    return await anyio.to_thread.run_sync(_checked, trigger, principal, default, settings)


def _check_all(
    triggers: Sequence[Trigger],
    principal: Principal,
    default: uuid.UUID | None,
    settings: Settings,
) -> list[_Checked]:
    return [_checked(trigger, principal, default, settings) for trigger in triggers]


def _checked(
    trigger: Trigger, principal: Principal, default: uuid.UUID | None, settings: Settings
) -> _Checked:
    """One trigger's checks, its refusal as a value."""
    try:
        enterprise = principal.acting_for(trigger.request.enterpriseId or default)
    except DomainError as exc:
        return exc
    workflow = get_registry().get_workflow(trigger.request.workflowId, enterprise)
    return _checked_with(trigger, enterprise, workflow, settings)


def _checked_with(
    trigger: Trigger,
    enterprise_id: uuid.UUID,
    workflow: WorkflowInstance | None,
    settings: Settings,
) -> _Checked:
    """One trigger's checks with the workflow its key means for the enterprise, already looked
    up (None: there is none), its refusal as a value."""
    try:
        return check(trigger, enterprise_id, _found(workflow, trigger.request.workflowId), settings)
    except DomainError as exc:
        return exc


def check(
    trigger: Trigger, enterprise_id: uuid.UUID, workflow: WorkflowInstance, settings: Settings
) -> tuple[uuid.UUID, NewNotification] | _Existing:
    """Every check of one trigger for its enterprise and workflow; what to record, or which
    recorded notification it names. Raises the DomainError the trigger answers with."""
    request = trigger.request
    if request.notificationId is not None:
        # The stored row's payload is what Novu will get: trigger_existing checks that one.
        return _Existing(
            trigger.index, enterprise_id, request.notificationId, request.workflowId, workflow
        )
    payload_bytes = check_payload(workflow, request.payload, settings)
    recipients = resolve_recipients(request, workflow, enterprise_id, settings)
    stored = recipients.as_given if recipients.as_given is not None else recipients.keys
    stored_text = storable_json(stored, "recipients")
    overrides_bytes = 0
    if request.overrides is not None:
        check_depth(request.overrides, "overrides", settings)
        overrides_bytes = len(storable_json(request.overrides, "overrides").encode())
        # The worker renders its template strings (docs/architecture.md, "Templates of the
        # original"): one that cannot compile is refused now rather than FAILED then.
        syntax = override_errors(request.overrides)
        if syntax:
            raise InvalidInput(
                "invalid_overrides", "a template in overrides does not compile", syntax
            )
    for name, value in (("tags", request.tags), ("idempotencyKey", trigger.idempotency_key)):
        if value is not None:
            storable_json(value, name)
    # What Novu will receive must fit Novu's limit even without the rendered content, which
    # the worker leaves out when it does not fit (docs/architecture.md, "Size").
    to_bytes = len((stored_text if recipients.to is stored else json_text(recipients.to)).encode())
    if recipients.to is stored:  # bare ids, each sent in the enterprise's namespace
        to_bytes += len(subscriber_namespace(enterprise_id)) * len(stored)
    size = event_bytes_without_rendered(
        request.workflowId,
        to_bytes=to_bytes,
        payload_bytes=payload_bytes,
        overrides_bytes=overrides_bytes,
    )
    if size > NOVU_EVENT_MAX_BYTES:
        raise TooLarge(
            "event_too_large",
            f"the Novu event of this trigger (payload, recipients, overrides and XNovu's "
            f"metadata) would be {size} bytes, over Novu's limit of {NOVU_EVENT_MAX_BYTES}",
        )
    notification = NewNotification(
        index=trigger.index,
        workflow_key=request.workflowId,
        notification_workflow_id=workflow.workflow_id,
        payload=request.payload,
        recipients=recipients.keys,
        recipient_objects=recipients.as_given,
        overrides=request.overrides,
        tags=request.tags,
        scheduled_for=request.scheduledFor,
        idempotency_key=trigger.idempotency_key,
        request_fingerprint=_fingerprint(request, enterprise_id, trigger.idempotency_key),
        batch_id=trigger.batch_id,
    )
    return enterprise_id, notification


def _found(workflow: WorkflowInstance | None, workflow_id: str) -> WorkflowInstance:
    """The workflow a lookup of `workflow_id` found; NotFound (unknown or unpublished) when it
    found none."""
    if workflow is None:
        raise NotFound("workflow_not_found", f"workflow {workflow_id!r} not found")
    return workflow


def check_payload(workflow: WorkflowInstance, payload: dict[str, Any], settings: Settings) -> int:
    """The bytes of the payload's JSON. InvalidInput when nested too deeply or for a value
    PostgreSQL cannot store, TooLarge over the payload limit, InvalidInput naming each field
    that fails the workflow's schema."""
    check_depth(payload, "payload", settings)
    size = len(storable_json(payload, "payload").encode())
    if size > settings.max_payload_bytes:
        raise TooLarge("payload_too_large", f"payload exceeds {settings.max_payload_bytes} bytes")
    errors = payload_errors(workflow.payload_schema, payload, size)
    if errors:
        raise InvalidInput(
            "invalid_payload", "the payload does not match the workflow's schema", errors
        )
    return size


def check_depth(value: Any, field: str, settings: Settings) -> None:
    """InvalidInput when the value nests deeper than MAX_PAYLOAD_DEPTH: the worker could not
    serialise a value nested a few hundred levels deep, and every check recurses per level."""
    if json_depth(value) > settings.max_payload_depth:
        raise InvalidInput(
            "payload_too_deep",
            f"{field} is nested deeper than {settings.max_payload_depth} levels",
            [{"field": field, "message": f"at most {settings.max_payload_depth} levels deep"}],
        )


@dataclass(frozen=True, slots=True)
class Recipients:
    """Who a trigger is for: the subscriberIds / topicKeys (`recipients`), the list as given
    when any is an object (`recipient_objects`, else None) and Novu's `to` for them (for bare
    ids alone, the ids themselves: the enterprise's namespace is only counted)."""

    keys: list[str]
    as_given: list[Any] | None
    to: list[Any]


def resolve_recipients(
    request: TriggerRequest,
    workflow: WorkflowInstance,
    enterprise_id: uuid.UUID,
    settings: Settings,
) -> Recipients:
    """Who receives it: the trigger's recipients or subscriberId, else the subscriber the
    workflow derives from the payload, else the enterprise itself (its own Novu subscriber,
    as the original XNovu's default subscriber). InvalidInput over MAX_RECIPIENTS, or when the
    subscriber derived from the payload is not one Novu accepts."""
    as_given: list[Any] | None = None
    if request.recipients:
        keys = [recipient_key(recipient) for recipient in request.recipients]
        if any(not isinstance(recipient, str) for recipient in request.recipients):
            as_given = [recipient_as_given(recipient) for recipient in request.recipients]
        derived = _derived_if_any(workflow, request.payload)
    elif request.subscriberId:
        keys = [request.subscriberId]
        derived = _derived_if_any(workflow, request.payload)
    else:
        derived = derived_subscriber(workflow, request.payload)
        keys = [derived["subscriberId"]] if derived else [str(enterprise_id)]
    if len(keys) > settings.max_recipients:
        raise InvalidInput("too_many_recipients", f"at most {settings.max_recipients} recipients")
    if derived is not None and derived["subscriberId"] in keys:
        _check_derived(derived)
    else:
        derived = None
    if as_given is None and derived is None:
        return Recipients(keys, None, keys)
    namespace = subscriber_namespace(enterprise_id)
    return Recipients(keys, as_given, novu_recipients(keys, as_given, derived, namespace))


def _derived_if_any(workflow: WorkflowInstance, payload: dict[str, Any]) -> dict[str, Any] | None:
    # Explicit recipients need the derived subscriber only to send a bare id that is its
    # subscriberId as that subscriber object, as the worker does.
    if workflow.subscriber is None:
        return None
    try:
        return derived_subscriber(workflow, payload)
    except InvalidInput:
        return None


def _check_derived(derived: dict[str, Any]) -> None:
    """InvalidInput naming each field of the derived subscriber Novu would not accept."""
    try:
        SUBSCRIBER.validate_python(derived)
    except ValidationError as exc:
        details = [
            {
                "field": ".".join(["subscriber", *(str(part) for part in error["loc"])]),
                "message": error["msg"],
            }
            for error in exc.errors(include_url=False)
        ]
        raise InvalidInput(
            "invalid_recipient",
            "the subscriber the workflow derives from the payload is not one Novu accepts",
            details,
        ) from None


def storable_json(value: Any, field: str) -> str:
    """The value's JSON text, refusing what PostgreSQL cannot store (NUL characters, lone
    surrogates, NaN) so that one such trigger cannot fail the statement its group shares."""
    try:
        text = json_text(value)
    except ValueError:
        raise InvalidInput("invalid_value", f"{field} holds NaN or Infinity") from None
    try:
        text.encode()
    except UnicodeEncodeError:
        raise InvalidInput(
            "invalid_value", f"{field} holds text that is not valid Unicode"
        ) from None
    if "\\u0000" in text and _ESCAPED_NUL.search(text):
        raise InvalidInput("invalid_value", f"{field} holds a NUL character")
    return text


def _fingerprint(
    request: TriggerRequest, enterprise_id: uuid.UUID, idempotency_key: str | None
) -> str | None:
    """What a later use of the key is compared by: the body without its own key (a bulk
    event's idempotencyKey), so the same body sent to either endpoint is the same request.
    Only a key's later uses compare fingerprints: none without a key."""
    if idempotency_key is None:
        return None
    body = {
        "enterpriseId": str(enterprise_id),
        "body": request.model_dump(mode="json", exclude={"idempotencyKey"}),
    }
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _result(answer: Answer, enterprise_id: uuid.UUID) -> Result:
    if not isinstance(answer, Recorded):
        return answer
    if answer.result is RecordResult.CONFLICT:
        return InvalidInput(
            "idempotency_key_reused",
            "this idempotency key was used with a different request body",
            {"notificationId": answer.notification_id},
        )
    return Accepted(
        answer.index,
        enterprise_id,
        answer.workflow_key,
        answer.notification_id,
        answer.transaction_id,
        answer.scheduled_for,
        replayed=answer.result is RecordResult.REPLAYED,
    )


def _stored_payload_refusal(workflow: WorkflowInstance, payload: Any) -> DomainError | None:
    """Why a row another service stored cannot be sent with its payload (the workflow's
    schema, the payload limits), or None."""
    try:
        check_payload(workflow, payload if isinstance(payload, dict) else {}, get_settings())
    except DomainError as exc:
        return exc
    return None


async def _trigger_existing_async(
    enterprise_id: uuid.UUID, items: list[_Existing]
) -> list[tuple[_Existing, Result]]:
    try:
        return await anyio.to_thread.run_sync(trigger_existing, enterprise_id, items)
    except Exception as exc:  # the database: every one of them answers with it
        return [(item, exc) for item in items]


def trigger_existing(
    enterprise_id: uuid.UUID, items: Sequence[_Existing]
) -> list[tuple[_Existing, Result]]:
    """Triggers naming notifications another service recorded (the original `notificationId`):
    each must be this enterprise's, of the named workflow and PENDING; the due ones are
    published once read."""
    with transaction(enterprise_id) as session:
        rows = {
            row.id: row
            for row in session.scalars(
                select(Notification).where(
                    Notification.id.in_([item.notification_id for item in items]),
                    Notification.enterprise_id == enterprise_id,
                )
            )
        }
    results: list[tuple[_Existing, Result]] = []
    due: dict[int, None] = {}  # ids in order, each once
    for item in items:
        row = rows.get(item.notification_id)
        result: Result
        if row is None:
            result = NotFound("not_found", "notification not found")
        elif row.workflow_key != item.workflow_key:
            message = "the notification belongs to another workflow"
            result = InvalidInput("workflow_mismatch", message)
        elif row.notification_status is not NotificationStatus.PENDING:
            message = f"the notification is {row.notification_status.value}, not PENDING"
            result = StateConflict("invalid_state", message)
        elif (refusal := _stored_payload_refusal(item.workflow, row.payload)) is not None:
            result = refusal
        else:
            result = Accepted(
                item.index,
                enterprise_id,
                row.workflow_key,
                row.id,
                row.transaction_id,
                row.scheduled_for,
            )
            if is_due(row.scheduled_for):
                due[row.id] = None
        results.append((item, result))
    publish_enterprise(enterprise_id, due)
    return results
