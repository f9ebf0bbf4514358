"""Per-API-key request rate limit, shared by every API process through Redis.

The limit is GCRA (the generic cell rate algorithm, a token bucket kept as one timestamp): each
key may make RATE_LIMIT_PER_SECOND requests a second on average and RATE_LIMIT_BURST at once.
The check is one atomic Lua script that reads Redis's own clock, so any number of API
processes on any number of machines share one budget per key without trusting their clocks.

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
from redis.backoff import NoBackoff
from redis.retry import Retry

from api.errors import ApiError
from shared.settings import get_settings

log = logging.getLogger(__name__)

KEY_PREFIX = "xnovu:ratelimit:key:"

# KEYS[1]: the key's theoretical arrival time (TAT) in microseconds of Redis's clock.
# ARGV[1]: emission interval (µs per request), ARGV[2]: burst (requests).
# Returns {allowed (0/1), microseconds until the next request would be allowed}.
_GCRA_SCRIPT = """
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval
local allowed_at = new_tat - burst * interval
if now < allowed_at then
  return {0, allowed_at - now}
end
local ttl_ms = math.ceil((new_tat - now) / 1000) + 1
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', ttl_ms)
return {1, 0}
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
        # No retries: a request must not wait for Redis to come back.
        self._redis = redis.Redis.from_url(
            redis_url,
            socket_connect_timeout=socket_timeout,
            socket_timeout=socket_timeout,
            retry=Retry(NoBackoff(), 0),
            health_check_interval=0,
        )
        self._script = self._redis.register_script(_GCRA_SCRIPT)
        # After a failure, requests skip Redis for a moment instead of each paying a timeout.
        self._pause_after_failure = pause_after_failure
        self._warn_every = warn_every
        self._lock = threading.Lock()
        self._paused_until = 0.0
        self._last_warning = -math.inf

    def check(self, key_id: int | str) -> RateDecision:
        """Count one request of the key; whether it may proceed, and if not, when it may."""
        if time.monotonic() < self._paused_until:
            return ALLOWED
        try:
            allowed, wait_us = self._script(
                keys=[f"{self.key_prefix}{key_id}"], args=[self._interval_us, self.burst]
            )
        except (redis.RedisError, OSError) as exc:
            self._failed_open(exc)
            return ALLOWED
        if int(allowed):
            return ALLOWED
        return RateDecision(allowed=False, retry_after_seconds=int(wait_us) / 1_000_000)

    def _failed_open(self, exc: Exception) -> None:
        now = time.monotonic()
        with self._lock:
            self._paused_until = now + self._pause_after_failure
            warn = now - self._last_warning >= self._warn_every
            if warn:
                self._last_warning = now
        if warn:
            log.warning("rate limiter: Redis unavailable, accepting requests unlimited: %s", exc)

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


def get_rate_limiter() -> RateLimiter | None:
    """The process's limiter, or None when RATE_LIMIT_PER_SECOND is 0 (a dependency, so a test
    can override it)."""
    return _limiter_from_settings()


RateLimiterDep = Annotated[RateLimiter | None, Depends(get_rate_limiter)]


def enforce_rate_limit(limiter: RateLimiter | None, key_id: int) -> None:
    """Raise 429 with Retry-After (whole seconds) when the key is over its rate."""
    if limiter is None:
        return
    decision = limiter.check(key_id)
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
