"""Redis clients for callers that must not wait for Redis (the API's rate limiter and its
publisher): short timeouts and no retries, so that an unreachable Redis costs one timeout and
the caller falls back at once (fail open, or leave the row for beat)."""

from __future__ import annotations

import logging
import math
import threading
import time
from typing import Any
from urllib.parse import unquote, urlsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel

SENTINEL_SCHEME = "sentinel://"
SENTINEL_DEFAULT_PORT = 26379


def is_sentinel(url: str) -> bool:
    """Whether `url` names Redis through its Sentinels (Celery's `sentinel://` form)."""
    return url.startswith(SENTINEL_SCHEME)


def parse_sentinel_url(url: str) -> tuple[list[tuple[str, int]], int, str | None]:
    """The Sentinels (host, port), database and master password of a URL in Celery's form,
    `sentinel://[:password@]host[:port][/db][;sentinel://host2[:port2]...]`; ValueError when
    it names no Sentinel."""
    hosts: list[tuple[str, int]] = []
    db, password = 0, None
    for part in filter(None, (piece.strip() for piece in url.split(";"))):
        if not is_sentinel(part):
            raise ValueError(f"not a sentinel:// URL: {part!r}")
        split = urlsplit(part)
        if not split.hostname:
            raise ValueError(f"a sentinel:// URL without a host: {part!r}")
        hosts.append((split.hostname, split.port or SENTINEL_DEFAULT_PORT))
        if split.password and password is None:
            password = unquote(split.password)
        path = split.path.strip("/")
        if path and not db:
            if not path.isdigit():
                raise ValueError(f"the database of a sentinel:// URL is a number: {part!r}")
            db = int(path)
    if not hosts:
        raise ValueError("the sentinel:// URL names no Sentinel")
    return hosts, db, password


def redis_from_url(url: str, *, sentinel_master: str | None = None, **options: Any) -> redis.Redis:
    """A client of the Redis `url` names, with redis-py's connection `options`: `redis://`
    and `rediss://` as redis-py reads them; `sentinel://` (Celery's form) as the master
    `sentinel_master` (default REDIS_SENTINEL_MASTER) names, asked of the Sentinels at each
    new connection, so that after a failover every client reaches the new master
    (docs/scaling.md)."""
    if not is_sentinel(url):
        return redis.Redis.from_url(url, **options)
    if sentinel_master is None:
        from shared.settings import get_settings  # settings import nothing of this module's

        sentinel_master = get_settings().require_sentinel_master()
    hosts, db, password = parse_sentinel_url(url)
    # The Sentinels get the same timeouts: an unreachable one costs no more than Redis would.
    timeouts = {k: v for k, v in options.items() if k.startswith("socket_")}
    sentinel = Sentinel(hosts, sentinel_kwargs=timeouts)  # type: ignore[no-untyped-call]
    client: redis.Redis = sentinel.master_for(  # type: ignore[no-untyped-call]
        sentinel_master, db=db, password=password, **options
    )
    return client


def fail_fast_client(url: str, timeout: float) -> redis.Redis:
    """A client whose connect and every answer are bounded by `timeout` seconds, never retried."""
    return redis_from_url(
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
