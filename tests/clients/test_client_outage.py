"""The acceptance of the client's retries: PostgreSQL is down for the first two attempts of a
trigger (the API answers 503 with Retry-After), then back; the one `trigger()` call returns
one notification, and the database holds exactly one row for it.

The API runs against a PostgreSQL of its own (tests/chaos/stack.py), so stopping it leaves
the session's database alone."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
from xnovu_client import RetryPolicy, XNovu

from tests.chaos.stack import ChaosStack

pytestmark = pytest.mark.integration


@pytest.fixture
def own_stack(tmp_path: Path) -> Iterator[ChaosStack]:
    stack = ChaosStack(tmp_path / "stack", {"RATE_LIMIT_PER_SECOND": "0", "LOG_LEVEL": "WARNING"})
    try:
        stack.start_servers()
        stack.start_api()
        yield stack
    finally:
        stack.stop()


class StartsPostgresAfterTwo503s(httpx.HTTPTransport):
    """Passes every request to the API; once it has answered 503 twice, starts PostgreSQL."""

    def __init__(self, stack: ChaosStack) -> None:
        super().__init__()
        self.stack = stack
        self.statuses: list[int] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        self.statuses.append(response.status_code)
        if self.statuses.count(503) == 2 and response.status_code == 503:
            self.stack.postgres.start()
        return response


@pytest.mark.timeout(180)
def test_a_trigger_through_a_database_outage_is_one_notification(own_stack: ChaosStack):
    enterprise_id = uuid.uuid4()
    key = own_stack.create_api_key(enterprise_id)
    transport = StartsPostgresAfterTwo503s(own_stack)
    policy = RetryPolicy(max_attempts=20, max_elapsed=90.0)
    with XNovu(own_stack.api_url, key, retry=policy, transport=transport, timeout=30) as xnovu:
        xnovu.trigger("user-signup", {"userId": "warm", "email": "w@example.com", "name": "W"})
        transport.statuses.clear()  # the pool holds connections from before the outage
        own_stack.postgres.stop()
        sent = xnovu.trigger(
            "user-signup", {"userId": "u-1", "email": "ada@example.com", "name": "Ada"}
        )
    assert transport.statuses[:2] == [503, 503] and transport.statuses[-1] == 202, (
        transport.statuses
    )
    with psycopg.connect(own_stack.postgres.url, connect_timeout=5) as conn:
        rows = conn.execute(
            "SELECT id FROM notify.ent_notification"
            " WHERE enterprise_id = %s AND payload->>'userId' = 'u-1'",
            (enterprise_id,),
        ).fetchall()
    assert [row[0] for row in rows] == [sent.notification_id]
