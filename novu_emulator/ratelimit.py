"""Novu's API rate limiting: a variable-cost token bucket per category, always enforced.

As Novu's API computes it (its evaluate-api-rate-limit use case and token bucket script):

- A category's tier is `rps` tokens a second. The bucket holds at most `burst =
  floor(rps * 5 * 1.1)` tokens (a 5 s window's worth, plus 10 %) and refills one token every
  `1000 / rps` ms, but only when a request finds too few tokens: a request that can pay takes
  its cost and the refill clock stays put. A bucket untouched by a refill for 10 s (two windows)
  expires, and the next request finds a full one.
- A trigger or a cancel costs 1 token, a bulk trigger 100 (the trigger category, "Events");
  a sync 1 (the global category, half the Events rate in every Novu tier).
- Every answer past authentication carries `RateLimit-Remaining`, `RateLimit-Limit` (`rps *
  5`), `RateLimit-Reset` (seconds until a request of the same cost can pass) and
  `RateLimit-Policy` (`<limit>;w=5;burst=<burst>;comment="token bucket";category=...;cost=
  "single"|"bulk";serviceLevel=...`). A refused request is 429 with `Retry-After` = the reset
  seconds, and for that cost Novu refuses at once, without looking at the bucket, until then.
"""

from __future__ import annotations

import enum
import math
import time
from dataclasses import dataclass, field

WINDOW_SECONDS = 5
BURST_ALLOWANCE = 0.1
BULK_COST = 100
# Novu's Free tier: 60 Events tokens a second.
DEFAULT_EVENTS_RPS = 60
# Novu's tier names by Events rate; any other rate is reported as "custom".
_SERVICE_LEVELS = {60: "free", 600: "business", 6000: "enterprise"}


class Category(enum.StrEnum):
    TRIGGER = "trigger"
    GLOBAL = "global"


@dataclass(frozen=True, slots=True)
class RateLimitVerdict:
    """One token bucket evaluation, and the `RateLimit-*` headers that report it."""

    allowed: bool
    headers: tuple[tuple[str, str], ...]
    reset_seconds: int


class TokenBucket:
    """One category's bucket, evaluated as Novu's token bucket script does (times in ms)."""

    def __init__(self, per_second: int, category: Category, service_level: str) -> None:
        self.per_second = per_second
        self.category = category
        self.service_level = service_level
        self.limit = per_second * WINDOW_SECONDS
        self.burst = math.floor(self.limit * (1 + BURST_ALLOWANCE))
        self._fill_interval_ms = WINDOW_SECONDS * 1000 / self.limit
        self._tokens = 0.0
        self._last_refill_ms = 0.0
        self._expires_ms = -math.inf  # no bucket yet
        # Novu's per-process cache of refusals: cost -> when it may pass again.
        self._blocked_until_ms: dict[int, float] = {}

    def take(self, cost: int, now_ms: float | None = None) -> RateLimitVerdict:
        """Spend `cost` tokens if the bucket has them; the verdict either way."""
        now = time.monotonic() * 1000 if now_ms is None else now_ms
        blocked_until = self._blocked_until_ms.get(cost)
        if blocked_until is not None and blocked_until > now:
            return self._verdict(False, 0, blocked_until, now, cost)
        remaining, reset = self._evaluate(cost, now)
        allowed = remaining >= 0
        if not allowed:
            self._blocked_until_ms[cost] = reset
        return self._verdict(allowed, max(remaining, 0), reset, now, cost)

    def _evaluate(self, cost: int, now: float) -> tuple[float, float]:
        """(remaining, reset time): negative remaining means refused."""
        if now >= self._expires_ms:
            self._last_refill_ms = now
            remaining: float = self.burst - cost
            self._tokens = remaining
            self._expires_ms = now + 2 * WINDOW_SECONDS * 1000
        elif self._tokens >= cost:
            remaining = self._tokens - cost  # refills wait until the bucket cannot pay
            self._tokens = remaining
        else:
            added = math.floor((now - self._last_refill_ms) / self._fill_interval_ms)
            remaining = min(self.burst, self._tokens + added) - cost
            if remaining < 0:
                reset_cost = cost - self._tokens
                return remaining, self._last_refill_ms + reset_cost * self._fill_interval_ms
            self._last_refill_ms += added * self._fill_interval_ms
            self._tokens = remaining
            self._expires_ms = now + 2 * WINDOW_SECONDS * 1000
        reset_cost = cost - remaining if remaining < cost else cost
        return remaining, self._last_refill_ms + reset_cost * self._fill_interval_ms

    def _verdict(
        self, allowed: bool, remaining: float, reset_ms: float, now_ms: float, cost: int
    ) -> RateLimitVerdict:
        reset_seconds = max(math.ceil((reset_ms - now_ms) / 1000), 0)
        cost_name = "bulk" if cost == BULK_COST else "single"
        policy = (
            f"{self.limit};w={WINDOW_SECONDS};burst={self.burst};"
            f'comment="token bucket";category="{self.category}";cost="{cost_name}";'
            f'serviceLevel="{self.service_level}"'
        )
        headers = (
            ("RateLimit-Remaining", str(int(remaining))),
            ("RateLimit-Limit", str(self.limit)),
            ("RateLimit-Reset", str(reset_seconds)),
            ("RateLimit-Policy", policy),
        )
        return RateLimitVerdict(allowed=allowed, headers=headers, reset_seconds=reset_seconds)


@dataclass(slots=True)
class RateLimits:
    """The buckets of one Novu environment for an Events tier of `events_rps`."""

    events_rps: int = DEFAULT_EVENTS_RPS
    buckets: dict[Category, TokenBucket] = field(default_factory=dict)

    def __post_init__(self) -> None:
        level = _SERVICE_LEVELS.get(self.events_rps, "custom")
        self.buckets = {
            Category.TRIGGER: TokenBucket(self.events_rps, Category.TRIGGER, level),
            Category.GLOBAL: TokenBucket(max(self.events_rps // 2, 1), Category.GLOBAL, level),
        }

    def take(self, category: Category, cost: int) -> RateLimitVerdict:
        """Evaluate one request of `cost` tokens in `category`."""
        return self.buckets[category].take(cost)
