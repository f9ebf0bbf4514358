"""Beat's scheduler: Celery's own persistent scheduler, run only by the active beat (a lease in
Redis, shared/beat_lock.py: a second beat stands by and takes over when the first dies), which
writes the time of its tick to Redis every BEAT_EVERY_SECONDS (shared/heartbeat.py).
Configured as the app's `beat_scheduler` (worker/celery_app.py), so every way beat is started
uses it."""

from __future__ import annotations

import logging
import time
from typing import Any

import redis
from celery.beat import PersistentScheduler

from shared.beat_lock import STANDBY_RETRY_SECONDS, BeatLock
from shared.heartbeat import BEAT_EVERY_SECONDS, write_beat
from shared.redis_client import OccasionalWarning, fail_fast_client
from shared.settings import get_settings

log = logging.getLogger(__name__)


class HeartbeatScheduler(PersistentScheduler):  # type: ignore[misc]  # Celery is untyped
    """PersistentScheduler that sends tasks only while it holds the beat lock, and says, now
    and then, that it is ticking."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._beat_at = 0.0
        self._redis: redis.Redis | None = None
        self._warning = OccasionalWarning(log, 60.0)
        self._lock = BeatLock(self._client, get_settings().beat_lock_ttl_seconds)
        self._standing_by = False

    def _client(self) -> redis.Redis:
        if self._redis is None:
            self._redis = fail_fast_client(get_settings().require_redis_url(), 1.0)
        return self._redis

    def tick(self, *args: Any, **kwargs: Any) -> float:
        """One tick of Celery's scheduler when this beat is the active one, then the heartbeat
        when it is due; sleeps no longer than until the next heartbeat or lease renewal. A
        standby only asks for the lease again, every STANDBY_RETRY_SECONDS."""
        if not self._lock.hold():
            if not self._standing_by:
                self._standing_by = True
                log.info("another beat holds the lock: standing by")
            return STANDBY_RETRY_SECONDS
        self._standing_by = False
        interval = float(super().tick(*args, **kwargs))
        now = time.time()
        if now - self._beat_at >= BEAT_EVERY_SECONDS:
            self._beat_at = now
            try:
                write_beat(self._client(), now)
            except (redis.RedisError, OSError) as exc:
                self._warning("beat could not write its heartbeat: %s", exc)
        return min(interval, BEAT_EVERY_SECONDS, self._lock.ttl / 3)

    def close(self) -> None:
        """Save the schedule and give the lease up, so that a standby takes over at once."""
        super().close()
        self._lock.release()
