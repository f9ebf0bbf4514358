"""Backoff for retrying Novu calls; the worker owns retries, the client never sleeps."""

from __future__ import annotations

import random
from typing import Protocol

# A call that may have run at Novu (no answer, a 5xx) is not sent again sooner than this after
# it failed: Novu's transactionId check is a lookup, not an atomic constraint, so two sends
# of one transactionId close together can both run (docs/architecture.md, guarantee 4).
AMBIGUOUS_RETRY_SECONDS = 1.0
# Jitter added to Novu's Retry-After of a 429, as a fraction of it: the calls it refused
# together do not all come back in the same instant.
THROTTLE_JITTER = 0.25
# 2**64 times any sane base is far past any cap; stop the exponent there to avoid overflow.
_MAX_EXPONENT = 64


class UniformSource(Protocol):
    """Anything with `uniform(a, b)`: the `random` module or a seeded `random.Random`."""

    def uniform(self, a: float, b: float) -> float: ...


def backoff_delay(
    attempt: int,
    *,
    base: float,
    cap: float,
    retry_after: float | None = None,
    rng: UniformSource = random,
) -> float:
    """Seconds to wait before retry number `attempt` (1 = the first retry).

    Exponential backoff with full jitter: uniform in [0, min(cap, base * 2**(attempt-1))].
    Novu's `Retry-After`, when given, is a floor that wins over the cap: Novu said
    not to come back sooner, and the worker keeps long waits in the database.
    """
    if attempt < 1:
        raise ValueError(f"attempt must be >= 1, got {attempt}")
    if base <= 0 or cap <= 0:
        raise ValueError(f"base and cap must be > 0, got base={base}, cap={cap}")
    exponent = min(attempt - 1, _MAX_EXPONENT)
    ceiling = min(cap, base * 2.0**exponent)
    delay = min(max(rng.uniform(0.0, ceiling), 0.0), ceiling)
    if retry_after is not None and retry_after > delay:
        return retry_after
    return delay


def throttled_delay(retry_after: float | None, *, rng: UniformSource = random) -> float:
    """Seconds before a call Novu refused with 429 goes again: its Retry-After (1 s when it
    sent none) and up to THROTTLE_JITTER of it more."""
    wait = retry_after if retry_after is not None and retry_after > 0 else 1.0
    return wait + rng.uniform(0.0, wait * THROTTLE_JITTER)
