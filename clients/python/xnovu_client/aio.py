"""The asynchronous client: XNovu's operations, awaited (on httpx.AsyncClient)."""

from __future__ import annotations

import asyncio
import builtins
import datetime as dt
import time
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, TypeVar

import httpx

from xnovu_client import _core
from xnovu_client._core import Call, RetryPolicy
from xnovu_client.client import USER_AGENT
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


class AsyncXNovu:
    """An asyncio client of one XNovu API with one API key (as XNovu, awaited).

    `enterprise_id` is for service keys, which act for the enterprise a request names.
    Calls are retried by `retry` where that is safe (see xnovu_client._core); every trigger
    carries an Idempotency-Key (made when not given), so a retried trigger is recorded once.
    Use as an async context manager, or await aclose().
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        enterprise_id: uuid.UUID | str | None = None,
        timeout: float = 10.0,
        retry: RetryPolicy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.retry = retry or RetryPolicy()
        # Named in trigger bodies too: the trigger reads the enterprise from its body.
        self.enterprise_id = enterprise_id
        self._http = httpx.AsyncClient(
            base_url=base_url,
            headers=_core.default_headers(api_key, enterprise_id, USER_AGENT),
            timeout=timeout,
            transport=transport,
        )

    async def __aenter__(self) -> AsyncXNovu:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connections."""
        await self._http.aclose()

    async def _run(self, call: Call[T]) -> T:
        started = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            elapsed = time.monotonic() - started
            try:
                response = await self._http.request(
                    call.method, call.path, params=call.params, json=call.json, headers=call.headers
                )
            except httpx.TransportError as exc:
                delay = _core.retry_delay(self.retry, call, attempt, elapsed, transport=exc)
                if delay is None:
                    raise TransportError(f"{call.method} {call.path}: {exc!r}") from exc
                await asyncio.sleep(delay)
                continue
            try:
                return _core.answer(call, response)
            except APIError as error:
                delay = _core.retry_delay(self.retry, call, attempt, elapsed, error=error)
                if delay is None:
                    raise
                await asyncio.sleep(delay)

    # Notifications

    async def trigger(
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
        return await self._run(_core.trigger(body, idempotency_key))

    async def trigger_bulk(self, events: Sequence[Mapping[str, Any]]) -> BulkResult:
        """Up to 1,000 triggers (bodies as `trigger_body` makes them), each answered alone."""
        return await self._run(_core.trigger_bulk(events, self.enterprise_id))

    async def get(self, notification_id: int) -> Notification:
        """One notification."""
        return await self._run(_core.get_notification(notification_id))

    async def list(self, *, page_size: int = 100, **filters: Any) -> AsyncIterator[Notification]:
        """Notifications newest first, page by page; filters as `_core.notification_filters`
        (status, workflow_id, tags, transaction_id, recipient, batch_id, created_after,
        created_before)."""
        query = _core.notification_filters(**filters)
        cursor: str | None = None
        while True:
            page = await self._run(_core.list_notifications(query, cursor, page_size))
            for item in page.items:
                yield item
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    async def cancel(self, notification_id: int, reason: str | None = None) -> Notification:
        """Cancel (RETRACTED), when it can still be cancelled; ConflictError otherwise."""
        return await self._run(_core.cancel(notification_id, reason))

    async def retry_notification(self, notification_id: int) -> Notification:
        """A FAILED notification back to PENDING, with a fresh attempt budget."""
        return await self._run(_core.retry(notification_id))

    async def events(
        self, notification_id: int, *, page_size: int = 100
    ) -> AsyncIterator[NotificationEvent]:
        """The notification's timeline, oldest first."""
        cursor: str | None = None
        while True:
            page = await self._run(_core.events(notification_id, cursor, page_size))
            for item in page.items:
                yield item
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    async def batch(self, batch_id: uuid.UUID | str) -> Batch:
        """A bulk request's notifications, counted by status."""
        return await self._run(_core.batch(batch_id))

    # Workflows

    async def list_workflows(self) -> WorkflowList:
        return await self._run(_core.list_workflows())

    async def get_workflow(self, workflow_id: int) -> Workflow:
        return await self._run(_core.get_workflow(workflow_id))

    async def create_workflow(self, **fields: Any) -> Workflow:
        """A DRAFT workflow (fields as the API's WorkflowCreate)."""
        return await self._run(_core.create_workflow(fields))

    async def update_workflow(self, workflow_id: int, **fields: Any) -> Workflow:
        return await self._run(_core.update_workflow(workflow_id, fields))

    async def publish_workflow(self, workflow_id: int) -> Workflow:
        return await self._run(_core.workflow_action(workflow_id, "publish"))

    async def unpublish_workflow(self, workflow_id: int) -> Workflow:
        return await self._run(_core.workflow_action(workflow_id, "unpublish"))

    async def deactivate_workflow(self, workflow_id: int) -> Workflow:
        return await self._run(_core.workflow_action(workflow_id, "deactivate"))

    # Templates

    async def list_templates(self, channel_type: str | None = None) -> builtins.list[Template]:
        return await self._run(_core.list_templates(channel_type))

    async def get_template(self, template_id: int) -> Template:
        return await self._run(_core.get_template(template_id))

    async def create_template(self, **fields: Any) -> Template:
        """A DRAFT template (fields as the API's TemplateCreate)."""
        return await self._run(_core.create_template(fields))

    async def update_template(self, template_id: int, **fields: Any) -> Template:
        return await self._run(_core.update_template(template_id, fields))

    async def publish_template(self, template_id: int) -> Template:
        return await self._run(_core.publish_template(template_id))

    async def preview_template(self, template_id: int, variables: Mapping[str, Any]) -> Preview:
        return await self._run(_core.preview_template(template_id, variables))
