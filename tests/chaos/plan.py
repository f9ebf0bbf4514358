"""What a chaos run does: the faults Novu injects, the schedule of process failures, and the
short timings the stack runs with."""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class NovuFaults:
    """Faults the emulator injects into the worker's trigger calls for the whole run."""

    status_500: float = 0.10
    status_429: float = 0.05
    retry_after_seconds: int = 1
    drop: float = 0.02
    # Novu recorded the trigger but the answer never arrived: the attempt is retried with the
    # same transactionId, which Novu drops. Exercises "never sent twice" directly.
    drop_after_accept: float = 0.01
    # Decided once per transactionId, so every attempt of that notification gets the 400, as
    # a trigger Novu rejects for what it is would: its notification must end FAILED.
    permanent_400: float = 0.01
    spike_rate: float = 0.10
    spike_ms: int = 200

    def emulator_config(self) -> dict[str, Any]:
        """The body of `POST /_emulator/faults`."""
        return {
            "rules": [
                {"status": 500, "rate": self.status_500},
                {"status": 429, "rate": self.status_429, "retryAfter": self.retry_after_seconds},
                {"status": 400, "rate": self.permanent_400, "scope": "transaction"},
            ],
            "dropRate": self.drop,
            "dropAfterAcceptRate": self.drop_after_accept,
            "latencySpikeRate": self.spike_rate,
            "latencySpikeMs": self.spike_ms,
        }

    def planned_kinds(self) -> list[str]:
        """The `stats.faults` counters that must be above zero after the run."""
        planned = {
            "status:500": self.status_500,
            "status:429": self.status_429,
            "status:400": self.permanent_400,
            "drop": self.drop,
            "dropAfterAccept": self.drop_after_accept,
            "latencySpike": self.spike_rate if self.spike_ms else 0.0,
        }
        return [kind for kind, rate in planned.items() if rate > 0]


# The plan: 10 % 500, 5 % 429 with Retry-After, 2 % dropped connections, 1 % permanent
# 400 and 200 ms latency spikes (on 10 % of calls), plus 1 % dropped after Novu accepted.
LONG_FAULTS = NovuFaults()
# 300 notifications are too few for a 1 % fault to fire with certainty (0.99**300 = 5 %), and a
# run where a planned fault did not fire fails: the rare faults are raised to 3 %.
SHORT_FAULTS = dataclasses.replace(
    LONG_FAULTS, drop=0.03, drop_after_accept=0.03, permanent_400=0.03
)


class Action(enum.StrEnum):
    KILL_WORKER = "SIGKILL worker (process group), restart it"
    RESTART_REDIS = "SIGKILL Redis, restart it (AOF)"
    TERMINATE_PG = "terminate the worker's PostgreSQL connections"


@dataclass(frozen=True)
class ScheduledFault:
    """An action at a fraction of the trigger window."""

    at_fraction: float
    action: Action


SCHEDULE: tuple[ScheduledFault, ...] = (
    ScheduledFault(0.20, Action.KILL_WORKER),
    ScheduledFault(0.40, Action.RESTART_REDIS),
    ScheduledFault(0.60, Action.TERMINATE_PG),
    ScheduledFault(0.80, Action.KILL_WORKER),
)
WORKER_DOWN_SECONDS = 1.0
REDIS_DOWN_SECONDS = 2.0

# Short timings so leases, redelivery and retries act within seconds. 25 attempts make
# exhausting them by retryable faults impossible in practice (about 0.2**25 per notification),
# so a FAILED row must come from a permanent fault.
TIMINGS: dict[str, str] = {
    "RECONCILE_INTERVAL_SECONDS": "0.5",
    "REDELIVER_AFTER_SECONDS": "5",
    "PROCESSING_LEASE_SECONDS": "6",
    "RETRY_BASE_SECONDS": "0.2",
    "RETRY_MAX_SECONDS": "2",
    "DELIVERY_MAX_ATTEMPTS": "25",
    "NOVU_TIMEOUT_SECONDS": "3",
    "NOVU_CONNECT_TIMEOUT_SECONDS": "2",
    "RATE_LIMIT_PER_SECOND": "100000",
    "RATE_LIMIT_BURST": "100000",
    "LOG_LEVEL": "INFO",
}


def reconciler_window() -> float:
    """Long enough for the reconciler to act on anything left: an expired lease, then a
    redelivery, then two more ticks."""
    return (
        float(TIMINGS["PROCESSING_LEASE_SECONDS"])
        + float(TIMINGS["REDELIVER_AFTER_SECONDS"])
        + 2 * float(TIMINGS["RECONCILE_INTERVAL_SECONDS"])
    )
