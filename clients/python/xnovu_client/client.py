"""The synchronous client."""

from __future__ import annotations

import builtins
import datetime as dt
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, TypeVar

import httpx

from xnovu_client import _core
from xnovu_client._core import Call, RetryPolicy
from xnovu_client.errors import APIError, TransportError
from xnovu_client.models import (
    Batch,
    BulkResult,
    Notification,
    NotificationEvent,
    Preview,
    Template,
    TriggerResult,
    Workflow,
    WorkflowList,
)

T = TypeVar("T")
USER_AGENT = "xnovu-client-python/0.1.0"


class XNovu:
    """A client of one XNovu API with one API key.

    `enterprise_id` is for service keys, which act for the enterprise a request names.
    Calls are retried by `retry` where that is safe (see xnovu_client._core); every trigger
    carries an Idempotency-Key (made when not given), so a retried trigger is recorded once.
    Use as a context manager, or call close().
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        enterprise_id: uuid.UUID | str | None = None,
        timeout: float = 10.0,
        retry: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.retry = retry or RetryPolicy()
        # Named in trigger bodies too: the trigger reads the enterprise from its body.
        self.enterprise_id = enterprise_id
        self._http = httpx.Client(
            base_url=base_url,
            headers=_core.default_headers(api_key, enterprise_id, USER_AGENT),
            timeout=timeout,
            transport=transport,
        )

    def __enter__(self) -> XNovu:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connections."""
        self._http.close()

    def _run(self, call: Call[T]) -> T:
        started = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            elapsed = time.monotonic() - started
            try:
                response = self._http.request(
                    call.method, call.path, params=call.params, json=call.json, headers=call.headers
                )
            except httpx.TransportError as exc:
                delay = _core.retry_delay(self.retry, call, attempt, elapsed, transport=exc)
                if delay is None:
                    raise TransportError(f"{call.method} {call.path}: {exc!r}") from exc
                time.sleep(delay)
                continue
            try:
                return _core.answer(call, response)
            except APIError as error:
                delay = _core.retry_delay(self.retry, call, attempt, elapsed, error=error)
                if delay is None:
                    raise
                time.sleep(delay)

    # Notifications

    def trigger(
        self,
        workflow_id: str,
        payload: Mapping[str, Any] | None = None,
        *,
        recipients: Sequence[str | Mapping[str, Any]] | None = None,
        subscriber_id: str | None = None,
        scheduled_for: dt.datetime | str | None = None,
        overrides: Mapping[str, Any] | None = None,
        tags: Sequence[str] | None = None,
        enterprise_id: uuid.UUID | str | None = None,
        idempotency_key: str | None = None,
    ) -> TriggerResult:
        """Record a notification (PENDING) and queue its delivery."""
        body = _core.trigger_body(
            workflow_id,
            payload,
            recipients=recipients,
            subscriber_id=subscriber_id,
            scheduled_for=scheduled_for,
            overrides=overrides,
            tags=tags,
            enterprise_id=enterprise_id or self.enterprise_id,
        )
        return self._run(_core.trigger(body, idempotency_key))

    def trigger_bulk(self, events: Sequence[Mapping[str, Any]]) -> BulkResult:
        """Up to 1,000 triggers (bodies as `trigger_body` makes them), each answered alone."""
        return self._run(_core.trigger_bulk(events, self.enterprise_id))

    def get(self, notification_id: int) -> Notification:
        """One notification."""
        return self._run(_core.get_notification(notification_id))

    def list(self, *, page_size: int = 100, **filters: Any) -> Iterator[Notification]:
        """Notifications newest first, page by page; filters as `_core.notification_filters`
        (status, workflow_id, tags, transaction_id, recipient, batch_id, created_after,
        created_before)."""
        query = _core.notification_filters(**filters)
        cursor: str | None = None
        while True:
            page = self._run(_core.list_notifications(query, cursor, page_size))
            yield from page.items
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    def cancel(self, notification_id: int, reason: str | None = None) -> Notification:
        """Cancel (RETRACTED), when it can still be cancelled; ConflictError otherwise."""
        return self._run(_core.cancel(notification_id, reason))

    def retry_notification(self, notification_id: int) -> Notification:
        """A FAILED notification back to PENDING, with a fresh attempt budget."""
        return self._run(_core.retry(notification_id))

    def events(self, notification_id: int, *, page_size: int = 100) -> Iterator[NotificationEvent]:
        """The notification's timeline, oldest first."""
        cursor: str | None = None
        while True:
            page = self._run(_core.events(notification_id, cursor, page_size))
            yield from page.items
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    def batch(self, batch_id: uuid.UUID | str) -> Batch:
        """A bulk request's notifications, counted by status."""
        return self._run(_core.batch(batch_id))

    # Workflows

    def list_workflows(self) -> WorkflowList:
        return self._run(_core.list_workflows())

    def get_workflow(self, workflow_id: int) -> Workflow:
        return self._run(_core.get_workflow(workflow_id))

    def create_workflow(self, **fields: Any) -> Workflow:
        """A DRAFT workflow (fields as the API's WorkflowCreate)."""
        return self._run(_core.create_workflow(fields))

    def update_workflow(self, workflow_id: int, **fields: Any) -> Workflow:
        return self._run(_core.update_workflow(workflow_id, fields))

    def publish_workflow(self, workflow_id: int) -> Workflow:
        return self._run(_core.workflow_action(workflow_id, "publish"))

    def unpublish_workflow(self, workflow_id: int) -> Workflow:
        return self._run(_core.workflow_action(workflow_id, "unpublish"))

    def deactivate_workflow(self, workflow_id: int) -> Workflow:
        return self._run(_core.workflow_action(workflow_id, "deactivate"))

    # Templates

    def list_templates(self, channel_type: str | None = None) -> builtins.list[Template]:
        return self._run(_core.list_templates(channel_type))

    def get_template(self, template_id: int) -> Template:
        return self._run(_core.get_template(template_id))

    def create_template(self, **fields: Any) -> Template:
        """A DRAFT template (fields as the API's TemplateCreate)."""
        return self._run(_core.create_template(fields))

    def update_template(self, template_id: int, **fields: Any) -> Template:
        return self._run(_core.update_template(template_id, fields))

    def publish_template(self, template_id: int) -> Template:
        return self._run(_core.publish_template(template_id))

    def preview_template(self, template_id: int, variables: Mapping[str, Any]) -> Preview:
        return self._run(_core.preview_template(template_id, variables))
