"""Beat's heartbeat: beat writes the time of its latest tick to Redis (worker/beat.py), and
`/readyz`, `xnovu health beat` and the compose health check read it.

Beat is one process that schedules every periodic task (the reconciler, due releases, Novu
syncs, webhook dispatch, retention); a stopped beat delays nothing accepted but leaves leases,
scheduled notifications and retries unattended, so its silence is worth a health check.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import redis

from shared.redis_client import fail_fast_client

BEAT_KEY = "xnovu:beat:heartbeat"
# Beat writes at most this often, and at least this often while it runs.
BEAT_EVERY_SECONDS = 5.0
# A heartbeat older than this means beat is not running.
BEAT_STALE_SECONDS = 30.0
# The key outlives a stopped beat by this much, then it is gone (never ran, as far as we know).
BEAT_KEY_TTL_SECONDS = 3600


@dataclass(frozen=True, slots=True)
class BeatState:
    """What the heartbeat says: `age` in seconds, None when beat never wrote one (or it
    expired); `error` when Redis could not be asked."""

    age: float | None
    error: str | None = None

    @property
    def alive(self) -> bool:
        """Beat ticked within BEAT_STALE_SECONDS."""
        return self.age is not None and self.age <= BEAT_STALE_SECONDS

    def as_json(self) -> dict[str, object]:
        """For /readyz."""
        if self.error is not None:
            return {"status": "unknown", "error": self.error}
        if self.age is None:
            return {"status": "never"}
        return {"status": "ok" if self.alive else "stale", "lastTickSecondsAgo": round(self.age, 1)}


def write_beat(client: redis.Redis, now: float | None = None) -> None:
    """Record a tick of beat (raises what Redis raises)."""
    client.set(BEAT_KEY, repr(time.time() if now is None else now), ex=BEAT_KEY_TTL_SECONDS)


def read_beat(redis_url: str, timeout: float = 1.0) -> BeatState:
    """How long ago beat last ticked."""
    client = fail_fast_client(redis_url, timeout)
    try:
        value = client.get(BEAT_KEY)
    except (redis.RedisError, OSError) as exc:
        return BeatState(None, f"{type(exc).__name__}: {exc}"[:200])
    finally:
        client.close()
    if value is None:
        return BeatState(None)
    try:
        return BeatState(max(0.0, time.time() - float(value)))
    except ValueError:
        return BeatState(None, "the heartbeat is not a time")
