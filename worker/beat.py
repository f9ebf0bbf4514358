"""Beat's scheduler: Celery's own persistent scheduler, run only by the active beat (a lease in
Redis, shared/beat_lock.py: a second beat stands by and takes over when the first dies), which
writes the time of its tick to Redis every BEAT_EVERY_SECONDS (shared/heartbeat.py).
Configured as the app's `beat_scheduler` (worker/celery_app.py), so every way beat is started
uses it."""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import redis
from celery.beat import PersistentScheduler

from shared.beat_lock import STANDBY_RETRY_SECONDS, BeatLock
from shared.heartbeat import BEAT_EVERY_SECONDS, write_beat
from shared.redis_client import OccasionalWarning, fail_fast_client
from shared.settings import get_settings

log = logging.getLogger(__name__)


class StopBetweenTicks:
    """Celery's beat stops on SIGTERM and SIGINT with a handler that saves the schedule and
    raises SystemExit wherever the main thread is. Inside a tick that is in the middle of a
    publish: redis-py turns the SystemExit into a failed LPUSH, beat's tick logs a
    SchedulingError and goes on with the schedule already closed, and beat dies of "invalid
    operation on closed shelf" with status 1 (seen in tests/worker/test_beat_lock.py). This
    wraps those handlers: a signal that arrives during `ticking()` runs the handler when the
    tick ends; between ticks (beat sleeps there) it runs at once, as before."""

    def __init__(self, signals: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGINT)):
        self._ticking = False
        self._pending: tuple[Callable[..., Any], int, Any] | None = None
        if threading.current_thread() is not threading.main_thread():
            return  # handlers belong to the main thread (beat embedded in a thread has none)
        for signum in signals:
            previous = signal.getsignal(signum)
            if callable(previous):
                signal.signal(signum, self._wrap(previous))

    def _wrap(self, previous: Callable[..., Any]) -> Callable[[int, Any], None]:
        def handler(signum: int, frame: Any) -> None:
            if self._ticking:
                self._pending = (previous, signum, frame)
            else:
                previous(signum, frame)

        return handler

    @contextmanager
    def ticking(self) -> Iterator[None]:
        """The block runs to its end; a stop signal that came meanwhile is handled after it."""
        self._ticking = True
        try:
            yield
        finally:
            self._ticking = False
            pending, self._pending = self._pending, None
            if pending is not None:
                handler, signum, frame = pending
                handler(signum, frame)


class HeartbeatScheduler(PersistentScheduler):  # type: ignore[misc]  # Celery is untyped
    """PersistentScheduler that sends tasks only while it holds the beat lock, and says, now
    and then, that it is ticking. A stop signal waits for the tick under way (StopBetweenTicks);
    Celery installs its handlers before it makes the scheduler."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._stop = StopBetweenTicks()
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
        with self._stop.ticking():
            return self._tick(*args, **kwargs)

    def _tick(self, *args: Any, **kwargs: Any) -> float:
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
