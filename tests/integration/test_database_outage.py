"""PostgreSQL down: the API answers 503 `{error}` within 2 s, records nothing, and serves again by
itself once PostgreSQL is back, without a restart.

The API runs as a uvicorn process against a PostgreSQL of its own (tests/chaos/stack.py), so
stopping it leaves the session's database alone.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tests.chaos.stack import ChaosStack

pytestmark = pytest.mark.integration

DOWN_ANSWER_SECONDS = 2.0
TIMINGS = {"RATE_LIMIT_PER_SECOND": "0", "LOG_LEVEL": "WARNING"}


@pytest.fixture
def own_stack(tmp_path: Path) -> Iterator[ChaosStack]:
    stack = ChaosStack(tmp_path / "stack", TIMINGS)
    try:
        stack.start_servers()
        stack.start_api()
        yield stack
    finally:
        stack.stop()


def _body(user: str) -> dict[str, Any]:
    return {
        "workflowId": "user-signup",
        "payload": {"userId": user, "email": f"{user}@example.com", "name": "Ada"},
    }


def _rows(stack: ChaosStack, enterprise_id: uuid.UUID) -> int:
    with psycopg.connect(stack.postgres.url, connect_timeout=5) as conn:
        found = conn.execute(
            "SELECT count(*) FROM notify.ent_notification WHERE enterprise_id = %s",
            (enterprise_id,),
        ).fetchone()
    assert found is not None
    return int(found[0])


def _timed(call: Any) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = call()
    return response, time.monotonic() - started


@pytest.mark.timeout(180)
def test_postgres_down_is_a_fast_503_that_writes_nothing_and_heals_by_itself(
    own_stack: ChaosStack,
) -> None:
    stack = own_stack
    enterprise_id = uuid.uuid4()
    key = stack.create_api_key(enterprise_id)
    http = httpx.Client(
        base_url=stack.api_url, headers={"Authorization": f"Bearer {key}"}, timeout=30
    )
    before = http.post("/api/trigger", json=_body("before"))
    assert before.status_code == 202, before.text  # pooled connections exist before the outage
    notification_id = before.json()["notificationId"]

    stack.postgres.stop()
    timings: dict[str, float] = {}
    try:
        for attempt in range(5):
            response, seconds = _timed(
                lambda attempt=attempt: http.post(
                    "/api/trigger",
                    json=_body(f"down-{attempt}"),
                    headers={"Idempotency-Key": f"down-{attempt}"},
                )
            )
            timings[f"trigger #{attempt + 1}"] = seconds
            assert response.status_code == 503, response.text
            error = response.json()["error"]
            assert error["code"] == "database_unavailable", error
            assert response.headers.get("Retry-After")
        bulk = {"events": [_body("bulk-0"), _body("bulk-1")]}
        response, timings["bulk"] = _timed(lambda: http.post("/api/trigger/bulk", json=bulk))
        assert response.status_code == 503, response.text  # nothing recorded: retry it all
        assert response.json()["error"]["code"] == "database_unavailable", response.text
        for name, path in [
            ("get", f"/api/notifications/{notification_id}"),
            ("list", "/api/notifications"),
        ]:
            response, timings[name] = _timed(lambda path=path: http.get(path))
            assert response.status_code == 503, (name, response.text)
            assert response.json()["error"]["code"] == "database_unavailable", response.text
        response, timings["readyz"] = _timed(lambda: http.get("/readyz"))
        assert response.status_code == 503, response.text
        assert response.json()["checks"]["database"].startswith("unavailable"), response.text
    finally:
        stack.postgres.start()

    assert max(timings.values()) < DOWN_ANSWER_SECONDS, timings
    # Nothing half-written: only the notification accepted before the outage exists.
    assert _rows(stack, enterprise_id) == 1

    # The same process serves again once PostgreSQL is back: no restart, no manual step.
    back = time.monotonic()
    while True:
        response = http.post(
            "/api/trigger", json=_body("down-0"), headers={"Idempotency-Key": "down-0"}
        )
        if response.status_code == 202 or time.monotonic() - back > 15:
            break
        time.sleep(0.1)
    recovered = time.monotonic() - back
    assert response.status_code == 202, response.text
    # A first acceptance, not the replay of an answer recorded during the outage.
    assert "Idempotency-Replay" not in response.headers
    assert _rows(stack, enterprise_id) == 2
    assert http.get("/readyz").status_code == 200
    http.close()
    shown = ", ".join(f"{name} {seconds * 1000:.0f} ms" for name, seconds in timings.items())
    print(f"PostgreSQL down: {shown}; serving again {recovered:.2f}s after it returned")
