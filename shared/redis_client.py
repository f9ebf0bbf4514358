"""Redis clients for callers that must not wait for Redis (the API's rate limiter and its
publisher): short timeouts and no retries, so that an unreachable Redis costs one timeout and
the caller falls back at once (fail open, or leave the row for beat)."""

from __future__ import annotations

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry


def fail_fast_client(url: str, timeout: float) -> redis.Redis:
    """A client whose connect and every answer are bounded by `timeout` seconds, never retried."""
    return redis.Redis.from_url(
        url,
        socket_connect_timeout=timeout,
        socket_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
        health_check_interval=0,
    )
