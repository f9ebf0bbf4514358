"""Failed authentication is limited per client address (issue 12, item 9; api/authguard.py).

The attack: random keys as fast as one client can send them, each a database lookup. Now an
address gets AUTH_FAILURE_BURST failures, then 429 with Retry-After, answered from memory
without a lookup; other addresses and valid keys are unaffected. The address is the socket
peer, or what a proxy trusted by uvicorn (FORWARDED_ALLOW_IPS) forwarded; a client cannot
escape its count by sending X-Forwarded-For itself.

The suite's stack switches the limit far up (tests/conftest.py); these tests install small
limits: in-process through the get_auth_failure_guard override, or in a real uvicorn process
(whose proxy-header handling decides the address) through its environment.
"""

from __future__ import annotations

import ipaddress
import secrets
import uuid
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

import api.deps
from api.authguard import AuthFailureGuard, client_address, get_auth_failure_guard
from api.ratelimit import RateLimiter
from devtools.devstack import free_port
from tests.conftest import Stack, Tenant, api_process, make_tenant


def _random_key() -> str:
    return "xnk_" + secrets.token_urlsafe(32)


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _guard(redis_url: str, *, per_second: float, burst: int, ttl: float = 5.0) -> AuthFailureGuard:
    # A prefix of its own, so no two tests (or runs) share an address's bucket.
    prefix = f"xnovu:test-authfail:{uuid.uuid4().hex}:"
    limiter = RateLimiter(redis_url, per_second=per_second, burst=burst, key_prefix=prefix)
    return AuthFailureGuard(limiter, failed_key_ttl=ttl)


@pytest.fixture()
def use_guard(app: Any, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> Any:
    """`use_guard(guard)`: the app's guard for the rest of the test, closed afterwards."""

    def install(guard: AuthFailureGuard) -> None:
        monkeypatch.setitem(app.dependency_overrides, get_auth_failure_guard, lambda: guard)
        request.addfinalizer(guard.close)

    return install


@pytest.fixture()
def lookups(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The key hashes the API looked up in the database, in order (the real lookup runs)."""
    seen: list[str] = []
    real = api.deps._look_up

    def counting(key_hash: str) -> Any:
        seen.append(key_hash)
        return real(key_hash)

    monkeypatch.setattr(api.deps, "_look_up", counting)
    return seen


def test_random_keys_are_refused_after_the_burst_without_a_lookup(
    client: Any, stack: Stack, use_guard: Any, lookups: list[str]
) -> None:
    use_guard(_guard(stack.redis_url, per_second=0.1, burst=5))
    statuses = [
        client.get("/api/stats", headers=_bearer(_random_key())).status_code for _ in range(30)
    ]
    # Five failures, then the sixth crosses the limit: every later one is refused from memory.
    assert statuses == [401] * 5 + [429] * 25
    assert len(lookups) == 6

    refused = client.post("/api/trigger", json={}, headers=_bearer(_random_key()))
    assert refused.status_code == 429, refused.text
    error = refused.json()["error"]
    assert error["code"] == "auth_rate_limited" and error["message"]
    retry_after = int(refused.headers["Retry-After"])
    assert 1 <= retry_after <= 10  # one failure per 10 s
    assert error["details"]["retryAfterSeconds"] == retry_after
    assert len(lookups) == 6


class _NoCache:
    """A key cache that never holds a key."""

    def get(self, _key_hash: str) -> None:
        return None

    def put(self, _key_hash: str, _principal: Any) -> None:
        return None


@pytest.fixture()
def uncached_tenant(monkeypatch: pytest.MonkeyPatch) -> Tenant:
    """A tenant, with no key cache: each of its requests is looked up in the database."""
    monkeypatch.setattr("api.deps.principal_cache", lambda: _NoCache())
    return make_tenant()


def test_a_valid_key_is_served_while_its_address_is_refused(
    client: Any, stack: Stack, use_guard: Any, lookups: list[str], uncached_tenant: Tenant
) -> None:
    use_guard(_guard(stack.redis_url, per_second=0.1, burst=2, ttl=0))
    tenant = uncached_tenant
    assert client.get("/api/stats", headers=tenant.headers).status_code == 200
    for _ in range(5):
        client.get("/api/stats", headers=_bearer(_random_key()))
    assert client.get("/api/stats", headers=_bearer(_random_key())).status_code == 429
    before = len(lookups)
    for _ in range(3):
        assert client.get("/api/stats", headers=tenant.headers).status_code == 200
    assert len(lookups) == before + 3  # looked up (a revoked key would fail), not refused


def test_a_key_that_just_failed_is_refused_without_another_lookup(
    client: Any, stack: Stack, use_guard: Any, lookups: list[str]
) -> None:
    use_guard(_guard(stack.redis_url, per_second=100, burst=100, ttl=30))
    key = _random_key()
    for _ in range(10):
        assert client.get("/api/stats", headers=_bearer(key)).status_code == 401
    assert len(lookups) == 1


def test_a_revoked_key_stops_working_and_is_then_refused_from_memory(
    client: Any, stack: Stack, use_guard: Any, lookups: list[str], uncached_tenant: Tenant
) -> None:
    from shared.apikeys import revoke_api_key
    from shared.db.session import transaction

    use_guard(_guard(stack.redis_url, per_second=100, burst=100, ttl=30))
    tenant = uncached_tenant
    assert client.get("/api/stats", headers=tenant.headers).status_code == 200
    with transaction() as session:
        revoke_api_key(session, key_id=tenant.key_id)
    before = len(lookups)
    for _ in range(5):
        assert client.get("/api/stats", headers=tenant.headers).status_code == 401
    assert len(lookups) == before + 1


def test_the_guard_fails_open_while_redis_is_unreachable(
    client: Any, use_guard: Any, lookups: list[str]
) -> None:
    use_guard(_guard(f"redis://127.0.0.1:{free_port()}/0", per_second=0.1, burst=1))
    for _ in range(5):
        response = client.get("/api/stats", headers=_bearer(_random_key()))
        assert response.status_code == 401, response.text
    assert len(lookups) == 5


def _request(host: str | None) -> Any:
    client = SimpleNamespace(host=host, port=1) if host is not None else None
    return SimpleNamespace(client=client)


def test_the_client_address_counts_an_ipv6_client_by_its_64() -> None:
    assert client_address(_request("203.0.113.7")) == "203.0.113.7"
    assert client_address(_request("::ffff:203.0.113.7")) == "203.0.113.7"
    one = client_address(_request("2001:db8:1:2::1"))
    assert one == client_address(_request("2001:db8:1:2:ffff::9")) == "2001:db8:1:2::/64"
    assert one != client_address(_request("2001:db8:1:3::1"))
    assert client_address(_request("testclient")) == "testclient"
    assert client_address(_request(None)) == "unknown"


# A real uvicorn process: the address comes from its proxy-header handling.

LIMITS = {"AUTH_FAILURES_PER_SECOND": "0.05", "AUTH_FAILURE_BURST": "3"}


def _documentation_address() -> str:
    # TEST-NET-3 addresses, a fresh one per call: no two tests share a Redis bucket.
    return str(ipaddress.ip_address("203.0.113.0") + secrets.randbelow(254) + 1)


def test_a_trusted_proxys_forwarded_address_is_counted_not_the_proxy(stack: Stack) -> None:
    """uvicorn trusts X-Forwarded-For from 127.0.0.1 by default (FORWARDED_ALLOW_IPS): each
    client behind that proxy has its own count, and valid keys behind it are unaffected."""
    attacker, neighbour = _documentation_address(), _documentation_address()
    tenant = make_tenant()
    with (
        api_process(stack, "authguard-trusted", **LIMITS, API_KEY_CACHE_SECONDS="0") as url,
        httpx.Client(base_url=url, timeout=10) as http,
    ):

        def get(address: str, key: str) -> int:
            headers = {**_bearer(key), "X-Forwarded-For": address}
            return http.get("/api/stats", headers=headers).status_code

        statuses = [get(attacker, _random_key()) for _ in range(6)]
        assert statuses == [401, 401, 401, 429, 429, 429]
        assert get(neighbour, _random_key()) == 401  # its own count
        assert get(neighbour, tenant.api_key) == 200
        assert get(attacker, _random_key()) == 429


def test_x_forwarded_for_from_an_untrusted_peer_does_not_escape_the_count(stack: Stack) -> None:
    """With only another proxy trusted, the socket peer (127.0.0.1) is counted, whatever
    X-Forwarded-For a client sends."""
    with (
        api_process(stack, "authguard-untrusted", **LIMITS, FORWARDED_ALLOW_IPS="192.0.2.1") as url,
        httpx.Client(base_url=url, timeout=10) as http,
    ):
        statuses = [
            http.get(
                "/api/stats",
                headers={**_bearer(_random_key()), "X-Forwarded-For": _documentation_address()},
            ).status_code
            for _ in range(6)
        ]
    assert statuses[-1] == 429 and statuses.count(401) <= 3, statuses
