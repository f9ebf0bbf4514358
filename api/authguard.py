"""Failed authentication, limited per client address.

Every request with a key the process has not cached costs a database lookup, so a client
sending random keys makes the API query PostgreSQL as fast as it can send (284 lookups a second
from one client before this guard, each holding a pool connection). The guard counts failed
lookups per client address in Redis with the per-key limiter's GCRA (api/ratelimit.py):
AUTH_FAILURE_BURST failures at once, then AUTH_FAILURES_PER_SECOND. Above that the address is
answered 429 with Retry-After, and until then each API process refuses its unknown keys from
memory, without Redis or the database.

A valid key is never slowed by anyone else's failures: a key this process has cached is never
checked, and a key it has seen authenticate (KNOWN_VALID_KEYS of them, by hash) is looked up
even from an address that is over its limit. Only an address's own failures count against it;
clients behind one proxy share its address unless the proxy is trusted (uvicorn's
FORWARDED_ALLOW_IPS, README "Production"), in which case the address is the client's own as
the proxy forwarded it. An IPv6 client is counted by its /64, which one host usually holds
whole.

A key that just failed is remembered for API_KEY_CACHE_SECONDS, as a live key is, so repeating
a revoked or mistyped key costs no lookup either. Like the per-key limiter, the guard fails open
while Redis is unreachable (each process still remembers the addresses it has refused).
"""

from __future__ import annotations

import ipaddress
import math
import threading
import time
from functools import lru_cache
from typing import Any

from starlette.requests import Request

from api.errors import ApiError
from api.ratelimit import RateDecision, RateLimiter
from shared.settings import get_settings

KEY_PREFIX = "xnovu:ratelimit:authfail:"
# Addresses refused, keys seen valid, and keys seen failing that a process remembers; when a
# table is full it is emptied, which forgets refusals (looser for a moment) but never lets a
# key in that the database would refuse.
MAX_ENTRIES = 10_000
KNOWN_VALID_KEYS = MAX_ENTRIES


def client_address(request: Request) -> str:
    """Whom failures are counted against: the socket peer, or the address a trusted proxy
    forwarded (uvicorn puts it in the ASGI scope); an IPv6 address by its /64."""
    client = request.client
    host = client.host if client is not None else ""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host or "unknown"
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


class AuthFailureGuard:
    """Counts failed key lookups per client address and refuses an address over its limit."""

    def __init__(self, limiter: RateLimiter | None, *, failed_key_ttl: float) -> None:
        self.limiter = limiter
        self.failed_key_ttl = failed_key_ttl
        self._refused: dict[str, float] = {}  # address -> refused until (monotonic)
        self._failed_keys: dict[str, float] = {}  # key hash -> until
        self._valid_keys: dict[str, None] = {}  # key hashes, oldest first
        self._lock = threading.Lock()

    def refusal(self, address: str, key_hash: str) -> RateDecision | None:
        """Refused without a lookup: the address is over its limit and the key is not one this
        process has seen authenticate. In memory only, so safe on the event loop."""
        until = self._refused.get(address)
        if until is None or key_hash in self._valid_keys:
            return None
        left = until - time.monotonic()
        if left <= 0:
            with self._lock:
                self._refused.pop(address, None)
            return None
        return RateDecision(allowed=False, retry_after_seconds=left)

    def known_to_fail(self, key_hash: str) -> bool:
        """Whether the key failed a lookup in the last `failed_key_ttl` seconds."""
        until = self._failed_keys.get(key_hash)
        return until is not None and time.monotonic() < until

    def failed(self, address: str, key_hash: str) -> RateDecision:
        """Count one failure of the address (a Redis round trip: call it off the loop) and
        remember the key; a refusal when the address is now over its limit."""
        now = time.monotonic()
        with self._lock:
            self._valid_keys.pop(key_hash, None)
            if self.failed_key_ttl > 0:
                if len(self._failed_keys) >= MAX_ENTRIES:
                    self._failed_keys.clear()
                self._failed_keys[key_hash] = now + self.failed_key_ttl
        if self.limiter is None:
            return RateDecision(allowed=True)
        decision = self.limiter.check(address)
        if not decision.allowed:
            with self._lock:
                if len(self._refused) >= MAX_ENTRIES:
                    self._refused.clear()
                self._refused[address] = now + decision.retry_after_seconds
        return decision

    def succeeded(self, key_hash: str) -> None:
        """Remember a key that authenticated: it is looked up even from a refused address."""
        if key_hash in self._valid_keys:
            return
        with self._lock:
            self._failed_keys.pop(key_hash, None)
            if len(self._valid_keys) >= KNOWN_VALID_KEYS:
                self._valid_keys.pop(next(iter(self._valid_keys)))
            self._valid_keys[key_hash] = None

    def close(self) -> None:
        """Release the limiter's Redis connections."""
        if self.limiter is not None:
            self.limiter.close()


@lru_cache(maxsize=1)
def _guard_from_settings() -> AuthFailureGuard:
    settings = get_settings()
    url = settings.rate_limit_redis_url or settings.redis_url
    limiter = None
    if settings.auth_failures_per_second > 0 and url:
        limiter = RateLimiter(
            url,
            per_second=settings.auth_failures_per_second,
            burst=settings.auth_failure_burst,
            key_prefix=KEY_PREFIX,
        )
    return AuthFailureGuard(limiter, failed_key_ttl=settings.api_key_cache_seconds)


def get_auth_failure_guard() -> AuthFailureGuard:
    """The process's guard (a dependency in name only, so a test can override it through the
    app's dependency_overrides; resolved by auth_failure_guard only when a key is looked up)."""
    return _guard_from_settings()


def auth_failure_guard(request: Request) -> AuthFailureGuard:
    """The guard for a request: the app's override of get_auth_failure_guard if it has one."""
    overrides: dict[Any, Any] = getattr(request.app, "dependency_overrides", {})
    provider = overrides.get(get_auth_failure_guard, get_auth_failure_guard)
    guard: AuthFailureGuard = provider()
    return guard


def too_many_failures(decision: RateDecision, guard: AuthFailureGuard) -> ApiError:
    """429 for an address over its failed-authentication limit, with Retry-After."""
    retry_after = max(1, math.ceil(decision.retry_after_seconds))
    details: dict[str, Any] = {"retryAfterSeconds": retry_after}
    if guard.limiter is not None:
        details["limitPerSecond"] = guard.limiter.per_second
        details["burst"] = guard.limiter.burst
    return ApiError(
        429,
        "auth_rate_limited",
        f"too many failed authentications from this address: retry after {retry_after} s",
        details,
        headers={"Retry-After": str(retry_after)},
    )
