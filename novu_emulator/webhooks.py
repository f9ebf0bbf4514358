"""Novu's outbound message webhooks, as Svix delivers them for Novu (`--webhook-url`,
NOVU_EMULATOR_WEBHOOK_URL, signed with NOVU_EMULATOR_WEBHOOK_SECRET).

What Novu sends (libs/application-generic/src/webhooks in Novu's source: `SendWebhookMessage`,
`messageWebhookMapper`; https://docs.novu.co/platform/developer/webhooks):

- When a channel step's message goes to its provider, `message.sent`; when the provider
  refuses it, `message.failed` with `data.error`. Here: `message.sent` for every channel step
  the bridge answered (not skipped), `message.failed` for one hit by the `providerFailures`
  fault. A step whose bridge call fails creates no message at Novu, so no webhook: none here
  either. `message.delivered`, `seen`, `read` and the rest need a provider's receipt or a
  subscriber's action and are not emulated.
- Body `{id: "evt_<24 hex>", type, object: "message", timestamp, environmentId, data:
  {object: <message>, error?}}`, the message `{_id, _templateId, _environmentId,
  _organizationId, _notificationId, subscriberId, templateIdentifier, workflowId, stepId,
  transactionId, channel, status ("sent" or "error"), providerId, seen, read, archived,
  createdAt, updatedAt, errorId?, errorText?, providerResponseId?}`.
- Svix's headers: `svix-id` (`msg_...`, the same on every attempt of one message),
  `svix-timestamp` (Unix seconds of the attempt) and `svix-signature` (`v1,<base64
  HMAC-SHA256>` of `<id>.<timestamp>.<body>`), signed by `standardwebhooks` with the secret.
- Retries: Svix tries at once, then after 5 s, 5 min, 30 min, 2 h, 5 h, 10 h and 10 h, on any
  answer but a 2xx within 15 s. Simpler here: at once, then after 5 s, 30 s and 2 min
  (`retry_delays`), then the message is given up (`status: "failed"`).

Sending never holds up a trigger or a step: each message is a task of its own, at most
MAX_IN_FLIGHT at once (others wait their turn). `GET /_emulator/webhooks` lists them, each
`{svixId, type, transactionId, subscriberId, channel, status: "pending" | "delivered" |
"failed", attempts, lastStatusCode, lastError}`; `stats.webhooks` counts them.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import secrets
from collections.abc import Sequence
from typing import Any

import httpx
from standardwebhooks.webhooks import Webhook

from novu_emulator.state import EmulatorState, iso_now

logger = logging.getLogger(__name__)

DEFAULT_RETRY_DELAYS = (5.0, 30.0, 120.0)
# Svix waits 15 s for an answer.
TIMEOUT_SECONDS = 15.0
MAX_IN_FLIGHT = 20


def object_id() -> str:
    """A MongoDB ObjectId's shape (24 hex digits), as Novu's ids are."""
    return secrets.token_hex(12)


class WebhookSender:
    """Signs and posts Novu's message webhooks to one endpoint, retrying like Svix."""

    def __init__(
        self,
        state: EmulatorState,
        url: str | None,
        secret: str | None,
        retry_delays: Sequence[float] = DEFAULT_RETRY_DELAYS,
    ) -> None:
        self.state = state
        self.url = url if url and secret else None
        self._signer = Webhook(secret) if self.url and secret else None
        self._retry_delays = tuple(retry_delays)
        self._environment_id = object_id()
        self._organization_id = object_id()
        self._client: httpx.AsyncClient | None = None
        self._slots: asyncio.Semaphore | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def message_event(
        self,
        event_type: str,
        message: dict[str, Any],
        *,
        error: dict[str, Any] | None = None,
    ) -> None:
        """Send one message event (`message.sent`, `message.failed`) in the background;
        `message` holds transactionId, workflowId, stepId, channel, subscriberId and, for a
        failure, errorId and errorText."""
        if self.url is None:
            return
        now = iso_now()
        channel = message.get("channel")
        novu_message = {
            "_id": object_id(),
            "_templateId": object_id(),
            "_environmentId": self._environment_id,
            "_organizationId": self._organization_id,
            "_notificationId": object_id(),
            "subscriberId": message.get("subscriberId"),
            "templateIdentifier": message.get("workflowId"),
            "workflowId": message.get("workflowId"),
            "stepId": message.get("stepId"),
            "transactionId": message.get("transactionId"),
            "channel": channel,
            "status": "error" if error is not None else "sent",
            "providerId": f"emulator-{channel}",
            "seen": False,
            "read": False,
            "archived": False,
            "createdAt": now,
            "updatedAt": now,
        }
        if error is not None:
            novu_message["errorId"] = error.get("code")
            novu_message["errorText"] = error.get("message")
        else:
            novu_message["providerResponseId"] = object_id()
        data: dict[str, Any] = {"object": novu_message}
        if error is not None:
            data["error"] = {"message": error.get("message")}
        document = {
            "id": f"evt_{object_id()}",
            "type": event_type,
            "object": "message",
            "timestamp": now,
            "environmentId": self._environment_id,
            "data": data,
        }
        entry: dict[str, Any] = {
            "svixId": f"msg_{secrets.token_hex(14)[:27]}",
            "type": event_type,
            "transactionId": message.get("transactionId"),
            "subscriberId": message.get("subscriberId"),
            "channel": channel,
            "status": "pending",
            "attempts": 0,
            "lastStatusCode": None,
            "lastError": None,
        }
        self.state.webhooks.append(entry)
        self.state.counters["webhooks_sent"] += 1
        body = json.dumps(document, separators=(",", ":"), ensure_ascii=False)
        task = asyncio.get_running_loop().create_task(self._deliver(entry, body, self.state.epoch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, entry: dict[str, Any], body: str, epoch: int) -> None:
        if self._slots is None:
            self._slots = asyncio.Semaphore(MAX_IN_FLIGHT)
        for attempt, delay in enumerate((0.0, *self._retry_delays)):
            if delay:
                await asyncio.sleep(delay)
            if epoch != self.state.epoch:
                return  # reset meanwhile: Novu's environment is gone
            async with self._slots:
                delivered = await self._attempt(entry, body)
            entry["attempts"] = attempt + 1
            self.state.counters["webhook_attempts"] += 1
            if delivered:
                entry["status"] = "delivered"
                self.state.counters["webhooks_delivered"] += 1
                return
        entry["status"] = "failed"
        self.state.counters["webhooks_failed"] += 1
        logger.warning("webhook %s given up: %s", entry["svixId"], entry["lastError"])

    async def _attempt(self, entry: dict[str, Any], body: str) -> bool:
        """One signed POST; whether it was answered 2xx."""
        assert self.url is not None and self._signer is not None
        now = dt.datetime.now(dt.UTC)
        headers = {
            "svix-id": entry["svixId"],
            "svix-timestamp": str(int(now.timestamp())),
            "svix-signature": self._signer.sign(entry["svixId"], now, body),
            "content-type": "application/json",
        }
        if self._client is None:
            self._client = httpx.AsyncClient(follow_redirects=False, timeout=TIMEOUT_SECONDS)
        try:
            answer = await self._client.post(self.url, content=body.encode(), headers=headers)
        except httpx.HTTPError as exc:
            entry["lastStatusCode"] = None
            entry["lastError"] = f"{type(exc).__name__}: {exc}"
            return False
        entry["lastStatusCode"] = answer.status_code
        if 200 <= answer.status_code < 300:
            entry["lastError"] = None
            return True
        entry["lastError"] = answer.text[:500]
        return False

    async def close(self) -> None:
        """Stop the deliveries under way and close the HTTP client."""
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=2.0)
        if self._client is not None:
            await self._client.aclose()
            self._client = None
