"""Everything the emulator remembers, in memory: triggers, workflows, subscribers, counters,
idempotency keys, tokens.

Only the event loop thread touches this state, and no method awaits, so each
call is atomic with respect to concurrent requests.
"""

from __future__ import annotations

import random
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from novu_emulator.config import BridgeConfig
from novu_emulator.faults import FaultConfig, FaultScope, StatusFault
from novu_emulator.http import HttpResponse
from novu_emulator.ratelimit import DEFAULT_EVENTS_RPS, RateLimits
from novu_emulator.validation import recipients

IDEMPOTENCY_TTL_SECONDS = 24 * 3600.0
# Novu forgets an in-flight mark after 5 minutes, in case its request never finished.
IDEMPOTENCY_IN_FLIGHT_TTL_SECONDS = 300.0
# Stricter than Novu, whose window is however long its worker takes to store the first.
DEFAULT_DEDUPE_RACE_WINDOW_MS = 100
# How many injected faults `GET /_emulator/faults/log` remembers (the oldest are forgotten).
FAULT_LOG_LIMIT = 100_000
# How many message webhooks `GET /_emulator/webhooks` remembers.
WEBHOOK_LOG_LIMIT = 10_000


_second: tuple[int, str] = (-1, "")


def iso_now() -> str:
    """Now in UTC as ISO-8601 with milliseconds, like JavaScript's `toISOString()`. Every
    executed step stamps one, so the part up to the second is formatted once a second."""
    global _second
    now_ms = time.time_ns() // 1_000_000
    seconds, millis = divmod(now_ms, 1000)
    if _second[0] != seconds:
        _second = (seconds, datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S"))
    return f"{_second[1]}.{millis:03d}Z"


@dataclass(frozen=True, slots=True)
class WorkflowStep:
    """One step of a known workflow: its stepId and channel type (`email`, `in_app`, `delay`...)."""

    step_id: str
    type: str


@dataclass(frozen=True, slots=True)
class KnownWorkflow:
    """A workflow Novu knows: synced from a bridge, or registered by hand (a dashboard one)."""

    workflow_id: str
    steps: tuple[WorkflowStep, ...]
    # The bridge it was discovered on; None for one registered by hand.
    bridge_url: str | None
    synced_at: str
    source: str | None
    active: bool = True

    def to_json(self) -> dict[str, Any]:
        """`{workflowId, steps: [{stepId, type}], bridgeUrl, syncedAt, source, active}`."""
        return {
            "workflowId": self.workflow_id,
            "steps": [{"stepId": step.step_id, "type": step.type} for step in self.steps],
            "bridgeUrl": self.bridge_url,
            "syncedAt": self.synced_at,
            "source": self.source,
            "active": self.active,
        }


@dataclass(slots=True)
class RecordedTrigger:
    """One accepted trigger, as `GET /_emulator/events` lists it."""

    transaction_id: str
    body: dict[str, Any]
    received_at: str
    # Monotonic time before which its steps do not start: Novu's queue lag (`holdSeconds`).
    queued_until: float
    # Monotonic time it was received (the start of its deduplication race window).
    received: float = 0.0
    cancelled: bool = False
    # Monotonic time until which a run of this trigger waits in a delay step (bridge.py).
    delayed_until: float | None = None

    def held_in_delay(self, now: float) -> bool:
        """Whether a run of it waits in a delay step now: only then can Novu cancel it."""
        return self.delayed_until is not None and now < self.delayed_until

    def to_json(self) -> dict[str, Any]:
        """`{transactionId, name, to, payload, overrides?, actor?, tenant?, ..., receivedAt}`."""
        document: dict[str, Any] = {
            "transactionId": self.transaction_id,
            "name": self.body.get("name"),
            "to": self.body.get("to"),
            "payload": self.body.get("payload") or {},
        }
        for key in ("overrides", "actor", "tenant", "context", "bridgeUrl", "controls"):
            if self.body.get(key) is not None:
                document[key] = self.body[key]
        document["receivedAt"] = self.received_at
        document["cancelled"] = self.cancelled
        return document


class IdempotencyState(StrEnum):
    IN_FLIGHT = "in-flight"
    DONE = "done"


@dataclass(slots=True)
class IdempotencyEntry:
    """What Novu keeps for one Idempotency-Key."""

    body_hash: str
    state: IdempotencyState
    expires_at: float
    response: HttpResponse | None = None


@dataclass(slots=True)
class EmulatorState:
    """The emulator's memory; `reset()` empties it."""

    faults: FaultConfig = field(default_factory=FaultConfig)
    triggers: list[RecordedTrigger] = field(default_factory=list)
    by_transaction: dict[str, RecordedTrigger] = field(default_factory=dict)
    # Later triggers of a transactionId that slipped through the deduplication race window
    # and run too.
    slipped: dict[str, list[RecordedTrigger]] = field(default_factory=dict)
    # How long after a transactionId's first trigger a second one still runs (ms): Novu's
    # deduplication is a lookup in its worker, not an atomic check. The startup value; the
    # `dedupeRaceWindowMs` fault overrides it while set.
    dedupe_race_window_ms: int = DEFAULT_DEDUPE_RACE_WINDOW_MS
    idempotency: dict[str, IdempotencyEntry] = field(default_factory=dict)
    counters: Counter[str] = field(default_factory=Counter)
    fault_counts: Counter[str] = field(default_factory=Counter)
    # Novu's rate limits for the Events tier the emulator was started with (`events_rps`),
    # or the `rateLimitPerSecond` fault's rate while that is set.
    events_rps: int = DEFAULT_EVENTS_RPS
    rate_limits: RateLimits = field(default_factory=RateLimits)
    # Tokens charged to admitted requests and asked by refused ones, by endpoint.
    tokens_spent: Counter[str] = field(default_factory=Counter)
    tokens_refused: Counter[str] = field(default_factory=Counter)
    # The bridge configuration in force, and the one the emulator was started with.
    bridge: BridgeConfig = field(default_factory=BridgeConfig)
    startup_bridge: BridgeConfig = field(default_factory=BridgeConfig)
    # Messages the bridge's step outputs delivered, in order (`GET /_emulator/messages`).
    messages: list[dict[str, Any]] = field(default_factory=list)
    bridge_last_error: dict[str, Any] | None = None
    # Bumped by reset(): bridge runs started before it record nothing afterwards.
    epoch: int = 0
    # The transaction-scoped rule each transactionId drew (None: none), and every injected
    # fault in order, so a test can tell which transactionIds a fault hit.
    transaction_faults: dict[str, StatusFault | None] = field(default_factory=dict)
    fault_log: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=FAULT_LOG_LIMIT))
    # The workflows Novu knows, by workflowId (a trigger of any other one is refused), and
    # those registered at startup, which reset() restores.
    workflows: dict[str, KnownWorkflow] = field(default_factory=dict)
    startup_workflows: dict[str, KnownWorkflow] = field(default_factory=dict)
    # Novu's subscribers, by subscriberId: a trigger Novu runs creates each subscriber it names
    # and updates it with the fields of an inline subscriber object.
    subscribers: dict[str, dict[str, Any]] = field(default_factory=dict)
    # The message webhooks sent to NOVU_EMULATOR_WEBHOOK_URL, in order (webhooks.py).
    webhooks: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=WEBHOOK_LOG_LIMIT))

    def reset(self) -> None:
        """Forget every trigger, message, counter, fault, idempotency key and synced workflow,
        and go back to the bridge configuration the emulator was started with."""
        self.epoch += 1
        self.workflows = dict(self.startup_workflows)
        self.bridge = self.startup_bridge
        self.messages.clear()
        self.bridge_last_error = None
        self.faults = FaultConfig()
        self.rate_limits = RateLimits(self.events_rps)
        self.tokens_spent.clear()
        self.tokens_refused.clear()
        self.triggers.clear()
        self.by_transaction.clear()
        self.slipped.clear()
        self.idempotency.clear()
        self.counters.clear()
        self.fault_counts.clear()
        self.transaction_faults.clear()
        self.fault_log.clear()
        self.subscribers.clear()
        self.webhooks.clear()

    def set_faults(self, faults: FaultConfig) -> None:
        """Replace the fault configuration (and the rate limits when its rate changes)."""
        if faults.rate_limit_per_second != self.faults.rate_limit_per_second:
            self.rate_limits = RateLimits(faults.rate_limit_per_second or self.events_rps)
        self.faults = faults
        self.transaction_faults.clear()

    def record(self, transaction_id: str, body: dict[str, Any]) -> RecordedTrigger | None:
        """Keep an accepted trigger and return it; None (counted as a duplicate) when its
        transactionId was seen longer ago than the race window, else it runs again
        (counted in `duplicates_run`)."""
        now = time.monotonic()
        first = self.by_transaction.get(transaction_id)
        if first is not None:
            window_ms = self.faults.dedupe_race_window_ms
            if window_ms is None:
                window_ms = self.dedupe_race_window_ms
            if (now - first.received) * 1000 >= window_ms:
                self.counters["duplicates"] += 1
                return None
            self.counters["duplicates_run"] += 1
        trigger = RecordedTrigger(
            transaction_id=transaction_id,
            body=body,
            received_at=iso_now(),
            queued_until=now + self.faults.hold_seconds,
            received=now,
        )
        self.triggers.append(trigger)
        self._upsert_subscribers(body.get("to"))
        if first is None:
            self.by_transaction[transaction_id] = trigger
        else:
            self.slipped.setdefault(transaction_id, []).append(trigger)
        self.counters["accepted"] += 1
        return trigger

    def _upsert_subscribers(self, to: Any) -> None:
        """Create the subscribers `to` names and update them with the fields given inline, as
        Novu's trigger does (topics are left alone: the emulator has none)."""
        for recipient in recipients(to):
            if isinstance(recipient, str):
                self.subscribers.setdefault(recipient, {"subscriberId": recipient})
            elif isinstance(recipient, dict) and isinstance(recipient.get("subscriberId"), str):
                subscriber_id = recipient["subscriberId"]
                known = self.subscribers.setdefault(subscriber_id, {"subscriberId": subscriber_id})
                known.update(recipient)

    def sync_workflows(
        self, bridge_url: str, source: str | None, discovered: list[KnownWorkflow]
    ) -> None:
        """Keep what a sync discovered and forget the synced workflows it no longer lists, as
        Novu deletes them; workflows registered by hand (dashboard ones) stay. Like Novu, the
        sync also makes `bridge_url` the environment's bridge, where triggers are executed."""
        self.workflows = {
            workflow_id: workflow
            for workflow_id, workflow in self.workflows.items()
            if workflow.bridge_url is None
        }
        self.workflows.update((workflow.workflow_id, workflow) for workflow in discovered)
        self.bridge = self.bridge.model_copy(update={"bridge_url": bridge_url})
        self.counters["syncs"] += 1

    def transaction_fault(self, transaction_id: str, rng: random.Random) -> StatusFault | None:
        """The transaction-scoped rule this transactionId drew, drawing on first sight."""
        if transaction_id not in self.transaction_faults:
            if len(self.transaction_faults) >= FAULT_LOG_LIMIT:
                self.transaction_faults.clear()  # bounded memory; a long run redraws
            self.transaction_faults[transaction_id] = self.faults.pick_status_fault(
                rng, FaultScope.TRANSACTION
            )
        return self.transaction_faults[transaction_id]

    def log_fault(
        self, kind: str, transaction_ids: list[str], *, status: int | None = None
    ) -> None:
        """Count one injected fault and remember which transactionIds it hit."""
        self.fault_counts[kind] += 1
        entry: dict[str, Any] = {"kind": kind, "transactionIds": transaction_ids, "at": iso_now()}
        if status is not None:
            entry["status"] = status
        self.fault_log.append(entry)

    def record_message(self, message: dict[str, Any]) -> None:
        """Keep a message a bridge step delivered."""
        self.messages.append(message)
        self.counters["bridge_delivered"] += 1

    def cancel(self, transaction_id: str) -> bool:
        """Cancel a transaction whose run waits in a delay step, as Novu cancels its delayed
        jobs; False when none does (unknown, queued, running, done or already cancelled)."""
        now = time.monotonic()
        first = self.by_transaction.get(transaction_id)
        runs = [first, *self.slipped.get(transaction_id, ())] if first is not None else []
        held = [run for run in runs if not run.cancelled and run.held_in_delay(now)]
        for run in held:
            run.cancelled = True
        self.counters["cancelled"] += len(held)
        return bool(held)

    def idempotency_entry(self, key: str) -> IdempotencyEntry | None:
        """The live entry for an Idempotency-Key (expired ones are forgotten)."""
        entry = self.idempotency.get(key)
        if entry is not None and entry.expires_at <= time.monotonic():
            del self.idempotency[key]
            return None
        return entry

    def start_idempotent(self, key: str, body_hash: str) -> None:
        """Mark a key as in flight for a request with this body."""
        if len(self.idempotency) > 10_000:
            self._forget_expired_keys()
        self.idempotency[key] = IdempotencyEntry(
            body_hash,
            IdempotencyState.IN_FLIGHT,
            time.monotonic() + IDEMPOTENCY_IN_FLIGHT_TTL_SECONDS,
        )

    def finish_idempotent(self, key: str, response: HttpResponse | None) -> None:
        """Keep the answer for a key for 24 h, or forget the key when there is none to keep."""
        entry = self.idempotency.get(key)
        if entry is None:
            return
        if response is None:
            del self.idempotency[key]
            return
        entry.state = IdempotencyState.DONE
        entry.response = response
        entry.expires_at = time.monotonic() + IDEMPOTENCY_TTL_SECONDS

    def _forget_expired_keys(self) -> None:
        now = time.monotonic()
        for key in [key for key, entry in self.idempotency.items() if entry.expires_at <= now]:
            del self.idempotency[key]

    def stats_json(self) -> dict[str, Any]:
        """The counters as `GET /_emulator/stats` shows them."""
        faults = {
            "latency": 0,
            "latencySpike": 0,
            "drop": 0,
            "dropAfterAccept": 0,
            "rateLimited": 0,
        }
        faults.update(sorted(self.fault_counts.items()))
        return {
            "accepted": self.counters["accepted"],
            "recipientsDropped": self.counters["recipients_dropped"],
            "duplicates": self.counters["duplicates"],
            "duplicatesRun": self.counters["duplicates_run"],
            "cancelled": self.counters["cancelled"],
            "requests": self.counters["requests"],
            "tokens": {
                "spent": self.tokens_spent.total(),
                "refused": self.tokens_refused.total(),
                "refusedRequests": self.counters["rate_limited"],
                "eventsRps": self.rate_limits.events_rps,
                "byEndpoint": {
                    endpoint: {
                        "spent": self.tokens_spent[endpoint],
                        "refused": self.tokens_refused[endpoint],
                    }
                    for endpoint in sorted(self.tokens_spent.keys() | self.tokens_refused.keys())
                },
            },
            "syncs": self.counters["syncs"],
            "idempotency": {
                "replayed": self.counters["idempotency_replayed"],
                "inFlightConflicts": self.counters["idempotency_in_flight"],
                "bodyMismatches": self.counters["idempotency_mismatch"],
            },
            "faults": faults,
            "bridge": {
                "calls": self.counters["bridge_calls"],
                "failures": self.counters["bridge_failures"],
                "retries": self.counters["bridge_retries"],
                "discovers": self.counters["bridge_discovers"],
                "executed": self.counters["bridge_executed"],
                "skipped": self.counters["bridge_skipped"],
                "delivered": self.counters["bridge_delivered"],
                "errors": self.counters["bridge_errors"],
                "failedSteps": self.counters["bridge_failed_steps"],
                "providerFailures": self.counters["bridge_provider_failures"],
                "lastError": self.bridge_last_error,
            },
            "webhooks": {
                "sent": self.counters["webhooks_sent"],
                "attempts": self.counters["webhook_attempts"],
                "delivered": self.counters["webhooks_delivered"],
                "failed": self.counters["webhooks_failed"],
            },
        }
