"""Novu's side of the Framework bridge: run each accepted trigger's steps on the bridge.

When a bridge URL applies (the trigger's own `bridgeUrl`, else the configured one), an accepted
trigger is executed in the background, as Novu's worker does it (apps/worker
execute-bridge-job and libs/application-generic execute-bridge-request):

1. The workflow's steps come from `GET <bridge>?action=discover`, cached per bridge URL for
   `discoverTtlSeconds` and fetched again when the workflow is not in the cached answer.
2. For each subscriber of `to` (topics are not expanded) and each step in order, a POST
   `<bridge>?action=execute&workflowId=W&stepId=S` with the body
   `{payload, controls, state, subscriber, workflowId, stepId, action: "execute"}`, where
   `state` lists the steps already run for that subscriber, most recent first, each
   `{stepId, outputs, state: {status}}` (in-app steps report `{seen, read, lastSeenDate,
   lastReadDate}`, other channels `{}`; a skipped step has status `skipped`).
3. Every call is signed as Novu signs it: `novu-signature` (and the older `x-novu-signature`)
   `t=<ms now>,v1=<hex HMAC-SHA256("<t>.<body>", secret key)>` over the compact JSON body sent
   (`{}` for the GET). Timeout 5 s; 408, 429, 500, 503, 504 (and Cloudflare's 521, 522, 524),
   timeouts and connection errors are retried, 3 attempts in all, 2 s then 4 s apart
   (`retryBaseMs` * 2^n).
4. A step answered with `options.skip` delivers nothing; any other answer is a delivered
   message (`GET /_emulator/messages`). A step that fails for good ends that subscriber's run,
   as a failed job ends Novu's chain.

A trigger held by `holdSeconds` is executed when the hold ends, unless it was cancelled.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import httpx

from novu_emulator.config import is_http_url
from novu_emulator.state import EmulatorState, RecordedTrigger, iso_now

logger = logging.getLogger(__name__)

RETRYABLE_STATUSES = frozenset({408, 429, 500, 503, 504, 521, 522, 524})
IN_APP_RESULT = {"seen": False, "read": False, "lastSeenDate": None, "lastReadDate": None}


def compact_json(document: Any) -> bytes:
    """JSON as JavaScript's `JSON.stringify` writes it: no spaces, non-ASCII left as is."""
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()


def novu_signature(secret_key: str, body: bytes, timestamp_ms: int | None = None) -> str:
    """The `novu-signature` header Novu's API sends with a bridge request of this body."""
    timestamp = int(time.time() * 1000) if timestamp_ms is None else timestamp_ms
    digest = hmac.new(
        secret_key.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256
    ).hexdigest()
    return f"t={timestamp},v1={digest}"


@dataclass(frozen=True, slots=True)
class DeclaredStep:
    step_id: str
    type: str


@dataclass(frozen=True, slots=True)
class _Discovery:
    epoch: int
    at: float
    workflows: dict[str, list[DeclaredStep]]


class BridgeCallFailed(Exception):
    """A bridge call that failed for good (after retries, or with a permanent answer)."""

    def __init__(self, detail: dict[str, Any]) -> None:
        super().__init__(detail.get("message", "bridge call failed"))
        self.detail = detail


def subscribers(to: Any) -> list[dict[str, Any]]:
    """The subscribers a trigger's `to` names, as objects; topics are left out."""
    recipients = to if isinstance(to, list) else [to]
    found: list[dict[str, Any]] = []
    for recipient in recipients:
        if isinstance(recipient, str) and recipient:
            found.append({"subscriberId": recipient})
        elif isinstance(recipient, dict) and isinstance(recipient.get("subscriberId"), str):
            found.append(dict(recipient))
    return found


class BridgeRunner:
    """Executes accepted triggers on the bridge, in background tasks of the emulator's loop."""

    def __init__(self, state: EmulatorState, secret_key: str) -> None:
        self.state = state
        self._secret_key = secret_key
        self._client: httpx.AsyncClient | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._discover_locks: dict[str, asyncio.Lock] = {}
        self._discovered: dict[str, _Discovery] = {}

    def bridge_url_for(self, trigger: RecordedTrigger) -> str | None:
        """The trigger's own bridgeUrl, else the configured one."""
        own = trigger.body.get("bridgeUrl")
        if isinstance(own, str) and is_http_url(own):
            return own
        return self.state.bridge.bridge_url

    def schedule(self, trigger: RecordedTrigger) -> None:
        """Run the trigger's steps in the background when a bridge URL applies to it."""
        url = self.bridge_url_for(trigger)
        if url is None:
            return
        task = asyncio.get_running_loop().create_task(self._run(trigger, url, self.state.epoch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def idle(self, timeout: float) -> None:
        """Wait until no trigger is being executed (tests)."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout)

    async def close(self) -> None:
        """Stop every run and close the HTTP client."""
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=2.0)
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    # -- one trigger -------------------------------------------------------------------------

    async def _run(self, trigger: RecordedTrigger, url: str, epoch: int) -> None:
        wait = trigger.cancellable_until - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        if trigger.cancelled:
            return
        workflow_id = str(trigger.body.get("name"))
        try:
            steps = await self._steps(url, workflow_id)
        except BridgeCallFailed as exc:
            self._failed(epoch, exc.detail)
            return
        payload = {k: v for k, v in (trigger.body.get("payload") or {}).items() if k != "__source"}
        controls = trigger.body.get("controls") or {}
        for subscriber in subscribers(trigger.body.get("to")):
            await self._run_subscriber(
                trigger, url, epoch, workflow_id, steps, payload, controls, subscriber
            )

    async def _run_subscriber(
        self,
        trigger: RecordedTrigger,
        url: str,
        epoch: int,
        workflow_id: str,
        steps: Iterable[DeclaredStep],
        payload: dict[str, Any],
        controls: dict[str, Any],
        subscriber: dict[str, Any],
    ) -> None:
        state: list[dict[str, Any]] = []
        for step in steps:
            step_controls = (controls.get("steps") or {}).get(step.step_id) or {}
            body = {
                "payload": payload,
                "controls": step_controls,
                "state": list(reversed(state)),
                "subscriber": subscriber,
                "workflowId": workflow_id,
                "stepId": step.step_id,
                "action": "execute",
            }
            params = {"action": "execute", "workflowId": workflow_id, "stepId": step.step_id}
            try:
                answer = await self._call("POST", url, params, body)
            except BridgeCallFailed as exc:
                self._failed(
                    epoch, {**exc.detail, "workflowId": workflow_id, "stepId": step.step_id}
                )
                return
            if epoch != self.state.epoch:
                return  # the emulator was reset meanwhile
            self.state.counters["bridge_executed"] += 1
            if (answer.get("options") or {}).get("skip") is True:
                self.state.counters["bridge_skipped"] += 1
                state.append(
                    {"stepId": step.step_id, "outputs": {}, "state": {"status": "skipped"}}
                )
                continue
            self.state.record_message(
                {
                    "transactionId": trigger.transaction_id,
                    "workflowId": workflow_id,
                    "stepId": step.step_id,
                    "channel": step.type,
                    "subscriberId": subscriber["subscriberId"],
                    "outputs": answer.get("outputs") or {},
                    "deliveredAt": iso_now(),
                }
            )
            result = dict(IN_APP_RESULT) if step.type == "in_app" else {}
            state.append(
                {"stepId": step.step_id, "outputs": result, "state": {"status": "completed"}}
            )

    def _failed(self, epoch: int, detail: dict[str, Any]) -> None:
        if epoch != self.state.epoch:
            return
        self.state.counters["bridge_errors"] += 1
        self.state.bridge_last_error = {**detail, "at": iso_now()}
        logger.warning("bridge call failed: %s", detail)

    # -- discovery ---------------------------------------------------------------------------

    async def _steps(self, url: str, workflow_id: str) -> list[DeclaredStep]:
        """The workflow's steps as the bridge declares them (cached discovery)."""
        lock = self._discover_locks.setdefault(url, asyncio.Lock())
        async with lock:
            cached = self._discovered.get(url)
            usable = (
                cached is not None
                and cached.epoch == self.state.epoch
                and time.monotonic() - cached.at <= self.state.bridge.discover_ttl_seconds
                and workflow_id in cached.workflows
            )
            if cached is None or not usable:
                answer = await self._call("GET", url, {"action": "discover"}, None)
                self.state.counters["bridge_discovers"] += 1
                cached = _Discovery(self.state.epoch, time.monotonic(), _declared_steps(answer))
                self._discovered[url] = cached
        steps = cached.workflows.get(workflow_id)
        if steps is None:
            raise BridgeCallFailed(
                {"url": url, "workflowId": workflow_id, "message": "workflow not discovered"}
            )
        return steps

    # -- HTTP --------------------------------------------------------------------------------

    async def discover(self, url: str) -> httpx.Response:
        """One signed `GET <url>?action=discover` as Novu's sync sends it (a single attempt);
        raises httpx's errors for a request that got no answer."""
        signature = novu_signature(self._secret_key, b"{}")
        headers = {
            "novu-signature": signature,
            "x-novu-signature": signature,
            "content-type": "application/json",
        }
        return await self._http().get(
            url,
            params={"action": "discover"},
            headers=headers,
            timeout=self.state.bridge.timeout_ms / 1000,
        )

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(follow_redirects=False)
        return self._client

    async def _call(
        self, method: str, url: str, params: dict[str, str], body: dict[str, Any] | None
    ) -> dict[str, Any]:
        """One bridge request with Novu's timeout and retries; the JSON object it answers."""
        config = self.state.bridge
        raw = compact_json(body) if body is not None else None
        last: dict[str, Any] = {}
        for attempt in range(1, config.attempts + 1):
            if attempt > 1:
                self.state.counters["bridge_retries"] += 1
                await asyncio.sleep(config.retry_base_ms / 1000 * 2 ** (attempt - 1))
            signature = novu_signature(self._secret_key, raw if raw is not None else b"{}")
            headers = {"novu-signature": signature, "x-novu-signature": signature}
            if raw is not None:
                headers["content-type"] = "application/json"
            self.state.counters["bridge_calls"] += 1
            try:
                response = await self._http().request(
                    method,
                    url,
                    params=params,
                    content=raw,
                    headers=headers,
                    timeout=config.timeout_ms / 1000,
                )
            except httpx.TransportError as exc:
                self.state.counters["bridge_failures"] += 1
                last = {"url": url, "action": params["action"], "message": repr(exc)}
                continue
            if 200 <= response.status_code < 300:
                try:
                    answer = response.json()
                except ValueError:
                    answer = None
                if isinstance(answer, dict):
                    return answer
                self.state.counters["bridge_failures"] += 1
                raise BridgeCallFailed(
                    {"url": url, "action": params["action"], "message": "answer is not JSON"}
                )
            self.state.counters["bridge_failures"] += 1
            last = _error_detail(url, params["action"], response)
            if response.status_code not in RETRYABLE_STATUSES:
                break
        raise BridgeCallFailed(last)


def _declared_steps(answer: dict[str, Any]) -> dict[str, list[DeclaredStep]]:
    declared: dict[str, list[DeclaredStep]] = {}
    for workflow in answer.get("workflows") or []:
        if not isinstance(workflow, dict) or not isinstance(workflow.get("workflowId"), str):
            continue
        declared[workflow["workflowId"]] = [
            DeclaredStep(step_id=str(step["stepId"]), type=str(step.get("type", "")))
            for step in workflow.get("steps") or []
            if isinstance(step, dict) and "stepId" in step
        ]
    return declared


def _error_detail(url: str, action: str, response: httpx.Response) -> dict[str, Any]:
    detail: dict[str, Any] = {"url": url, "action": action, "statusCode": response.status_code}
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        detail.update({k: body[k] for k in ("code", "message", "data") if k in body})
    else:
        detail["message"] = response.text[:500]
    return detail
