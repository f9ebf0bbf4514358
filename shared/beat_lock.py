"""One active beat: a lease in Redis that the active beat holds and renews, while any other
beat stands by and takes it when it runs out (docs/architecture.md, "One active beat").

In Redis rather than a PostgreSQL advisory lock: beat does nothing but publish to Redis, so a
beat that cannot reach Redis has nothing to do anyway; and a lease with a TTL bounds the
takeover however the holder died (killed, its host gone, a partition), where a session lock
is freed only when PostgreSQL notices the connection is dead. Two beats active for a moment (a
Redis failover that lost the key) is harmless: every task beat sends is safe to run twice.

The lock is redis-py's (SET NX PX, and a token-checked Lua renewal); its value names the
active beat (`host:pid:random`: `redis-cli GET xnovu:beat:lock`).
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections.abc import Callable

import redis
from redis.exceptions import LockError

from shared.redis_client import OccasionalWarning

log = logging.getLogger(__name__)

BEAT_LOCK_KEY = "xnovu:beat:lock"
# A standby asks for the lease this often (one SET NX: nothing for Redis).
STANDBY_RETRY_SECONDS = 1.0


def holder_token() -> str:
    """This process's name in the lock: host, pid, and a random part (pids are reused)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class BeatLock:
    """The lease of the active beat. `hold()` answers whether this beat is the active one now,
    taking a free lease and renewing its own when a third of it has passed."""

    def __init__(
        self,
        client: Callable[[], redis.Redis],
        ttl: float,
        *,
        key: str = BEAT_LOCK_KEY,
        token: str | None = None,
    ) -> None:
        self._client = client
        self._lock: redis.lock.Lock | None = None
        self.ttl = ttl
        self.key = key
        self.token = token or holder_token()
        # Until when (monotonic) the lease we hold is ours for sure: its last renewal + ttl.
        self._until: float | None = None
        self._renewed = 0.0
        self._warning = OccasionalWarning(log, 60.0)

    @property
    def held(self) -> bool:
        """This beat believes it holds the lease (as of its last hold())."""
        return self._until is not None

    def _redis_lock(self) -> redis.lock.Lock:
        if self._lock is None:
            self._lock = self._client().lock(
                self.key, timeout=self.ttl, blocking=False, thread_local=False
            )
        return self._lock

    def hold(self) -> bool:
        """True when this beat is the active one: it holds the lease, renewed when due, or has
        just taken a free one."""
        now = time.monotonic()
        try:
            if self._until is None:
                return self._take(now)
            if now - self._renewed >= self.ttl / 3:
                self._redis_lock().reacquire()
                self._renewed, self._until = now, now + self.ttl
        except LockError:
            # Another beat holds it: ours ran out while we could not renew it.
            log.warning("beat lost its lock to another beat: standing by")
            self._until = None
        except (redis.RedisError, OSError) as exc:
            self._warning("beat cannot reach Redis for its lock: %s", exc)
            if self._until is not None and now >= self._until:
                # Past the lease's end another beat may have taken it: act no longer.
                log.warning("beat could not renew its lock in time: standing by")
                self._until = None
        return self._until is not None

    def _take(self, now: float) -> bool:
        if not self._redis_lock().acquire(token=self.token):
            return False
        self._renewed, self._until = now, now + self.ttl
        log.info("beat holds the lock %s as %s: this beat is the active one", self.key, self.token)
        return True

    def release(self) -> None:
        """Give the lease up (a beat that stops), so that a standby takes over at its next
        try rather than when the lease runs out; nothing when it is not held."""
        if self._until is None or self._lock is None:
            return
        self._until = None
        try:
            self._lock.release()
        except (LockError, redis.RedisError, OSError) as exc:
            log.warning("beat could not release its lock (it runs out by itself): %s", exc)


def lock_holder(client: redis.Redis, key: str = BEAT_LOCK_KEY) -> str | None:
    """The token of the beat that holds the lease, None when no beat does (raises what Redis
    raises)."""
    value = client.get(key)
    return value.decode() if isinstance(value, bytes) else value
