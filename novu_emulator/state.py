"""Everything the emulator remembers, in memory: triggers, counters, idempotency keys, tokens.

Only the event loop thread touches this state, and no method awaits, so each
call is atomic with respect to concurrent requests.
"""

from __future__ import annotations

import math
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

IDEMPOTENCY_TTL_SECONDS = 24 * 3600.0
# Novu forgets an in-flight mark after 5 minutes, in case its request never finished.
IDEMPOTENCY_IN_FLIGHT_TTL_SECONDS = 300.0
# Novu's trigger category for the Business tier: 600 requests per second.
DEFAULT_RATE_LIMIT_PER_SECOND = 600
RATE_LIMIT_WINDOW_SECONDS = 5
RATE_LIMIT_BURST_ALLOWANCE = 0.1
BULK_COST = 100  # A bulk trigger costs 100 tokens, a single call 1.
# How many injected faults `GET /_emulator/faults/log` remembers (the oldest are forgotten).
FAULT_LOG_LIMIT = 100_000


def iso_now() -> str:
    """Now in UTC as ISO-8601 with milliseconds, like JavaScript's `toISOString()`."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


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
    cancellable_until: float
    cancelled: bool = False
    # Monotonic time until which a run of this trigger waits in a delay step (bridge.py).
    delayed_until: float | None = None

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


@dataclass(frozen=True, slots=True)
class RateLimitVerdict:
    """One token bucket evaluation, and the `RateLimit-*` headers that report it."""

    allowed: bool
    headers: tuple[tuple[str, str], ...]
    reset_seconds: int


class TokenBucket:
    """Novu's trigger-category token bucket: a window's worth of tokens every 5 s, 10 % burst."""

    def __init__(self, per_second: int, *, custom: bool) -> None:
        self.per_second = per_second
        self.limit = per_second * RATE_LIMIT_WINDOW_SECONDS
        self.burst = math.floor(self.limit * (1 + RATE_LIMIT_BURST_ALLOWANCE))
        self.service_level = "emulator" if custom else "business"
        self._tokens = float(self.burst)
        self._refilled_at = time.monotonic()

    def take(self, cost: int, *, enforce: bool) -> RateLimitVerdict:
        """Spend `cost` tokens if there are enough; without `enforce` never refuse (dry run)."""
        now = time.monotonic()
        windows = math.floor((now - self._refilled_at) / RATE_LIMIT_WINDOW_SECONDS)
        if windows > 0:
            self._tokens = min(self.burst, self._tokens + windows * self.limit)
            self._refilled_at += windows * RATE_LIMIT_WINDOW_SECONDS
        enough = self._tokens >= cost
        if enough:
            self._tokens -= cost
        reset = max(math.ceil(self._refilled_at + RATE_LIMIT_WINDOW_SECONDS - now), 0)
        cost_name = "bulk" if cost == BULK_COST else "single"
        policy = (
            f"{self.limit};w={RATE_LIMIT_WINDOW_SECONDS};burst={self.burst};"
            f'comment="token bucket";category="trigger";cost="{cost_name}";'
            f'serviceLevel="{self.service_level}"'
        )
        headers = (
            ("RateLimit-Remaining", str(max(int(self._tokens), 0))),
            ("RateLimit-Limit", str(self.limit)),
            ("RateLimit-Reset", str(reset)),
            ("RateLimit-Policy", policy),
        )
        return RateLimitVerdict(allowed=enough or not enforce, headers=headers, reset_seconds=reset)


@dataclass(slots=True)
class EmulatorState:
    """The emulator's memory; `reset()` empties it."""

    faults: FaultConfig = field(default_factory=FaultConfig)
    triggers: list[RecordedTrigger] = field(default_factory=list)
    by_transaction: dict[str, RecordedTrigger] = field(default_factory=dict)
    idempotency: dict[str, IdempotencyEntry] = field(default_factory=dict)
    counters: Counter[str] = field(default_factory=Counter)
    fault_counts: Counter[str] = field(default_factory=Counter)
    bucket: TokenBucket = field(
        default_factory=lambda: TokenBucket(DEFAULT_RATE_LIMIT_PER_SECOND, custom=False)
    )
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

    def reset(self) -> None:
        """Forget every trigger, message, counter, fault, idempotency key and synced workflow,
        and go back to the bridge configuration the emulator was started with."""
        self.epoch += 1
        self.workflows = dict(self.startup_workflows)
        self.bridge = self.startup_bridge
        self.messages.clear()
        self.bridge_last_error = None
        self.faults = FaultConfig()
        self.bucket = TokenBucket(DEFAULT_RATE_LIMIT_PER_SECOND, custom=False)
        self.triggers.clear()
        self.by_transaction.clear()
        self.idempotency.clear()
        self.counters.clear()
        self.fault_counts.clear()
        self.transaction_faults.clear()
        self.fault_log.clear()

    def set_faults(self, faults: FaultConfig) -> None:
        """Replace the fault configuration (and the token bucket when its rate changes)."""
        if faults.rate_limit_per_second != self.faults.rate_limit_per_second:
            per_second = faults.rate_limit_per_second
            self.bucket = TokenBucket(
                per_second or DEFAULT_RATE_LIMIT_PER_SECOND, custom=per_second is not None
            )
        self.faults = faults
        self.transaction_faults.clear()

    def record(self, transaction_id: str, body: dict[str, Any]) -> bool:
        """Keep an accepted trigger; False (and counted as a duplicate) if its id was seen."""
        if transaction_id in self.by_transaction:
            self.counters["duplicates"] += 1
            return False
        trigger = RecordedTrigger(
            transaction_id=transaction_id,
            body=body,
            received_at=iso_now(),
            cancellable_until=time.monotonic() + self.faults.hold_seconds,
        )
        self.triggers.append(trigger)
        self.by_transaction[transaction_id] = trigger
        self.counters["accepted"] += 1
        return True

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
        """Cancel a trigger still held (see `holdSeconds`); False if unknown, done or cancelled."""
        trigger = self.by_transaction.get(transaction_id)
        if trigger is None or trigger.cancelled or time.monotonic() >= trigger.cancellable_until:
            return False
        trigger.cancelled = True
        self.counters["cancelled"] += 1
        return True

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
            "duplicates": self.counters["duplicates"],
            "cancelled": self.counters["cancelled"],
            "requests": self.counters["requests"],
            "tokens": self.counters["tokens"],
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
                "lastError": self.bridge_last_error,
            },
        }
