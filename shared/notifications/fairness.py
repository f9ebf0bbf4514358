"""Fair rendering between enterprises: one enterprise's slow templates hold at most one worker
child at a time, and only for a bounded time per task (docs/architecture.md, "Rendering").

Renders take milliseconds; a template that loops until its TEMPLATE_RENDER_TIMEOUT_SECONDS
takes seconds, and ten of them once held both children of a worker for 9 s, while another
enterprise's notifications waited. So, per enterprise, in Redis:

- A render that runs past SLOW_RENDER_SECONDS of CPU time (counted over one row's channels:
  RowWatch) marks its enterprise slow for SLOW_MARK_SECONDS, and may go on only while its task holds
  the enterprise's render lane (one holder in all workers), one of RENDER_SLOW_LANES lanes that all
  enterprises share (so that several slow enterprises together still hold at most that many
  children). If another task holds the enterprise's lane, or every lane is taken, the render stops
  at once (`RenderDeferred`) and its row goes back to PENDING, its attempt not used, to come back
  when a lane is likely free.
- A task of an enterprise marked slow takes the lane before it claims anything; when it
  cannot, the rows are deferred unclaimed (a few milliseconds of the child's time).
- A task holding the lane renders for at most TEMPLATE_RENDER_TIMEOUT_SECONDS in all (plus the
  render under way); then it gives the rest of its rows back, unclaimed or with their attempt
  not used, and releases the lane, so the child is free for whatever message is next.

- A lane's renders run on a thread of the lowest CPU priority (nice LANE_NICE, one such thread
  in each worker process), so that they get the CPU the others leave: a render that turns slow
  on the task's own thread stops (`RenderMoved`) and starts again there, and a task that took
  the lane before claiming renders there from the start. On that thread a render's timeout
  counts CPU time (shared/templates/limits.py, "Low priority"). Before, the lane's render held
  one of two cores at full priority for its whole timeout, and another enterprise's
  trigger->SENT p99 doubled.

An enterprise whose templates are fast never touches a lane (one `EXISTS` of its mark per
sub-batch); one whose renders are slow delivers through one child at a time until its renders
have been fast for SLOW_MARK_SECONDS. Enterprises whose renders are fast keep every child but
RENDER_SLOW_LANES (1 by default) of all the workers. When Redis cannot answer, rendering is not
held back (fail open, logged now and then): fairness is lost, never a notification.
"""

from __future__ import annotations

import contextvars
import logging
import math
import os
import random
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

import redis

from shared.process import PerProcess
from shared.redis_client import OccasionalWarning, fail_fast_client
from shared.settings import get_settings
from shared.templates.errors import RenderDeferred, RenderMoved
from shared.templates.limits import (
    LOW_PRIORITY_WALL_FACTOR,
    renders_timed_by_cpu,
    time_renders_by_cpu,
)

T = TypeVar("T")

log = logging.getLogger(__name__)

# A row's renders slower than this make its enterprise slow (a normal one takes milliseconds).
SLOW_RENDER_SECONDS = 0.2
# How long an enterprise stays slow after its last slow render.
SLOW_MARK_SECONDS = 30.0
# Rows waiting for the lane come back after the holder's remaining time, within these bounds,
# and a random 0 to 50 % more, so that they do not all come back at once.
MIN_WAIT_SECONDS = 0.25
MAX_WAIT_SECONDS = 2.0
# The lane outlives its holder's task by this much at most (a killed child's lane expires).
LANE_MARGIN_SECONDS = 5.0

# The niceness of the thread lane renders run on: the lowest priority there is.
LANE_NICE = 19

# Keys below the prefix: `slow:<enterprise>`, `lane:<enterprise>` and `lanes`, every lane's
# holder scored by when its lease ends (ms).
KEY_PREFIX = "xnovu:render:"
# Take the enterprise's lane (or keep it: a holder extends its lease) if one of the ARGV[3]
# lanes is free; else answer the ms until the enterprise's holder, or the first lane, is done.
_TAKE = """
local clock = redis.call('TIME')
local now = clock[1] * 1000 + math.floor(clock[2] / 1000)
local lease = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local held = redis.call('GET', KEYS[1])
if held and held ~= ARGV[1] then
  return redis.call('PTTL', KEYS[1])
end
if not held and redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[3]) then
  local first = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
  return math.max(0, tonumber(first[2]) - now)
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', lease)
redis.call('ZADD', KEYS[2], now + lease, ARGV[1])
redis.call('PEXPIRE', KEYS[2], lease)
return -1
"""
_RELEASE = """
redis.call('ZREM', KEYS[2], ARGV[1])
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class RenderLanes:
    """The slow marks and render lanes of every enterprise, in Redis."""

    def __init__(
        self,
        redis_url: str,
        *,
        lanes: int,
        prefix: str = KEY_PREFIX,
        socket_timeout: float = 0.5,
    ) -> None:
        self.lanes = lanes
        self._mark, self._lane, self._holders = f"{prefix}slow:", f"{prefix}lane:", f"{prefix}lanes"
        self._redis = fail_fast_client(redis_url, socket_timeout)
        self._take = self._redis.register_script(_TAKE)
        self._release = self._redis.register_script(_RELEASE)
        self._warning = OccasionalWarning(log, 10.0)

    def is_slow(self, enterprise_id: uuid.UUID) -> bool:
        """Whether the enterprise's renders were slow within SLOW_MARK_SECONDS."""
        try:
            return bool(self._redis.exists(f"{self._mark}{enterprise_id}"))
        except (redis.RedisError, OSError) as exc:
            self._warning("render lanes unavailable, rendering unchecked: %s", exc)
            return False

    def mark_slow(self, enterprise_id: uuid.UUID) -> None:
        """Remember for SLOW_MARK_SECONDS that the enterprise's renders are slow."""
        try:
            self._redis.set(f"{self._mark}{enterprise_id}", "1", px=round(SLOW_MARK_SECONDS * 1000))
        except (redis.RedisError, OSError) as exc:
            self._warning("render lanes unavailable, rendering unchecked: %s", exc)

    def take(self, enterprise_id: uuid.UUID, holder: str, lease: float) -> float | None:
        """Take (or extend) the enterprise's lane for `lease` seconds: None when `holder` has
        it, else the seconds until its holder, or the first of the lanes, is done."""
        try:
            left = int(
                self._take(
                    keys=[f"{self._lane}{enterprise_id}", self._holders],
                    args=[holder, max(1, math.ceil(lease * 1000)), self.lanes],
                )
            )
        except (redis.RedisError, OSError) as exc:
            self._warning("render lanes unavailable, rendering unchecked: %s", exc)
            return None
        return None if left < 0 else left / 1000

    def release(self, enterprise_id: uuid.UUID, holder: str) -> None:
        """Give the lane back, if `holder` still has it."""
        try:
            self._release(keys=[f"{self._lane}{enterprise_id}", self._holders], args=[holder])
        except (redis.RedisError, OSError) as exc:
            self._warning("render lanes unavailable, rendering unchecked: %s", exc)


def _lanes_from_settings() -> RenderLanes:
    settings = get_settings()
    return RenderLanes(settings.require_redis_url(), lanes=settings.render_slow_lanes)


_lanes = PerProcess(_lanes_from_settings)


def get_render_lanes() -> RenderLanes:
    """The process's handle on the render lanes."""
    return _lanes.get()


def _lower_priority() -> None:
    """The lane thread's start: renders here are timed by CPU, at the lowest priority. On
    Linux the nice value is the thread's own (setpriority of its thread id)."""
    time_renders_by_cpu()
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), LANE_NICE)
    except (OSError, AttributeError) as exc:
        log.warning("the render lane thread keeps its priority: %s", exc)


def _lane_thread() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(
        max_workers=1, thread_name_prefix="xnovu-render-lane", initializer=_lower_priority
    )


_lane_threads = PerProcess(_lane_thread)


def in_lane_thread(work: Callable[[], T]) -> T:
    """Run `work` on the process's low-priority lane thread, in a copy of the caller's context,
    and answer (or raise) what it does."""
    context = contextvars.copy_context()
    return _lane_threads.get().submit(context.run, work).result()


def wait_for(left: float) -> float:
    """How long rows that wait for a lane with `left` seconds on it are deferred."""
    return min(max(left, MIN_WAIT_SECONDS), MAX_WAIT_SECONDS) * random.uniform(1.0, 1.5)


@dataclass
class FairRenders:
    """One delivery task's share of its enterprise's rendering (see the module)."""

    lanes: RenderLanes | None
    enterprise_id: uuid.UUID
    render_seconds: float  # the task's render time once it holds the lane; the render timeout
    holder: str = field(default_factory=lambda: uuid.uuid4().hex)
    holding: bool = False
    spent: float = 0.0  # seconds rendered while holding the lane

    def admit(self) -> float | None:
        """Before a sub-batch is claimed: None to go on, else the seconds to defer it by."""
        if self.lanes is None:
            return None
        if self.holding:
            return wait_for(0.0) if self.spent_out() else None
        if not self.lanes.is_slow(self.enterprise_id):
            return None
        return self._take()

    def spent_out(self) -> bool:
        """Whether the task has rendered all it may while holding the lane."""
        return self.holding and self.spent >= self.render_seconds

    def row(self) -> RowWatch:
        """The watch for one row's renders (shared.templates.limits.watched)."""
        return RowWatch(self)

    def spend(self, seconds: float) -> None:
        """Count a row's render time; it counts against the task only while it holds the lane."""
        if self.holding:
            self.spent += seconds

    def release(self) -> None:
        """At the end of the task: give the lane back."""
        if self.lanes is not None and self.holding:
            self.lanes.release(self.enterprise_id, self.holder)
            self.holding = False

    def _take(self) -> float | None:
        assert self.lanes is not None
        # A lane render may take up to LOW_PRIORITY_WALL_FACTOR timeouts of real time.
        lease = self.render_seconds * (LOW_PRIORITY_WALL_FACTOR + 1) + LANE_MARGIN_SECONDS
        left = self.lanes.take(self.enterprise_id, self.holder, lease)
        if left is not None:
            return wait_for(left)
        self.holding = True
        return None

    def slow(self) -> None:
        """A row's renders ran past SLOW_RENDER_SECONDS: mark the enterprise, and go on only
        with its lane (RenderDeferred when another task holds it) and on its low-priority
        thread (RenderMoved when on another)."""
        if self.lanes is None:
            return
        self.lanes.mark_slow(self.enterprise_id)
        if not self.holding:
            delay = self._take()
            if delay is not None:
                raise RenderDeferred(
                    f"enterprise {self.enterprise_id}'s renders are slow and another of its "
                    "deliveries is rendering",
                    delay,
                )
        if not renders_timed_by_cpu():
            raise RenderMoved("the render is slow: it goes on at low priority")


class RowWatch:
    """A SlowWatch over one row's renders: slow once they have used SLOW_RENDER_SECONDS of
    their thread's CPU time.

    The render's own check is the cheap one, of real time (`slow_at`); when it fires, the CPU
    time decides. On a busy machine a render's thread may wait for the CPU (or for the GIL, or
    a garbage collection) for longer than that: in `make bench` a burst of 20,000 ordinary
    notifications once had a render pass 0.2 s of real time, and its enterprise went to the
    slow lane, one child at a time, for 30 s (a third of the throughput, trigger->SENT p50 of
    seconds). Waiting is not slowness of the enterprise's templates."""

    __slots__ = ("cpu_started", "share", "slow_at", "started")

    def __init__(self, share: FairRenders) -> None:
        self.share = share
        # Made on the thread that renders the row (_build, on the task's or the lane's).
        self.cpu_started = time.thread_time()
        self.started = time.monotonic()
        self.slow_at = self.started + SLOW_RENDER_SECONDS

    def slow(self) -> None:
        """Real time passed `slow_at`: when the renders had that much CPU, tell the task's
        share once (a raise stops the render: its row is deferred or moves); otherwise look
        again once they could have had it."""
        cpu = time.thread_time() - self.cpu_started
        if cpu < SLOW_RENDER_SECONDS:
            self.slow_at = time.monotonic() + (SLOW_RENDER_SECONDS - cpu)
            return
        self.slow_at = math.inf
        self.share.slow()

    def elapsed(self) -> float:
        """Seconds since the row's renders began."""
        return time.monotonic() - self.started
