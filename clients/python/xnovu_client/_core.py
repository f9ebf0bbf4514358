"""What the sync and async clients share: each operation as a `Call` (built once, run by
either), the retry policy, and reading answers.

Retrying is safe only where a repeat cannot do the work twice:
- 429 and 503 from the API mean nothing was done, and a connection that was never made sent
  nothing: any call is retried.
- A call whose answer was lost (a read timeout, a dropped connection, a proxy's 502/504) may
  have been done. It is retried only when a repeat is harmless (`replay_safe`): reads, and
  triggers, which always carry an Idempotency-Key so the API answers a repeat with the
  notification it already recorded.
"""

from __future__ import annotations

import datetime as dt
import random
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import httpx
from pydantic import BaseModel

from xnovu_client.errors import APIError, error_for, parse_retry_after
from xnovu_client.models import (
    Batch,
    BulkResult,
    Notification,
    NotificationEventPage,
    NotificationPage,
    Preview,
    Template,
    TriggerResult,
    Workflow,
    WorkflowList,
)

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)

_ALWAYS_RETRIED = frozenset({429, 503})
_RETRIED_IF_REPLAY_SAFE = frozenset({502, 504})


@dataclass(frozen=True)
class RetryPolicy:
    """How calls are retried: at most `max_attempts` in all and within `max_elapsed` seconds;
    the n-th wait is random in [0, min(cap, base * 2**(n-1))] ("full jitter"), and never
    shorter than a Retry-After the API sent."""

    max_attempts: int = 5
    max_elapsed: float = 30.0
    base: float = 0.5
    cap: float = 8.0

    def delay(self, attempt: int, elapsed: float, retry_after: float | None) -> float | None:
        """Seconds to wait before attempt `attempt + 1`, or None to give up."""
        if attempt >= self.max_attempts:
            return None
        wait = random.uniform(0.0, min(self.cap, self.base * 2 ** (attempt - 1)))
        if retry_after is not None:
            wait = max(wait, retry_after)
        if elapsed + wait > self.max_elapsed:
            return None
        return wait


NO_RETRIES = RetryPolicy(max_attempts=1)


@dataclass(frozen=True)
class Call(Generic[T]):
    """One API operation: the request, whether a repeat of it is harmless, and its parser."""

    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    params: Mapping[str, Any] | None = None
    json: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)
    replay_safe: bool = False


def retry_delay(
    policy: RetryPolicy,
    call: Call[Any],
    attempt: int,
    elapsed: float,
    *,
    error: APIError | None = None,
    transport: httpx.TransportError | None = None,
) -> float | None:
    """The wait before trying `call` again after `error` or `transport`, or None."""
    if error is not None:
        status = error.status_code
        if status in _ALWAYS_RETRIED or (status in _RETRIED_IF_REPLAY_SAFE and call.replay_safe):
            return policy.delay(
                attempt, elapsed, parse_retry_after(error.headers.get("retry-after"))
            )
        return None
    never_sent = isinstance(transport, httpx.ConnectError | httpx.ConnectTimeout)
    if never_sent or call.replay_safe:
        return policy.delay(attempt, elapsed, None)
    return None


def answer(call: Call[T], response: httpx.Response) -> T:
    """The parsed answer, or the APIError it is."""
    if response.is_success:
        return call.parse(response)
    try:
        body = response.json()
    except ValueError:
        body = None
    raise error_for(response.status_code, body, {k.lower(): v for k, v in response.headers.items()})


def _model(kind: type[M]) -> Callable[[httpx.Response], M]:
    return lambda response: kind.model_validate(response.json())


def _trigger_result(response: httpx.Response) -> TriggerResult:
    result = TriggerResult.model_validate(response.json())
    result.replayed = response.headers.get("idempotency-replay") == "true"
    return result


def _clean(values: Mapping[str, Any]) -> dict[str, Any]:
    """Leave out what the caller did not give (None)."""
    return {key: value for key, value in values.items() if value is not None}


def _iso(value: dt.datetime | str | None) -> str | None:
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            raise ValueError("times need a time zone (e.g. datetime.now(timezone.utc))")
        return value.isoformat()
    return value


def new_idempotency_key() -> str:
    """A fresh key for a trigger the caller gave none: one per call, kept across its retries."""
    return f"xnc-{uuid.uuid4().hex}"


def trigger_body(
    workflow_id: str,
    payload: Mapping[str, Any] | None = None,
    *,
    recipients: Sequence[str | Mapping[str, Any]] | None = None,
    subscriber_id: str | None = None,
    scheduled_for: dt.datetime | str | None = None,
    overrides: Mapping[str, Any] | None = None,
    tags: Sequence[str] | None = None,
    enterprise_id: uuid.UUID | str | None = None,
    notification_id: int | None = None,
) -> dict[str, Any]:
    """The JSON of one trigger (camelCase, as the API takes it)."""
    return _clean(
        {
            "workflowId": workflow_id,
            "payload": dict(payload) if payload is not None else None,
            "recipients": list(recipients) if recipients is not None else None,
            "subscriberId": subscriber_id,
            "scheduledFor": _iso(scheduled_for),
            "overrides": dict(overrides) if overrides is not None else None,
            "tags": list(tags) if tags is not None else None,
            "enterpriseId": str(enterprise_id) if enterprise_id is not None else None,
            "notificationId": notification_id,
        }
    )


def trigger(body: dict[str, Any], idempotency_key: str | None) -> Call[TriggerResult]:
    key = idempotency_key or new_idempotency_key()
    return Call(
        "POST",
        "/api/trigger",
        _trigger_result,
        json=body,
        headers={"Idempotency-Key": key},
        replay_safe=True,
    )


def trigger_bulk(
    events: Sequence[Mapping[str, Any]], enterprise_id: uuid.UUID | str | None = None
) -> Call[BulkResult]:
    """Every event without an idempotencyKey gets one, so the whole request may be repeated;
    events naming no enterprise name the client's, if it has one."""
    named = {"enterpriseId": str(enterprise_id)} if enterprise_id is not None else {}
    keyed = [
        {
            **named,
            **event,
            "idempotencyKey": event.get("idempotencyKey") or new_idempotency_key(),
        }
        for event in events
    ]
    return Call(
        "POST", "/api/trigger/bulk", _model(BulkResult), json={"events": keyed}, replay_safe=True
    )


def get_notification(notification_id: int) -> Call[Notification]:
    return Call(
        "GET", f"/api/notifications/{notification_id}", _model(Notification), replay_safe=True
    )


def list_notifications(
    filters: Mapping[str, Any], cursor: str | None, limit: int
) -> Call[NotificationPage]:
    params = _clean({**filters, "limit": limit, "cursor": cursor})
    return Call(
        "GET", "/api/notifications", _model(NotificationPage), params=params, replay_safe=True
    )


def notification_filters(
    *,
    status: str | None = None,
    workflow_id: str | None = None,
    tags: Sequence[str] | None = None,
    transaction_id: str | None = None,
    recipient: str | None = None,
    batch_id: uuid.UUID | str | None = None,
    created_after: dt.datetime | str | None = None,
    created_before: dt.datetime | str | None = None,
) -> dict[str, Any]:
    """The list endpoint's query parameters."""
    return _clean(
        {
            "status": status,
            "workflowId": workflow_id,
            "tag": list(tags) if tags else None,
            "transactionId": transaction_id,
            "recipient": recipient,
            "batchId": str(batch_id) if batch_id is not None else None,
            "createdAfter": _iso(created_after),
            "createdBefore": _iso(created_before),
        }
    )


def cancel(notification_id: int, reason: str | None) -> Call[Notification]:
    return Call(
        "POST",
        f"/api/notifications/{notification_id}/cancel",
        _model(Notification),
        json=_clean({"reason": reason}),
    )


def retry(notification_id: int) -> Call[Notification]:
    return Call("POST", f"/api/notifications/{notification_id}/retry", _model(Notification))


def events(notification_id: int, cursor: str | None, limit: int) -> Call[NotificationEventPage]:
    return Call(
        "GET",
        f"/api/notifications/{notification_id}/events",
        _model(NotificationEventPage),
        params=_clean({"limit": limit, "cursor": cursor}),
        replay_safe=True,
    )


def batch(batch_id: uuid.UUID | str) -> Call[Batch]:
    return Call("GET", f"/api/batches/{batch_id}", _model(Batch), replay_safe=True)


def list_workflows() -> Call[WorkflowList]:
    return Call("GET", "/api/workflows", _model(WorkflowList), replay_safe=True)


def get_workflow(workflow_id: int) -> Call[Workflow]:
    return Call("GET", f"/api/workflows/{workflow_id}", _model(Workflow), replay_safe=True)


def create_workflow(fields: Mapping[str, Any]) -> Call[Workflow]:
    return Call("POST", "/api/workflows", _model(Workflow), json=dict(fields))


def update_workflow(workflow_id: int, fields: Mapping[str, Any]) -> Call[Workflow]:
    """A PATCH sets the fields it names to the values given: repeating it is harmless."""
    return Call(
        "PATCH",
        f"/api/workflows/{workflow_id}",
        _model(Workflow),
        json=dict(fields),
        replay_safe=True,
    )


def workflow_action(workflow_id: int, action: str) -> Call[Workflow]:
    """publish, unpublish or deactivate: each sets a state, so a repeat is harmless."""
    return Call(
        "POST", f"/api/workflows/{workflow_id}/{action}", _model(Workflow), replay_safe=True
    )


def list_templates(channel_type: str | None) -> Call[list[Template]]:
    return Call(
        "GET",
        "/api/templates",
        lambda response: [Template.model_validate(item) for item in response.json()["items"]],
        params=_clean({"channel_type": channel_type}),
        replay_safe=True,
    )


def get_template(template_id: int) -> Call[Template]:
    return Call("GET", f"/api/templates/{template_id}", _model(Template), replay_safe=True)


def create_template(fields: Mapping[str, Any]) -> Call[Template]:
    return Call("POST", "/api/templates", _model(Template), json=dict(fields))


def update_template(template_id: int, fields: Mapping[str, Any]) -> Call[Template]:
    return Call(
        "PATCH",
        f"/api/templates/{template_id}",
        _model(Template),
        json=dict(fields),
        replay_safe=True,
    )


def publish_template(template_id: int) -> Call[Template]:
    return Call("POST", f"/api/templates/{template_id}/publish", _model(Template), replay_safe=True)


def preview_template(template_id: int, variables: Mapping[str, Any]) -> Call[Preview]:
    return Call(
        "POST",
        f"/api/templates/{template_id}/preview",
        _model(Preview),
        json={"variables": dict(variables)},
        replay_safe=True,
    )


def default_headers(
    api_key: str, enterprise_id: uuid.UUID | str | None, user_agent: str
) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {api_key}", "User-Agent": user_agent}
    if enterprise_id is not None:
        headers["X-Enterprise-Id"] = str(enterprise_id)
    return headers
