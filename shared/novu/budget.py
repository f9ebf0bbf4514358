"""Novu's Events rate limit as one token budget, kept in Redis and shared by every process.

Novu meters trigger calls with a token bucket per environment and category: the Events bucket
refills continuously at the tier's rate (NOVU_EVENTS_RPS: Free 60, Pro 240, Team 600,
Enterprise 6,000 tokens a second) and holds at most 1.1 windows of 5 s (`RateLimit-Policy:
300;w=5;burst=330` at 60/s). A single trigger or a cancel costs 1 token, a bulk trigger 100;
a call the bucket cannot pay is refused with 429 and `Retry-After`, and costs nothing.

Every Novu call takes its tokens here first, so that the workers together stay inside Novu's
bucket instead of finding its edge by 429s. The budget is GCRA (the generic cell rate
algorithm: a token bucket kept as one timestamp, the "theoretical arrival time") in one atomic
Lua script on Redis's own clock, like the API's per-key limiter (api/ratelimit.py); no
maintained Python library does variable-cost reservations with a bounded wait and a drain,
which is what the delivery needs. It holds one window (5 s times the rate, 300 tokens at 60/s):
the 10 % Novu adds as burst allowance is left as margin for the network's jitter between our
clock and Novu's.

- `reserve(cost, max_wait)`: take `cost` tokens now or at a time at most `max_wait` seconds
  ahead (the caller sleeps until then: the tokens are its own, first come first served);
  when they are further away, take nothing and answer how far (the caller defers its work).
- `drain(seconds)`: Novu answered 429: the budget is empty until its `Retry-After`, for every
  process, not only the one that was refused.
- `refund(cost)`: tokens reserved and not spent go back.
- `record_usage(enterprise_id, tokens, sent)` and `usage(enterprise_id)`: the tokens Novu
  charged and the notifications it accepted, in total and per enterprise (each Novu call
  carries one enterprise's notifications), for tokens per notification in `GET /api/stats`.
- `unknown_since(transaction_id, keep)`: when Novu first refused this trigger for not knowing
  its workflow: the clock a notification's wait for a sync runs on, kept here next to the
  other state of Novu's answers that every process shares.

The budget is keyed by the Novu environment (its URL and secret key): processes that talk to
the same Novu environment share one budget, as Novu counts them together. Redis is a
convenience here: when it cannot be reached the budget lets calls through (Novu's own 429
still holds the line) and logs a warning at most every few seconds.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import redis

from shared.novu.errors import NovuError, NovuRetryableError, is_rate_limited
from shared.process import PerProcess
from shared.redis_client import OccasionalWarning, fail_fast_client
from shared.settings import Settings, get_settings

log = logging.getLogger(__name__)

KEY_PREFIX = "xnovu:novu:budget:"
UNKNOWN_PREFIX = "xnovu:novu:unknown-workflow:"
USAGE_PREFIX = "xnovu:novu:usage:"
# The longest a Novu call made for a person waiting (the API's cancel) waits for its tokens.
METERED_WAIT_SECONDS = 1.0

T = TypeVar("T")
# Novu's rate-limit window: its bucket holds one window plus a 10 % burst allowance.
WINDOW_SECONDS = 5.0
_US = 1_000_000

# KEYS[1]: the theoretical arrival time (TAT) in microseconds of Redis's clock: the budget is
# full when it is in the past, and holds (now + capacity * interval - TAT) / interval tokens.
# ARGV[1]: interval (µs per token), ARGV[2]: capacity (tokens), ARGV[3]: mode, ARGV[4]: value.
#   mode "reserve", value = "cost max_wait_us": take cost tokens if they are there within
#     max_wait; returns {1, wait_us} (taken: send after wait_us) or {0, wait_us} (not taken).
#   mode "refund", value = cost: give back cost tokens reserved and not spent.
#   mode "drain", value = µs: no tokens until then (the budget is empty at now + value).
#   mode "peek": {tokens now, 0}.
_SCRIPT = """
local interval = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
local mode = ARGV[3]
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat
local result = {1, 0}
if mode == 'reserve' then
  local cost, max_wait = string.match(ARGV[4], '(%d+) (%d+)')
  new_tat = tat + tonumber(cost) * interval
  local wait = new_tat - capacity * interval - now
  if wait < 0 then wait = 0 end
  if wait > tonumber(max_wait) then return {0, wait} end
  result = {1, wait}
elseif mode == 'refund' then
  new_tat = tat - tonumber(ARGV[4]) * interval
elseif mode == 'drain' then
  new_tat = math.max(tat, now + tonumber(ARGV[4]) + capacity * interval)
else
  return {math.floor((now + capacity * interval - tat) / interval), 0}
end
if new_tat <= now then
  redis.call('DEL', KEYS[1])
else
  local ttl_ms = math.ceil((new_tat - now) / 1000) + 1
  redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', ttl_ms)
end
return result
"""


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens Novu charged and notifications it accepted (SENT) since the counters began, and
    the budget's rate (Events tokens a second)."""

    tokens: int
    sent: int
    per_second: float

    @property
    def tokens_per_notification(self) -> float | None:
        """Tokens per notification sent; None before the first one."""
        return self.tokens / self.sent if self.sent else None


@dataclass(frozen=True, slots=True)
class Reservation:
    """What `reserve` did: `taken` tokens are the caller's after `wait` seconds; when not taken,
    `wait` is how long until they would be there (for a caller who must come back later)."""

    taken: bool
    wait: float


class NovuBudget:
    """Novu's Events token bucket for all our processes: GCRA in Redis (see the module)."""

    def __init__(
        self,
        redis_url: str,
        *,
        per_second: float,
        key: str,
        window_seconds: float = WINDOW_SECONDS,
        socket_timeout: float = 1.0,
        warn_every: float = 10.0,
    ) -> None:
        if per_second <= 0 or window_seconds <= 0:
            raise ValueError("a Novu budget needs per_second > 0 and window_seconds > 0")
        self.per_second = per_second
        self.capacity = max(1, math.floor(per_second * window_seconds))
        self.key = key
        self.usage_key = USAGE_PREFIX + key.removeprefix(KEY_PREFIX)
        self._interval_us = max(1, round(_US / per_second))
        self._redis = fail_fast_client(redis_url, socket_timeout)
        self._script = self._redis.register_script(_SCRIPT)
        self._warning = OccasionalWarning(log, warn_every)

    def reserve(self, cost: int, *, max_wait: float) -> Reservation:
        """Take `cost` tokens if they are there within `max_wait` seconds (see the module)."""
        if cost <= 0:
            return Reservation(taken=True, wait=0.0)
        # More than the budget holds is paid only by waiting for the rest, even from full:
        # always allowed, or such a call could never be made.
        max_wait = max(max_wait, (cost - self.capacity) / self.per_second)
        value = f"{cost} {max(0, math.floor(max_wait * _US))}"
        answer = self._run("reserve", value)
        if answer is None:
            return Reservation(taken=True, wait=0.0)
        return Reservation(taken=bool(int(answer[0])), wait=int(answer[1]) / _US)

    def take(self, cost: int, *, max_wait: float) -> bool:
        """Reserve `cost` tokens and sleep until they are there; False (nothing taken, no sleep)
        when that is more than `max_wait` seconds away."""
        reservation = self.reserve(cost, max_wait=max_wait)
        if reservation.taken and reservation.wait > 0:
            time.sleep(reservation.wait)
        return reservation.taken

    def refund(self, cost: int) -> None:
        """Give back tokens that were reserved and not spent."""
        if cost > 0:
            self._run("refund", str(cost))

    def drain(self, seconds: float) -> None:
        """Empty the budget until `seconds` from now (Novu's `Retry-After` of a 429)."""
        self._run("drain", str(max(0, math.ceil(seconds * _US))))

    def unknown_since(self, transaction_id: str, *, keep: float) -> float:
        """The Unix time Novu first refused this trigger for an unknown workflow (now, the first
        time), remembered for `keep` seconds; now when Redis cannot say."""
        now = time.time()
        key = UNKNOWN_PREFIX + transaction_id
        try:
            if self._redis.set(key, repr(now), nx=True, px=max(1, math.ceil(keep * 1000))):
                return now
            first = self._redis.get(key)
        except (redis.RedisError, OSError) as exc:
            self._warn(exc)
            return now
        return float(first) if first is not None else now

    def record_usage(self, enterprise_id: uuid.UUID, *, tokens: int, sent: int) -> None:
        """Add one task's tokens charged and notifications sent to the counters."""
        if tokens <= 0 and sent <= 0:
            return
        try:
            pipe = self._redis.pipeline(transaction=False)
            for field, value in (("tokens", tokens), ("sent", sent)):
                pipe.hincrby(self.usage_key, field, value)
                pipe.hincrby(self.usage_key, f"{enterprise_id}:{field}", value)
            pipe.execute()
        except (redis.RedisError, OSError) as exc:
            self._warn(exc)

    def usage(self, enterprise_id: uuid.UUID | None = None) -> Usage | None:
        """The counters of one enterprise, or of all (None); None when Redis cannot say."""
        prefix = "" if enterprise_id is None else f"{enterprise_id}:"
        try:
            tokens, sent = self._redis.hmget(self.usage_key, [f"{prefix}tokens", f"{prefix}sent"])
        except (redis.RedisError, OSError) as exc:
            self._warn(exc)
            return None
        return Usage(tokens=int(tokens or 0), sent=int(sent or 0), per_second=self.per_second)

    def drain_for(self, exc: NovuError) -> None:
        """Novu refused a call with 429: empty the budget until its Retry-After (1 s without)."""
        retry_after = exc.retry_after if isinstance(exc, NovuRetryableError) else None
        self.drain(retry_after if retry_after is not None else 1.0)

    def available(self) -> int | None:
        """Tokens in the budget now (for stats and tests); None when Redis cannot say."""
        answer = self._run("peek", "")
        return None if answer is None else int(answer[0])

    def _run(self, mode: str, value: str) -> list[int] | None:
        try:
            answer: list[int] = self._script(
                keys=[self.key], args=[self._interval_us, self.capacity, mode, value]
            )
            return answer
        except (redis.RedisError, OSError) as exc:
            self._warn(exc)
            return None

    def _warn(self, exc: Exception) -> None:
        self._warning("Novu budget: Redis unavailable, calling Novu unmetered: %s", exc)

    def close(self) -> None:
        """Release the Redis connections."""
        self._redis.close()


def budget_key(settings: Settings) -> str:
    """The budget's Redis key: one per Novu environment (its API URL and secret key), never
    the secret itself."""
    identity = f"{settings.effective_novu_api_url}\n{settings.effective_novu_secret_key}"
    return KEY_PREFIX + hashlib.sha256(identity.encode()).hexdigest()[:24]


def _budget_from_settings() -> NovuBudget:
    settings = get_settings()
    return NovuBudget(
        settings.require_redis_url(), per_second=settings.novu_events_rps, key=budget_key(settings)
    )


_budget = PerProcess(_budget_from_settings)


def get_novu_budget() -> NovuBudget:
    """The process's handle on the shared budget, built from settings."""
    return _budget.get()


def novu_usage(enterprise_id: uuid.UUID | None = None) -> Usage | None:
    """The usage counters of one enterprise, or of all (None); None when there is no Redis to
    ask (REDIS_URL unset) or it cannot say."""
    if not get_settings().redis_url:
        return None
    return get_novu_budget().usage(enterprise_id)


def metered_call(call: Callable[[], T], *, cost: int = 1) -> T:
    """Make a Novu call outside the delivery task (the API's cancel) within the shared budget:
    wait up to METERED_WAIT_SECONDS for its tokens, then call anyway (a person is waiting, and
    Novu's own 429 still holds the line); a 429 drains the budget like a worker's."""
    if not get_settings().redis_url:
        return call()
    budget = get_novu_budget()
    budget.take(cost, max_wait=METERED_WAIT_SECONDS)
    try:
        return call()
    except NovuError as exc:
        if is_rate_limited(exc):
            budget.drain_for(exc)
        raise
