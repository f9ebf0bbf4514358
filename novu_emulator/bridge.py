"""Novu's side of the Framework bridge: run each accepted trigger's steps on the bridge.

When a bridge applies, an accepted trigger is executed in the background as Novu's workers do
it (apps/worker execute-bridge-job, libs/application-generic execute-bridge-request):

1. Which steps, on which bridge: a trigger's own `bridgeUrl` is discovered
   (`GET <bridgeUrl>?action=discover`, cached per URL for `discoverTtlSeconds`, fetched again
   when the workflow is not in the cached answer). Otherwise a workflow Novu knows from a sync
   (`POST /v1/bridge/sync`) runs the steps stored at sync time on the bridge it was synced
   from, without discovering; any other (one registered by hand) is discovered on the
   configured bridge.
2. A bounded pool of `stepConcurrency` step workers takes jobs from one queue, as Novu's
   standard queue feeds its workers. A job is one step of one subscriber of `to` (topics are
   not expanded): a signed `POST <bridge>?action=execute&workflowId=W&stepId=S&jobId=J` with
   Novu's body `{payload, controls, state, subscriber, context}`. `state` lists the steps
   already run for that subscriber, most recent first, each `{stepId, outputs, state:
   {status}}`, with the outputs Novu gives by step type: in-app steps `{seen, read,
   lastSeenDate, lastReadDate}`, delay steps `{duration}` (ms since the jobs were created),
   custom steps what they answered, others `{}`; a skipped step has status `skipped`. When a
   step is done its subscriber's next step joins the back of the queue, so a subscriber's
   steps run in order while different notifications run side by side.
3. Every call is signed as Novu signs it: `novu-signature` (and the older `x-novu-signature`)
   `t=<ms now>,v1=<hex HMAC-SHA256("<t>.<body>", secret key)>` over the compact JSON body sent
   (`{}` for a GET). Each worker calls over its own keep-alive connection (bridge_client.py),
   so no call waits for a free one; each attempt may take `timeoutMs` (Novu: 5 s for the whole
   request). 408, 429, 500, 503, 504 (and Cloudflare's 521, 522, 524), timeouts and
   connection errors are retried: Novu's 3 retries, 4 attempts in all, 2 s, 4 s, then 8 s
   apart (`retryBaseMs` * 2^n). A worker waits out its retries, as Novu's does.
4. A channel step answered with `options.skip` delivers nothing; any other answer is a message
   (`GET /_emulator/messages`, `status: "sent"`) handed to its provider, and Novu's
   `message.sent` webhook is sent (webhooks.py). A `providerFailures` fault for its channel
   makes the provider refuse it instead: `status: "failed"` with `error.code`
   `provider_failure`, `stats.bridge.providerFailures`, a `message.failed` webhook, and the
   run goes on. A step that fails for good on the bridge is listed there with `status:
   "failed"` and its `error`, counted in `stats.bridge.failedSteps`, sends no webhook (Novu
   has no message to report), and ends that subscriber's run, as a failed job ends Novu's
   chain.
5. A `delay` step is executed too; the bridge answers `outputs: {type: "regular", amount,
   unit}` (unit `seconds`, `minutes`, `hours`, `days`, `weeks` or `months`, as
   @novu/framework 2.13.2 declares it; Novu counts a month as 30 days). The run then waits
   that long, off the worker pool, with the trigger's `delayed_until` set (cancelling is
   possible only then), and goes on with the next step unless the trigger was cancelled
   meanwhile. A delay is not a message; timed and dynamic delays and digest steps are not
   emulated and fail the step.

A trigger held by `holdSeconds` (Novu's queue lag) starts when the hold ends.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import random
import secrets
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import httpx

from novu_emulator.bridge_client import Connection, ConnectionFailed, Origin, request_target
from novu_emulator.config import is_http_url
from novu_emulator.state import EmulatorState, RecordedTrigger, WorkflowStep, iso_now
from novu_emulator.webhooks import WebhookSender

logger = logging.getLogger(__name__)

RETRYABLE_STATUSES = frozenset({408, 429, 500, 503, 504, 521, 522, 524})
IN_APP_RESULT = {"seen": False, "read": False, "lastSeenDate": None, "lastReadDate": None}
# Steps whose answer is a message; `delay` and `custom` steps are not.
CHANNEL_TYPES = frozenset({"email", "in_app", "sms", "push", "chat"})
DELAY_UNITS = {
    "seconds": timedelta(seconds=1),
    "minutes": timedelta(minutes=1),
    "hours": timedelta(hours=1),
    "days": timedelta(days=1),
    "weeks": timedelta(weeks=1),
    "months": timedelta(days=30),  # Novu's own approximation of a month (calculate-delay)
}


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
class _Discovery:
    epoch: int
    at: float
    workflows: dict[str, list[WorkflowStep]]


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


def delay_seconds(outputs: Any) -> float:
    """How long a delay step's outputs hold the run; BridgeCallFailed for what Novu cannot run."""
    if not isinstance(outputs, dict) or outputs.get("type", "regular") != "regular":
        kind = outputs.get("type") if isinstance(outputs, dict) else None
        raise BridgeCallFailed({"message": f"delay type {kind!r} is not emulated"})
    amount, unit = outputs.get("amount"), outputs.get("unit")
    if isinstance(amount, bool) or not isinstance(amount, int | float) or amount < 0:
        raise BridgeCallFailed({"message": f"delay amount {amount!r} is not a number >= 0"})
    if unit not in DELAY_UNITS:
        raise BridgeCallFailed({"message": f"delay unit {unit!r} is not one Novu knows"})
    return float(amount * DELAY_UNITS[unit].total_seconds())


@dataclass(slots=True)
class _Run:
    """One subscriber's chain of jobs for one trigger: Novu's jobs, one step at a time."""

    trigger: RecordedTrigger
    url: str
    epoch: int
    workflow_id: str
    steps: tuple[WorkflowStep, ...]
    payload: dict[str, Any]
    controls: dict[str, Any]
    subscriber: dict[str, Any]
    created_ms: int  # when Novu creates the jobs; a delay's `duration` counts from it
    done: list[tuple[WorkflowStep, str, dict[str, Any]]] = field(default_factory=list)

    @property
    def step(self) -> WorkflowStep:
        return self.steps[len(self.done)]

    def state(self) -> list[dict[str, Any]]:
        """The `state` Novu sends with the next step: prior steps, most recent first."""
        entries = []
        for step, status, outputs in reversed(self.done):
            if step.type == "delay":
                outputs = {"duration": int(time.time() * 1000) - self.created_ms}
            entries.append(
                {"stepId": step.step_id, "outputs": outputs, "state": {"status": status}}
            )
        return entries


@dataclass(frozen=True, slots=True)
class _Start:
    """A trigger whose steps are still to be found."""

    trigger: RecordedTrigger
    url: str | None
    epoch: int


class BridgeRunner:
    """Executes accepted triggers on the bridge with a pool of step workers (module docstring)."""

    def __init__(
        self,
        state: EmulatorState,
        secret_key: str,
        *,
        webhooks: WebhookSender | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.state = state
        self._secret_key = secret_key
        self._webhooks = webhooks
        self._rng = rng or random.Random()
        self._queue: asyncio.Queue[_Start | _Run] | None = None
        self._workers: dict[int, asyncio.Task[None]] = {}
        self._busy: set[int] = set()  # workers running a job
        # The stepConcurrency the workers were last made to match; None once one has left.
        self._staffed_for: int | None = None
        self._timers: set[asyncio.TimerHandle] = set()
        self._client: httpx.AsyncClient | None = None  # sync's discover only
        self._discover_locks: dict[str, asyncio.Lock] = {}
        self._discovered: dict[str, _Discovery] = {}
        # Triggers (and subscriber runs) started and not yet finished, for idle().
        self._active = 0
        self._quiet = asyncio.Event()

    def schedule(self, trigger: RecordedTrigger) -> None:
        """Run the trigger's steps in the background when a bridge applies to it."""
        own = trigger.body.get("bridgeUrl")
        url = own if isinstance(own, str) and is_http_url(own) else None
        known = self.state.workflows.get(str(trigger.body.get("name")))
        if url is None and (known is None or known.bridge_url is None):
            url = self.state.bridge.bridge_url
            if url is None:
                return
        self._started()
        job = _Start(trigger, url, self.state.epoch)
        wait = trigger.queued_until - time.monotonic()
        if wait > 0:
            self._later(wait, job)
        else:
            self._put(job)

    async def idle(self, timeout: float) -> None:
        """Wait until no trigger is being executed or held (tests)."""
        if self._active:
            self._quiet.clear()
            await asyncio.wait_for(self._quiet.wait(), timeout)

    async def close(self) -> None:
        """Stop every worker and timer and close the HTTP client."""
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        for task in self._workers.values():
            task.cancel()
        if self._workers:
            await asyncio.wait(set(self._workers.values()), timeout=2.0)
        self._workers.clear()
        self._staffed_for = None
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    # -- the queue and its workers ------------------------------------------------------------

    def _put(self, job: _Start | _Run) -> None:
        if self._queue is None:
            self._queue = asyncio.Queue()
        self._queue.put_nowait(job)
        self._staff(self._queue)

    def _later(self, seconds: float, job: _Start | _Run) -> None:
        """Queue a job after a hold or a delay; meanwhile it occupies no worker."""

        def due() -> None:
            self._timers.discard(handle)
            self._put(job)

        handle = asyncio.get_running_loop().call_later(seconds, due)
        self._timers.add(handle)

    def _staff(self, queue: asyncio.Queue[_Start | _Run]) -> None:
        """Workers up to `stepConcurrency`: start missing ones, stop idle extra ones (busy
        extra ones stop after their current job)."""
        wanted = self.state.bridge.step_concurrency
        if self._staffed_for == wanted:
            return  # every job queued meets the same workers: nothing to look at
        for index in [i for i in self._workers if i >= wanted and i not in self._busy]:
            self._workers.pop(index).cancel()
        loop = asyncio.get_running_loop()
        for index in range(wanted):
            if index not in self._workers:
                self._workers[index] = loop.create_task(self._work(index, queue))
        self._staffed_for = wanted

    async def _work(self, index: int, queue: asyncio.Queue[_Start | _Run]) -> None:
        # The worker's own keep-alive connection to each bridge: it never waits for one.
        connections: dict[Origin, Connection] = {}
        try:
            while index < self.state.bridge.step_concurrency:
                job = await queue.get()
                self._busy.add(index)
                try:
                    if isinstance(job, _Start):
                        await self._start(job, connections)
                    else:
                        await self._step(job, connections)
                except Exception:
                    logger.exception("bridge job failed")
                    self._finished()
                finally:
                    self._busy.discard(index)
        finally:
            if self._workers.get(index) is asyncio.current_task():
                del self._workers[index]
            self._staffed_for = None
            for connection in connections.values():
                await connection.close()

    def _started(self, count: int = 1) -> None:
        self._active += count

    def _finished(self) -> None:
        self._active -= 1
        if self._active <= 0:
            self._active = 0
            self._quiet.set()

    # -- one trigger, one step ----------------------------------------------------------------

    async def _start(self, job: _Start, connections: dict[Origin, Connection]) -> None:
        """Find the trigger's steps and queue each subscriber's first one."""
        trigger = job.trigger
        if trigger.cancelled or job.epoch != self.state.epoch:
            self._finished()
            return
        workflow_id = str(trigger.body.get("name"))
        try:
            url, steps = await self._steps(job.url, workflow_id, connections)
        except BridgeCallFailed as exc:
            self._failed(job.epoch, exc.detail)
            self._finished()
            return
        payload = {k: v for k, v in (trigger.body.get("payload") or {}).items() if k != "__source"}
        controls = trigger.body.get("controls") or {}
        runs = [
            _Run(
                trigger,
                url,
                job.epoch,
                workflow_id,
                tuple(steps),
                payload,
                controls,
                subscriber,
                int(time.time() * 1000),
            )
            for subscriber in subscribers(trigger.body.get("to"))
            if steps
        ]
        self._started(len(runs))
        self._finished()
        for run in runs:
            self._put(run)

    async def _step(self, run: _Run, connections: dict[Origin, Connection]) -> None:
        """Execute the run's next step; queue the one after it, or hold it for a delay."""
        if (
            run.epoch != self.state.epoch
            or run.trigger.cancelled
            or len(run.done) == len(run.steps)  # a delay was the last step
        ):
            self._finished()
            return
        step = run.step
        step_controls = (run.controls.get("steps") or {}).get(step.step_id) or {}
        body = {
            "payload": run.payload,
            "controls": step_controls,
            "state": run.state(),
            "subscriber": run.subscriber,
            "context": {},
        }
        params = {
            "action": "execute",
            "workflowId": run.workflow_id,
            "stepId": step.step_id,
            "jobId": secrets.token_hex(12),  # a Mongo ObjectId's length, as Novu's job ids
        }
        try:
            if step.type == "digest":
                raise BridgeCallFailed({"message": "digest steps are not emulated"})
            answer = await self._call("POST", run.url, params, body, connections)
            held = delay_seconds(answer.get("outputs")) if step.type == "delay" else None
        except BridgeCallFailed as exc:
            self._step_failed(run, exc.detail)
            self._finished()
            return
        if run.epoch != self.state.epoch:
            self._finished()
            return  # the emulator was reset meanwhile
        self.state.counters["bridge_executed"] += 1
        outputs = answer.get("outputs") or {}
        if held is not None:
            run.done.append((step, "completed", {}))
            until = time.monotonic() + held
            run.trigger.delayed_until = max(run.trigger.delayed_until or 0.0, until)
            self._later(held, run)
            return
        if (answer.get("options") or {}).get("skip") is True:
            self.state.counters["bridge_skipped"] += 1
            status = "skipped"
        else:
            status = "completed"
            if step.type in CHANNEL_TYPES:
                self._to_provider(run, outputs)
        result = dict(IN_APP_RESULT) if step.type == "in_app" else {}
        run.done.append((step, status, outputs if step.type == "custom" else result))
        if len(run.done) < len(run.steps):
            self._put(run)
        else:
            self._finished()

    def _to_provider(self, run: _Run, outputs: dict[str, Any]) -> None:
        """Hand a channel step's message to its provider: sent, or failed by an injected
        `providerFailures` fault; Novu's webhook either way. The run goes on after a failure,
        as Novu's does for a step that does not stop on failure (its default)."""
        message = self._message(run)
        failure = self.state.faults.provider_failure(run.step.type, self._rng)
        if failure is None:
            self.state.record_message(
                {**message, "status": "sent", "outputs": outputs, "deliveredAt": iso_now()}
            )
            if self._webhooks is not None:
                self._webhooks.message_event("message.sent", message)
            return
        error = {"code": "provider_failure", "message": failure.message}
        self.state.counters["bridge_provider_failures"] += 1
        self.state.log_fault(f"providerFailure:{run.step.type}", [run.trigger.transaction_id])
        self.state.messages.append(
            {
                **message,
                "status": "failed",
                "error": error,
                "outputs": outputs,
                "failedAt": iso_now(),
            }
        )
        if self._webhooks is not None:
            self._webhooks.message_event("message.failed", message, error=error)

    def _message(self, run: _Run) -> dict[str, Any]:
        return {
            "transactionId": run.trigger.transaction_id,
            "workflowId": run.workflow_id,
            "stepId": run.step.step_id,
            "channel": run.step.type,
            "subscriberId": run.subscriber["subscriberId"],
        }

    def _step_failed(self, run: _Run, detail: dict[str, Any]) -> None:
        if run.epoch != self.state.epoch:
            return
        error = {**detail, "workflowId": run.workflow_id, "stepId": run.step.step_id}
        self.state.counters["bridge_failed_steps"] += 1
        self.state.messages.append(
            {**self._message(run), "status": "failed", "error": error, "failedAt": iso_now()}
        )
        self._failed(run.epoch, error)

    def _failed(self, epoch: int, detail: dict[str, Any]) -> None:
        if epoch != self.state.epoch:
            return
        self.state.counters["bridge_errors"] += 1
        self.state.bridge_last_error = {**detail, "at": iso_now()}
        logger.warning("bridge call failed: %s", detail)

    # -- which steps, on which bridge ---------------------------------------------------------

    async def _steps(
        self, url: str | None, workflow_id: str, connections: dict[Origin, Connection]
    ) -> tuple[str, list[WorkflowStep]]:
        """The bridge to run the workflow on and its steps: a synced workflow's own (without
        discovering, as Novu runs what it stored), else the bridge's declared ones."""
        known = self.state.workflows.get(workflow_id)
        if url is None and known is not None and known.bridge_url is not None:
            return known.bridge_url, list(known.steps)
        if url is None:  # the workflow was forgotten (a reset, a sync) while the trigger waited
            raise BridgeCallFailed({"workflowId": workflow_id, "message": "workflow not synced"})
        return url, await self._discovered_steps(url, workflow_id, connections)

    async def _discovered_steps(
        self, url: str, workflow_id: str, connections: dict[Origin, Connection]
    ) -> list[WorkflowStep]:
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
                answer = await self._call("GET", url, {"action": "discover"}, None, connections)
                self.state.counters["bridge_discovers"] += 1
                cached = _Discovery(self.state.epoch, time.monotonic(), declared_steps(answer))
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
        if self._client is None:
            self._client = httpx.AsyncClient(follow_redirects=False)
        return await self._client.get(
            url,
            params={"action": "discover"},
            headers=headers,
            timeout=self.state.bridge.timeout_ms / 1000,
        )

    async def _call(
        self,
        method: str,
        url: str,
        params: dict[str, str],
        body: dict[str, Any] | None,
        connections: dict[Origin, Connection],
    ) -> dict[str, Any]:
        """One bridge request with Novu's timeout and retries; the JSON object it answers."""
        config = self.state.bridge
        raw = compact_json(body) if body is not None else None
        origin, target = request_target(url, params)
        connection = connections.get(origin)
        if connection is None:
            connection = connections[origin] = Connection(origin)
        last: dict[str, Any] = {}
        for attempt in range(1, config.attempts + 1):
            if attempt > 1:
                self.state.counters["bridge_retries"] += 1
                await asyncio.sleep(config.retry_base_ms / 1000 * 2 ** (attempt - 1))
            signature = novu_signature(self._secret_key, raw if raw is not None else b"{}")
            headers = [("novu-signature", signature), ("x-novu-signature", signature)]
            if raw is not None:
                headers.append(("content-type", "application/json"))
            self.state.counters["bridge_calls"] += 1
            try:
                # Novu's timeout bounds the whole request, connecting and the answer included.
                async with asyncio.timeout(config.timeout_ms / 1000):
                    status, answer_body = await connection.request(method, target, headers, raw)
            except TimeoutError:
                await connection.close()  # its answer may still come: not on this connection
                self.state.counters["bridge_failures"] += 1
                last = {
                    "url": url,
                    "action": params["action"],
                    "code": "BRIDGE_REQUEST_TIMEOUT",
                    "message": f"Timeout: no answer within {config.timeout_ms} ms",
                }
                continue
            except ConnectionFailed as exc:
                self.state.counters["bridge_failures"] += 1
                last = {"url": url, "action": params["action"], "message": str(exc)}
                continue
            if 200 <= status < 300:
                try:
                    answer = json.loads(answer_body)
                except ValueError:
                    answer = None
                if isinstance(answer, dict):
                    return answer
                self.state.counters["bridge_failures"] += 1
                raise BridgeCallFailed(
                    {"url": url, "action": params["action"], "message": "answer is not JSON"}
                )
            self.state.counters["bridge_failures"] += 1
            last = _error_detail(url, params["action"], status, answer_body)
            if status not in RETRYABLE_STATUSES:
                break
        raise BridgeCallFailed(last)


def declared_steps(answer: dict[str, Any]) -> dict[str, list[WorkflowStep]]:
    """Each workflow's steps in a bridge's discover answer."""
    declared: dict[str, list[WorkflowStep]] = {}
    for workflow in answer.get("workflows") or []:
        if not isinstance(workflow, dict) or not isinstance(workflow.get("workflowId"), str):
            continue
        declared[workflow["workflowId"]] = [
            WorkflowStep(step_id=str(step["stepId"]), type=str(step.get("type", "")))
            for step in workflow.get("steps") or []
            if isinstance(step, dict) and "stepId" in step
        ]
    return declared


def _error_detail(url: str, action: str, status: int, body: bytes) -> dict[str, Any]:
    detail: dict[str, Any] = {"url": url, "action": action, "statusCode": status}
    try:
        document = json.loads(body)
    except ValueError:
        document = None
    if isinstance(document, dict):
        detail.update({k: document[k] for k in ("code", "message", "data") if k in document})
    else:
        detail["message"] = body[:500].decode("utf-8", "replace")
    return detail
