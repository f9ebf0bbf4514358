"""The emulated Novu endpoints: trigger, bulk trigger and cancel, with Novu's checks and faults.

A request passes the layers in Novu's order: body parsing, authentication,
rate limiting, the Idempotency-Key interceptor, then the handler. Injected
faults sit where their real counterparts would (see `StatusFault.sticky`).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import random
import uuid
from enum import StrEnum
from typing import Any
from urllib.parse import unquote

from novu_emulator.bridge import BridgeRunner
from novu_emulator.faults import FaultConfig, FaultScope, StatusFault
from novu_emulator.http import (
    Disconnect,
    HttpRequest,
    HttpResponse,
    Reply,
    json_response,
    reason_phrase,
)
from novu_emulator.ratelimit import BULK_COST, Category
from novu_emulator.state import EmulatorState, iso_now
from novu_emulator.sync import SYNC_PATH, SyncFailed, run_sync, sync_body_error
from novu_emulator.validation import (
    MAX_PAYLOAD_BYTES,
    FieldErrors,
    bulk_envelope_errors,
    flat_messages,
    json_size,
    payload_too_large_message,
    trigger_errors,
    valid_recipients,
)

logger = logging.getLogger(__name__)

TRIGGER_PATH = "/v1/events/trigger"
BULK_TRIGGER_PATH = "/v1/events/trigger/bulk"
MAX_IDEMPOTENCY_KEY_CHARS = 255
IDEMPOTENCY_DOCS_LINK = "https://docs.novu.co/additional-resources/idempotency"
_FAULT_MESSAGES = {
    500: "Internal server error, contact support and provide them with the errorId",
    429: "API rate limit exceeded",
}


class Endpoint(StrEnum):
    TRIGGER = "trigger"
    BULK_TRIGGER = "bulk-trigger"
    CANCEL = "cancel"
    SYNC = "sync"


def not_found(request: HttpRequest) -> HttpResponse:
    """Express's answer for a route nobody serves."""
    return novu_error(404, request.target, f"Cannot {request.method} {request.path}")


def method_not_allowed(request: HttpRequest, allowed: str) -> HttpResponse:
    """405 for a known path asked with the wrong method (Novu itself answers 404 here)."""
    message = f"Cannot {request.method} {request.path}"
    return novu_error(405, request.target, message).with_headers(("Allow", allowed))


def novu_error(status: int, path: str, message: Any, **extra: Any) -> HttpResponse:
    """An error in the shape of Novu's exception filter: statusCode, timestamp, path, message."""
    body: dict[str, Any] = {
        "statusCode": status,
        "timestamp": iso_now(),
        "path": path,
        "message": message,
    }
    if status == 500:
        body["errorId"] = str(uuid.uuid4())
    elif status != 429:  # Nest's ThrottlerException carries no `error` label.
        body["error"] = reason_phrase(status)
    body.update(extra)
    return json_response(status, body)


def validation_error(path: str, errors: FieldErrors) -> HttpResponse:
    """Novu's 422 for a body that fails its DTO checks."""
    return novu_error(422, path, "Validation failed", errors=errors)


def body_hash(body: Any) -> str:
    """Fingerprint of a JSON body for the Idempotency-Key check (key order matters, as in Novu)."""
    encoded = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
    return hashlib.sha256(encoded).hexdigest()


def _route(request: HttpRequest) -> tuple[Endpoint, str] | HttpResponse:
    path = request.path.rstrip("/") or "/"
    if path == SYNC_PATH:
        if request.method == "POST":
            return Endpoint.SYNC, ""
        return method_not_allowed(request, "POST")
    if path == TRIGGER_PATH:
        if request.method == "POST":
            return Endpoint.TRIGGER, ""
        return method_not_allowed(request, "POST")
    prefix = TRIGGER_PATH + "/"
    if not path.startswith(prefix) or "/" in path[len(prefix) :]:
        return not_found(request)
    if path == BULK_TRIGGER_PATH and request.method == "POST":
        return Endpoint.BULK_TRIGGER, ""
    if request.method == "DELETE":
        return Endpoint.CANCEL, unquote(path[len(prefix) :])
    return method_not_allowed(request, "POST, DELETE" if path == BULK_TRIGGER_PATH else "DELETE")


class NovuApi:
    """Answers `/v1/...` requests as Novu would, plus the configured faults."""

    def __init__(
        self,
        state: EmulatorState,
        secret_key: str,
        *,
        rng: random.Random,
        bridge: BridgeRunner | None = None,
    ) -> None:
        self.state = state
        self._secret_key = secret_key.encode()
        self._rng = rng
        self._bridge = bridge

    async def handle(self, request: HttpRequest) -> Reply:
        """The outcome of one `/v1` request: an answer, or a dropped connection."""
        self.state.counters["requests"] += 1
        faults = self.state.faults  # One configuration for the whole request.
        route = _route(request)
        if isinstance(route, HttpResponse):
            return await self._after_latency(request, route, faults)
        endpoint, transaction_id = route
        if self._fires(faults.drop_rate):
            self.state.log_fault("drop", _transaction_ids(request))
            return Disconnect("drop fault")

        body: Any = None
        if endpoint is not Endpoint.CANCEL:
            body = _parse_json(request)
            if isinstance(body, HttpResponse):
                return await self._after_latency(request, body, faults)
        denied = self._authentication_error(request)
        if denied is not None:
            denial = novu_error(401, request.target, denied)
            return await self._after_latency(request, denial, faults)

        cost = BULK_COST if endpoint is Endpoint.BULK_TRIGGER else 1
        category = Category.GLOBAL if endpoint is Endpoint.SYNC else Category.TRIGGER
        verdict = self.state.rate_limits.take(category, cost)
        if verdict.allowed:  # Novu charges a call its tokens once it passes the limiter
            self.state.tokens_spent[endpoint.value] += cost
        else:
            self.state.tokens_refused[endpoint.value] += cost
            self.state.counters["rate_limited"] += 1
            self.state.log_fault("rateLimited", _transaction_ids(request))
            throttled = novu_error(429, request.target, _FAULT_MESSAGES[429]).with_headers(
                ("Retry-After", str(verdict.reset_seconds)), *verdict.headers
            )
            return await self._after_latency(request, throttled, faults)

        rule = self._status_fault(endpoint, body, faults)
        if rule is not None and not rule.sticky:
            failed = self._fault_response(request, rule).with_headers(*verdict.headers)
            return await self._after_latency(request, failed, faults)
        outcome = await self._handle_admitted(request, endpoint, body, transaction_id, rule, faults)
        if isinstance(outcome, HttpResponse):
            return outcome.with_headers(*verdict.headers)
        return outcome

    async def _handle_admitted(
        self,
        request: HttpRequest,
        endpoint: Endpoint,
        body: Any,
        transaction_id: str,
        sticky_fault: StatusFault | None,
        faults: FaultConfig,
    ) -> Reply:
        """Past authentication and throttling: Novu's Idempotency-Key layer, then its handler."""
        key = request.headers.get("idempotency-key") if request.method == "POST" else None
        if key is not None:
            repeat = self._idempotency_check(request, key, body)
            if repeat is not None:
                return await self._after_latency(request, repeat, faults)
        # The first request holds its Idempotency-Key in flight for the whole delay.
        await self._delay(request, faults)
        try:
            if sticky_fault is not None:
                response, accepted = self._fault_response(request, sticky_fault), False
            else:
                response, accepted = await self._dispatch(request, endpoint, body, transaction_id)
        except Exception:
            if key is not None:
                self.state.finish_idempotent(key, None)
            raise
        if key is not None:
            self.state.finish_idempotent(key, response)
            response = response.with_headers(("Idempotency-Key", key))
        if accepted and self._fires(faults.drop_after_accept_rate):
            self.state.log_fault("dropAfterAccept", _transaction_ids(request))
            return Disconnect("dropAfterAccept fault")
        return response

    def _fires(self, rate: float) -> bool:
        return rate > 0 and self._rng.random() < rate

    def _status_fault(
        self, endpoint: Endpoint, body: Any, faults: FaultConfig
    ) -> StatusFault | None:
        """The request-scoped rule drawn now, else the rule the transactionId drew (single
        triggers with a transactionId; in a bulk request each event's 4xx rule answers that
        event, see _event_fault), else None."""
        if endpoint in (Endpoint.CANCEL, Endpoint.SYNC):
            return None
        rule = faults.pick_status_fault(self._rng, FaultScope.REQUEST)
        if rule is None and endpoint is Endpoint.TRIGGER and faults.has_transaction_rules():
            transaction_id = body.get("transactionId") if isinstance(body, dict) else None
            if isinstance(transaction_id, str) and transaction_id:
                rule = self.state.transaction_fault(transaction_id, self._rng)
        return rule

    async def _delay(self, request: HttpRequest, faults: FaultConfig) -> None:
        delay_ms = faults.latency_ms
        if faults.latency_ms:
            self.state.fault_counts["latency"] += 1
        if faults.latency_spike_ms and self._fires(faults.latency_spike_rate):
            self.state.log_fault("latencySpike", _transaction_ids(request))
            delay_ms += faults.latency_spike_ms
        if delay_ms:
            await asyncio.sleep(delay_ms / 1000)

    async def _after_latency(
        self, request: HttpRequest, response: HttpResponse, faults: FaultConfig
    ) -> HttpResponse:
        await self._delay(request, faults)
        return response

    def _authentication_error(self, request: HttpRequest) -> str | None:
        """Novu's 401 message for the request's Authorization header, or None when it is valid."""
        header = request.headers.get("authorization", "")
        if not header:
            return "Missing authorization header"
        scheme, _, credential = header.partition(" ")
        if scheme not in ("ApiKey", "Bearer"):
            return f'Invalid authentication scheme: "{scheme}"'
        if scheme == "Bearer" or not credential:
            return "Unauthorized"
        if not hmac.compare_digest(credential.encode(), self._secret_key):
            return "API Key not found"
        return None

    def _fault_response(self, request: HttpRequest, rule: StatusFault) -> HttpResponse:
        kind = f"status:{rule.status}"
        self.state.log_fault(kind, _transaction_ids(request), status=rule.status)
        logger.info("injecting HTTP %s for %s %s", rule.status, request.method, request.path)
        message = rule.message or _FAULT_MESSAGES.get(rule.status) or reason_phrase(rule.status)
        response = novu_error(rule.status, request.target, message).with_headers(
            ("X-Emulator-Fault", f"status:{rule.status}")
        )
        retry_after = rule.retry_after_header()
        return response.with_headers(("Retry-After", retry_after)) if retry_after else response

    def _idempotency_check(self, request: HttpRequest, key: str, body: Any) -> HttpResponse | None:
        """The answer for a repeated Idempotency-Key, or None after marking a new one in flight."""
        if len(key) > MAX_IDEMPOTENCY_KEY_CHARS:
            message = (
                f'idempotencyKey "{key}" has exceeded the maximum allowed length of '
                f"{MAX_IDEMPOTENCY_KEY_CHARS} characters"
            )
            return novu_error(400, request.target, message)
        fingerprint = body_hash(body)
        entry = self.state.idempotency_entry(key)
        if entry is None:
            self.state.start_idempotent(key, fingerprint)
            return None
        headers = (("Idempotency-Key", key), ("Link", IDEMPOTENCY_DOCS_LINK))
        if entry.response is None:
            self.state.counters["idempotency_in_flight"] += 1
            message = (
                f'Request with key "{key}" is currently being processed. '
                "Please retry after 1 second"
            )
            return novu_error(409, request.target, message).with_headers(
                ("Retry-After", "1"), *headers
            )
        if entry.body_hash != fingerprint:
            self.state.counters["idempotency_mismatch"] += 1
            message = f'Request with key "{key}" is being reused for a different body'
            return novu_error(422, request.target, message).with_headers(*headers)
        self.state.counters["idempotency_replayed"] += 1
        return entry.response.with_headers(("Idempotency-Key", key), ("Idempotency-Replay", "true"))

    async def _dispatch(
        self, request: HttpRequest, endpoint: Endpoint, body: Any, transaction_id: str
    ) -> tuple[HttpResponse, bool]:
        """The handler's answer, and whether it accepted triggers (201)."""
        if endpoint is Endpoint.TRIGGER:
            return self._trigger(request, body)
        if endpoint is Endpoint.BULK_TRIGGER:
            return self._bulk_trigger(request, body)
        if endpoint is Endpoint.SYNC:
            return await self._sync(request, body), False
        return json_response(200, {"data": self.state.cancel(transaction_id)}), False

    async def _sync(self, request: HttpRequest, body: Any) -> HttpResponse:
        refused = sync_body_error(body)
        if refused is not None:
            return novu_error(refused[0], request.target, refused[1])
        if self._bridge is None:
            return novu_error(400, request.target, "the emulator has no bridge runner")
        source = request.query.get("source", [None])[0]
        try:
            data = await run_sync(self.state, self._bridge, body["bridgeUrl"], source)
        except SyncFailed as failed:
            self.state.counters["sync_failures"] += 1
            return novu_error(failed.status, request.target, failed.message)
        return json_response(201, {"data": data})

    def _trigger(self, request: HttpRequest, body: Any) -> tuple[HttpResponse, bool]:
        errors = trigger_errors(body)
        if errors:
            return validation_error(request.target, errors), False
        size = json_size(body)
        if size > MAX_PAYLOAD_BYTES:
            return novu_error(413, request.target, payload_too_large_message(size)), False
        if body["name"] not in self.state.workflows:
            return novu_error(422, request.target, "workflow_not_found"), False
        result = self._accept(body)
        return json_response(201, {"data": result}), result["status"] == "processed"

    def _bulk_trigger(self, request: HttpRequest, body: Any) -> tuple[HttpResponse, bool]:
        errors = bulk_envelope_errors(body)
        if errors:
            return validation_error(request.target, errors), False
        events: list[Any] = body["events"]
        for index, event in enumerate(events):
            size = json_size(event)
            if size > MAX_PAYLOAD_BYTES:
                name = event.get("name") if isinstance(event, dict) else None
                message = payload_too_large_message(size, index=index, name=name)
                return novu_error(413, request.target, message), False
        results = [self._bulk_event_result(event) for event in events]
        return json_response(201, {"data": results}), True

    def _bulk_event_result(self, event: Any) -> dict[str, Any]:
        # Novu's bulk handler turns each event's failure into an `error` result.
        errors = trigger_errors(event)
        if errors:
            return {"acknowledged": True, "status": "error", "error": flat_messages(errors)}
        if event["name"] not in self.state.workflows:
            return {"acknowledged": True, "status": "error", "error": ["workflow_not_found"]}
        refused = self._event_fault(event)
        if refused is not None:
            return refused
        return self._accept(event)

    def _event_fault(self, event: dict[str, Any]) -> dict[str, Any] | None:
        """A transaction-scoped 4xx rule the event's transactionId drew, as the bulk answer
        gives an event Novu refused: its own `error` result, the other events going on. (A
        5xx or 429 concerns a whole request; transaction-scoped ones apply to single triggers
        only.)"""
        transaction_id = event.get("transactionId")
        faults = self.state.faults
        if not (
            isinstance(transaction_id, str) and transaction_id and faults.has_transaction_rules()
        ):
            return None
        rule = self.state.transaction_fault(transaction_id, self._rng)
        if rule is None or rule.status >= 500 or rule.status == 429:
            return None
        self.state.log_fault(f"status:{rule.status}", [transaction_id], status=rule.status)
        message = rule.message or _FAULT_MESSAGES.get(rule.status) or reason_phrase(rule.status)
        return {
            "acknowledged": True,
            "status": "error",
            "error": [message],
            "transactionId": transaction_id,
        }

    def _accept(self, event: dict[str, Any]) -> dict[str, Any]:
        """Queue one valid trigger of a known workflow; a transactionId seen before is
        acknowledged but dropped. A tenant (none exists here), an inactive workflow, or one
        without steps is acknowledged with Novu's status for it and not queued."""
        workflow = self.state.workflows[event["name"]]
        if event.get("tenant") is not None:
            # Novu needs the tenant to exist already; the emulator has no tenants API.
            return {"acknowledged": True, "status": "no_tenant_found"}
        if not workflow.active:
            return {"acknowledged": True, "status": "trigger_not_active"}
        if not workflow.steps:
            return {"acknowledged": True, "status": "no_workflow_steps_defined"}
        transaction_id = event.get("transactionId") or str(uuid.uuid4())
        to, dropped = valid_recipients(event["to"])
        if not to:
            return {
                "acknowledged": True,
                "status": "invalid_recipients",
                "transactionId": transaction_id,
            }
        if dropped:
            logger.warning("invalid recipients dropped: %s", json.dumps(dropped)[:500])
            self.state.counters["recipients_dropped"] += len(dropped)
        recorded = self.state.record(transaction_id, {**event, "to": to})
        if recorded is not None and self._bridge is not None:
            # Novu's workers run the steps after the 201; so does the bridge runner.
            self._bridge.schedule(recorded)
        return {"acknowledged": True, "status": "processed", "transactionId": transaction_id}


def _transaction_ids(request: HttpRequest) -> list[str]:
    """The transactionIds a trigger or bulk request carries, for the fault log (best effort)."""
    try:
        document = json.loads(request.body) if request.body.strip() else None
    except ValueError:
        return []
    events: Any = document.get("events", [document]) if isinstance(document, dict) else []
    if not isinstance(events, list):
        return []
    return [
        event["transactionId"]
        for event in events
        if isinstance(event, dict) and isinstance(event.get("transactionId"), str)
    ]


def _parse_json(request: HttpRequest) -> Any:
    """The request's JSON body (`{}` when empty, as body-parser gives), or a 400 answer."""
    if not request.body.strip():
        return {}
    try:
        document = json.loads(request.body.decode("utf-8"))
    except UnicodeDecodeError:
        return novu_error(400, request.target, "Request body is not valid UTF-8")
    except json.JSONDecodeError as exc:
        return novu_error(400, request.target, f"{exc.msg} in JSON at position {exc.pos}")
    if not isinstance(document, dict | list):  # body-parser's strict mode
        return novu_error(400, request.target, "JSON body must be an object or an array")
    return document
