"""Redis clients for callers that must not wait for Redis (the API's rate limiter and its
publisher): short timeouts and no retries, so that an unreachable Redis costs one timeout and
the caller falls back at once (fail open, or leave the row for beat)."""

from __future__ import annotations

import logging
import math
import threading
import time
from typing import Any

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


class OccasionalWarning:
    """Logs a warning at most once every `every` seconds: while Redis is unreachable, one line
    now and then rather than one per call."""

    def __init__(self, logger: logging.Logger, every: float) -> None:
        self._logger = logger
        self._every = every
        self._lock = threading.Lock()
        self._last = -math.inf

    def __call__(self, message: str, *args: Any) -> None:
        """Log `message % args` unless a warning was logged less than `every` seconds ago."""
        now = time.monotonic()
        with self._lock:
            if now - self._last < self._every:
                return
            self._last = now
        self._logger.warning(message, *args)
