"""Beat's scheduler, with a heartbeat (shared/heartbeat.py): Celery's own persistent scheduler,
which writes the time of its tick to Redis every BEAT_EVERY_SECONDS. Configured as the app's
`beat_scheduler` (worker/celery_app.py), so every way beat is started uses it."""

from __future__ import annotations

import logging
import time
from typing import Any

import redis
from celery.beat import PersistentScheduler

from shared.heartbeat import BEAT_EVERY_SECONDS, write_beat
from shared.redis_client import OccasionalWarning, fail_fast_client
from shared.settings import get_settings

log = logging.getLogger(__name__)


class HeartbeatScheduler(PersistentScheduler):  # type: ignore[misc]  # Celery is untyped
    """PersistentScheduler that also says, now and then, that it is ticking."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._beat_at = 0.0
        self._redis: redis.Redis | None = None
        self._warning = OccasionalWarning(log, 60.0)

    def tick(self, *args: Any, **kwargs: Any) -> float:
        """One tick of Celery's scheduler, then the heartbeat when it is due; sleeps no longer
        than until the next heartbeat."""
        interval = float(super().tick(*args, **kwargs))
        now = time.time()
        if now - self._beat_at >= BEAT_EVERY_SECONDS:
            self._beat_at = now
            try:
                if self._redis is None:
                    self._redis = fail_fast_client(get_settings().require_redis_url(), 1.0)
                write_beat(self._redis, now)
            except (redis.RedisError, OSError) as exc:
                self._warning("beat could not write its heartbeat: %s", exc)
        return min(interval, BEAT_EVERY_SECONDS)
