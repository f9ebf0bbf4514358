"""The API's limits, each configurable in shared/settings.py, and each answering JSON errors:
request body (MAX_BODY_BYTES, 413), trigger payload (MAX_PAYLOAD_BYTES, 413), recipients
(MAX_RECIPIENTS, 422), template output (TEMPLATE_MAX_OUTPUT_BYTES, 422 from preview) and the
per-key request rate (RATE_LIMIT_PER_SECOND / RATE_LIMIT_BURST, 429 with Retry-After), which
fails open while Redis is unreachable.

The test stack sets the rate limit far above what tests send; the rate tests swap in a limiter
with small numbers through the `get_rate_limiter` dependency.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from api.ratelimit import RateLimiter, _limiter_from_settings, get_rate_limiter
from devtools.devstack import free_port
from shared.settings import Settings, get_settings
from tests.conftest import Stack, Tenant, make_tenant, signup_payload
from tests.factories import api_error, create_template


def _trigger(client: Any, tenant: Tenant, **body: Any) -> Any:
    return client.post(
        "/api/trigger",
        json={"workflowId": "user-signup", "payload": signup_payload(), **body},
        headers=tenant.headers,
    )


# Sizes


def test_a_body_over_max_body_bytes_is_413(client: Any, tenant: Tenant) -> None:
    limit = get_settings().max_body_bytes
    body = b'{"workflowId": "user-signup", "payload": {"pad": "' + b"x" * limit + b'"}}'
    response = client.post(
        "/api/trigger",
        content=body,
        headers={**tenant.headers, "Content-Type": "application/json"},
    )
    api_error(response, 413, "payload_too_large")


def test_a_payload_over_max_payload_bytes_is_413(client: Any, tenant: Tenant) -> None:
    settings = get_settings()
    assert settings.max_payload_bytes < settings.max_body_bytes  # so the payload check answers
    pad = "x" * (settings.max_payload_bytes + 1)
    response = _trigger(client, tenant, payload={**signup_payload(), "pad": pad})
    api_error(response, 413, "payload_too_large")


def test_more_recipients_than_max_recipients_is_422(client: Any, tenant: Tenant) -> None:
    limit = get_settings().max_recipients
    response = _trigger(client, tenant, recipients=[f"r-{i}" for i in range(limit + 1)])
    api_error(response, 422, "too_many_recipients")
    assert _trigger(client, tenant, recipients=[f"r-{i}" for i in range(limit)]).status_code == 202


def test_a_template_rendering_over_template_max_output_bytes_is_422(
    client: Any, tenant: Tenant
) -> None:
    limit = get_settings().template_max_output_bytes
    template = create_template(
        client, tenant, "SMS", body="{% for i in range(100000) %}{{ chunk }}{% endfor %}"
    )
    chunk = "x" * (limit // 100_000 + 1)  # 100,000 chunks: just over the limit
    response = client.post(
        f"/api/templates/{template['id']}/preview",
        json={"variables": {"chunk": chunk}},
        headers=tenant.headers,
    )
    error = api_error(response, 422, "render_limit_exceeded")
    assert str(limit) in error["message"]
    small = client.post(
        f"/api/templates/{template['id']}/preview",
        json={"variables": {"chunk": ""}},
        headers=tenant.headers,
    )
    assert small.status_code == 200, small.text


# Request rate


@pytest.fixture()
def use_limiter(app: Any) -> Iterator[Any]:
    """Install a limiter for the duration of a test: `use_limiter(limiter)`."""
    installed: list[RateLimiter] = []

    def install(limiter: RateLimiter) -> RateLimiter:
        installed.append(limiter)
        app.dependency_overrides[get_rate_limiter] = lambda: limiter
        return limiter

    yield install
    app.dependency_overrides.pop(get_rate_limiter, None)
    for limiter in installed:
        limiter.close()


def _limiter(redis_url: str, **options: Any) -> RateLimiter:
    # A prefix of its own, so no two tests (or runs) share a bucket.
    prefix = f"xnovu:test-ratelimit:{uuid.uuid4().hex}:"
    return RateLimiter(redis_url, key_prefix=prefix, **options)


def test_over_the_rate_is_429_with_retry_after_until_the_key_has_waited(
    client: Any, tenant: Tenant, stack: Stack, use_limiter: Any
) -> None:
    use_limiter(_limiter(stack.redis_url, per_second=2, burst=3))
    for _ in range(3):  # the burst
        assert client.get("/api/stats", headers=tenant.headers).status_code == 200

    limited = client.get("/api/stats", headers=tenant.headers)
    error = api_error(limited, 429, "rate_limited")
    retry_after = int(limited.headers["Retry-After"])
    assert retry_after == 1  # 2 requests a second: the next one is due in 0.5 s, rounded up
    assert error["details"]["retryAfterSeconds"] == retry_after
    api_error(_trigger(client, tenant), 429, "rate_limited")  # every authenticated route

    time.sleep(retry_after)
    assert _trigger(client, tenant).status_code == 202


def test_the_rate_is_per_key_and_counted_after_authentication(
    client: Any, tenant: Tenant, stack: Stack, use_limiter: Any
) -> None:
    use_limiter(_limiter(stack.redis_url, per_second=0.1, burst=2))
    for _ in range(2):
        assert client.get("/api/stats", headers=tenant.headers).status_code == 200
    api_error(client.get("/api/stats", headers=tenant.headers), 429, "rate_limited")

    other = make_tenant()
    assert client.get("/api/stats", headers=other.headers).status_code == 200
    # Unauthenticated requests are refused as such, not counted against anyone.
    for _ in range(3):
        api_error(
            client.get("/api/stats", headers={"Authorization": "Bearer nope"}), 401, "unauthorized"
        )
    # Health checks carry no key and are never limited.
    assert client.get("/healthz").status_code == 200


def test_api_processes_share_one_budget_per_key(stack: Stack) -> None:
    """Two limiters on one Redis, as two API processes are: a key's burst is spent once."""
    prefix = f"xnovu:test-ratelimit:{uuid.uuid4().hex}:"
    first, second = (
        RateLimiter(stack.redis_url, per_second=1, burst=4, key_prefix=prefix) for _ in range(2)
    )
    try:
        decisions = [limiter.check(42).allowed for limiter in (first, second) * 3]
        assert decisions == [True, True, True, True, False, False]
        assert second.check(43).allowed  # another key has its own budget
    finally:
        first.close()
        second.close()


def test_the_limiter_fails_open_while_redis_is_unreachable(
    client: Any, tenant: Tenant, use_limiter: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # Nothing listens on this port: every Redis call fails at once.
    # No pause after a failure: every request tries Redis, and each is accepted all the same.
    use_limiter(
        _limiter(f"redis://127.0.0.1:{free_port()}/0", per_second=1, burst=1, pause_after_failure=0)
    )
    with caplog.at_level(logging.WARNING, logger="api.ratelimit"):
        started = time.monotonic()
        for _ in range(5):
            assert _trigger(client, tenant).status_code == 202
        assert client.get("/api/stats", headers=tenant.headers).status_code == 200
        elapsed = time.monotonic() - started
    warnings = [r for r in caplog.records if r.name == "api.ratelimit"]
    assert len(warnings) == 1, "a warning at most every few seconds, not one per request"
    assert "Redis unavailable" in warnings[0].getMessage()
    assert elapsed < 5


def test_after_a_failure_the_limiter_stops_asking_redis_for_a_moment(stack: Stack) -> None:
    limiter = RateLimiter(f"redis://127.0.0.1:{free_port()}/0", per_second=1, burst=1)
    try:
        assert limiter.check(1).allowed  # fails open, and pauses
        assert limiter._paused_until > time.monotonic()
        for _ in range(10):
            assert limiter.check(1).allowed
    finally:
        limiter.close()


def test_a_rate_of_zero_switches_the_limiter_off(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(RATE_LIMIT_PER_SECOND=0, REDIS_URL="redis://127.0.0.1:1/0")
    monkeypatch.setattr("api.ratelimit.get_settings", lambda: settings)
    assert _limiter_from_settings.__wrapped__() is None
    on = Settings(RATE_LIMIT_PER_SECOND=5, RATE_LIMIT_BURST=7, REDIS_URL="redis://127.0.0.1:1/0")
    monkeypatch.setattr("api.ratelimit.get_settings", lambda: on)
    limiter = _limiter_from_settings.__wrapped__()
    assert limiter is not None and (limiter.per_second, limiter.burst) == (5, 7)
    limiter.close()


def test_leases_never_grant_more_than_the_burst_between_processes(stack: Stack) -> None:
    """A burst of 100 leases 5 requests at a time; two processes together still get exactly
    the burst before the rate applies (one request per 100 s: no refill within the test)."""
    prefix = f"xnovu:test-ratelimit:{uuid.uuid4().hex}:"
    first, second = (
        RateLimiter(stack.redis_url, per_second=0.01, burst=100, key_prefix=prefix)
        for _ in range(2)
    )
    try:
        assert first.lease == 5
        decisions = [limiter.check(7).allowed for _ in range(70) for limiter in (first, second)]
        assert sum(decisions) == 100
        assert decisions[-10:] == [False] * 10
    finally:
        first.close()
        second.close()
