"""Per-API-key request rate limit, shared by every API process through Redis.

The limit is GCRA (the generic cell rate algorithm, a token bucket kept as one timestamp): each
key may make RATE_LIMIT_PER_SECOND requests a second on average and RATE_LIMIT_BURST at once.
The check is one atomic Lua script that reads Redis's own clock, so any number of API
processes on any number of machines share one budget per key without trusting their clocks.

Asking Redis on every request would cost every request a round trip, so a process takes
tokens in small leases (one call grants up to `lease` requests, a twentieth of the burst, at
most 100) and spends them locally. With a burst under 40 the lease is one request: every
request is counted in Redis, exactly. Otherwise a key may get up to one lease per API process
above its burst, never above its rate for long.

Redis is a convenience here, not a dependency: when it cannot be reached the limiter fails
open (the request is accepted and a warning is logged at most every few seconds), because
triggers must keep being accepted while Redis is down.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Annotated, Any

import redis
from fastapi import Depends
from starlette.concurrency import run_in_threadpool

from api.errors import ApiError
from shared.redis_client import OccasionalWarning, fail_fast_client
from shared.settings import get_settings

log = logging.getLogger(__name__)

KEY_PREFIX = "xnovu:ratelimit:key:"

# A lease is a twentieth of the burst, at most MAX_LEASE requests.
LEASE_DIVISOR = 20
MAX_LEASE = 100
# Keys whose unspent tokens a process remembers.
MAX_LEASED_KEYS = 10_000

# KEYS[1]: the key's theoretical arrival time (TAT) in microseconds of Redis's clock.
# ARGV[1]: emission interval (µs per request), ARGV[2]: burst (requests), ARGV[3]: how many
# requests the caller would like to make.
# Returns {requests granted (0 to ARGV[3]), microseconds until one would be granted if 0}.
_GCRA_SCRIPT = """
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local wanted = tonumber(ARGV[3])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local available = math.floor((now + burst * interval - tat) / interval)
if available < 1 then
  return {0, tat + interval - burst * interval - now}
end
local granted = math.min(wanted, available)
local new_tat = tat + granted * interval
local ttl_ms = math.ceil((new_tat - now) / 1000) + 1
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', ttl_ms)
return {granted, 0}
"""


@dataclass(frozen=True, slots=True)
class RateDecision:
    allowed: bool
    retry_after_seconds: float = 0.0


ALLOWED = RateDecision(allowed=True)


class RateLimiter:
    """GCRA per API key in Redis; fails open when Redis cannot be reached."""

    def __init__(
        self,
        redis_url: str,
        *,
        per_second: float,
        burst: int,
        key_prefix: str = KEY_PREFIX,
        socket_timeout: float = 0.5,
        pause_after_failure: float = 1.0,
        warn_every: float = 10.0,
    ) -> None:
        if per_second <= 0 or burst < 1:
            raise ValueError("a rate limiter needs per_second > 0 and burst >= 1")
        self.per_second = per_second
        self.burst = burst
        self.key_prefix = key_prefix
        self._interval_us = max(1, round(1_000_000 / per_second))
        self.lease = max(1, min(MAX_LEASE, burst // LEASE_DIVISOR))
        self._leased: dict[int | str, int] = {}
        # No retries: a request must not wait for Redis to come back.
        self._redis = fail_fast_client(redis_url, socket_timeout)
        self._script = self._redis.register_script(_GCRA_SCRIPT)
        # After a failure, requests skip Redis for a moment instead of each paying a timeout.
        self._pause_after_failure = pause_after_failure
        self._warning = OccasionalWarning(log, warn_every)
        self._lock = threading.Lock()
        self._paused_until = 0.0

    def check(self, key_id: int | str) -> RateDecision:
        """Count one request of the key; whether it may proceed, and if not, when it may."""
        decision = self.check_local(key_id)
        return decision if decision is not None else self.check_remote(key_id)

    def check_local(self, key_id: int | str) -> RateDecision | None:
        """The decision if it needs no Redis call (a token left from a lease, or Redis paused
        after a failure); None when check_remote must ask Redis."""
        if time.monotonic() < self._paused_until:
            return ALLOWED
        with self._lock:
            left = self._leased.get(key_id, 0)
            if left > 0:
                self._leased[key_id] = left - 1
                return ALLOWED
        return None

    def check_remote(self, key_id: int | str) -> RateDecision:
        """Ask Redis for a lease of tokens for the key and spend one of them."""
        try:
            granted, wait_us = self._script(
                keys=[f"{self.key_prefix}{key_id}"],
                args=[self._interval_us, self.burst, self.lease],
            )
        except (redis.RedisError, OSError) as exc:
            self._failed_open(exc)
            return ALLOWED
        granted = int(granted)
        if granted < 1:
            return RateDecision(allowed=False, retry_after_seconds=int(wait_us) / 1_000_000)
        if granted > 1:
            with self._lock:
                if len(self._leased) >= MAX_LEASED_KEYS:
                    self._leased.clear()  # unused tokens are forgotten: stricter, never looser
                self._leased[key_id] = self._leased.get(key_id, 0) + granted - 1
        return ALLOWED

    def _failed_open(self, exc: Exception) -> None:
        with self._lock:
            self._paused_until = time.monotonic() + self._pause_after_failure
        self._warning("rate limiter: Redis unavailable, accepting requests unlimited: %s", exc)

    def close(self) -> None:
        """Release the Redis connections."""
        self._redis.close()


@lru_cache(maxsize=1)
def _limiter_from_settings() -> RateLimiter | None:
    settings = get_settings()
    if settings.rate_limit_per_second <= 0:
        return None
    url = settings.rate_limit_redis_url or settings.redis_url
    if not url:
        log.warning("rate limiter: no RATE_LIMIT_REDIS_URL or REDIS_URL, requests are unlimited")
        return None
    return RateLimiter(
        url, per_second=settings.rate_limit_per_second, burst=settings.rate_limit_burst
    )


async def get_rate_limiter() -> RateLimiter | None:
    """The process's limiter, or None when RATE_LIMIT_PER_SECOND is 0 (a dependency, so a test
    can override it; async, so FastAPI does not send it to a worker thread)."""
    return _limiter_from_settings()


RateLimiterDep = Annotated[RateLimiter | None, Depends(get_rate_limiter)]


async def enforce_rate_limit(limiter: RateLimiter | None, key_id: int) -> None:
    """Raise 429 with Retry-After (whole seconds) when the key is over its rate. Redis is asked
    from a worker thread, and only when the process's lease for the key is spent."""
    if limiter is None:
        return
    decision = limiter.check_local(key_id)
    if decision is None:
        decision = await run_in_threadpool(limiter.check_remote, key_id)
    if decision.allowed:
        return
    retry_after = max(1, math.ceil(decision.retry_after_seconds))
    details: dict[str, Any] = {
        "retryAfterSeconds": retry_after,
        "limitPerSecond": limiter.per_second,
        "burst": limiter.burst,
    }
    raise ApiError(
        429,
        "rate_limited",
        f"too many requests for this API key: retry after {retry_after} s",
        details,
        headers={"Retry-After": str(retry_after)},
    )
