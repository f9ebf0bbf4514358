"""SIGTERM to a busy worker: it finishes what it is running, hands back what it had reserved,
and exits; another worker sends the rest. Nothing is lost, left PROCESSING, retried or sent
twice.

Runs a stack of its own (tests/chaos/stack.py): the session's worker would otherwise take
part of the work and hide what the stopped one did.
"""

from __future__ import annotations

import signal
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.chaos.stack import ChaosStack, wait_for

pytestmark = pytest.mark.integration

NOTIFICATIONS = 100
NOVU_LATENCY_MS = 300
TIMINGS = {
    "RECONCILE_INTERVAL_SECONDS": "0.5",
    "REDELIVER_AFTER_SECONDS": "3",
    # Longer than the test needs: a row left PROCESSING would show, not be quietly re-leased.
    "PROCESSING_LEASE_SECONDS": "120",
    "RETRY_BASE_SECONDS": "0.2",
    "RETRY_MAX_SECONDS": "1",
    "DELIVERY_MAX_ATTEMPTS": "5",
    "RATE_LIMIT_PER_SECOND": "0",
    "LOG_LEVEL": "INFO",
}


@pytest.fixture
def own_stack(tmp_path: Path) -> Iterator[ChaosStack]:
    stack = ChaosStack(tmp_path / "stack", TIMINGS, worker_concurrency=2)
    try:
        stack.start_servers()
        stack.start_emulator()
        stack.start_api()
        stack.start_beat()
        yield stack
    finally:
        stack.stop()


def _statuses(stack: ChaosStack, enterprise_id: uuid.UUID) -> Counter[str]:
    with psycopg.connect(stack.postgres.url, connect_timeout=5) as conn:
        rows = conn.execute(
            "SELECT notification_status::text, count(*) FROM notify.ent_notification"
            " WHERE enterprise_id = %s GROUP BY 1",
            (enterprise_id,),
        ).fetchall()
    return Counter({status: int(count) for status, count in rows})


@pytest.mark.timeout(240)
def test_sigterm_to_a_busy_worker_loses_nothing_and_sends_nothing_twice(
    own_stack: ChaosStack,
) -> None:
    stack = own_stack
    enterprise_id = uuid.uuid4()
    key = stack.create_api_key(enterprise_id)
    first = stack.start_worker()
    novu = httpx.Client(base_url=stack.emulator_url, timeout=10)
    novu.post("/_emulator/faults", json={"latencyMs": NOVU_LATENCY_MS}).raise_for_status()

    def trigger(index: int) -> str:
        user = f"shutdown-{index}"
        response = http.post(
            "/api/trigger",
            json={
                "workflowId": "user-signup",
                "payload": {"userId": user, "email": f"{user}@example.com", "name": "Ada"},
            },
        )
        assert response.status_code == 202, response.text
        return str(response.json()["transactionId"])

    headers = {"Authorization": f"Bearer {key}"}
    with (
        httpx.Client(base_url=stack.api_url, headers=headers, timeout=10) as http,
        ThreadPoolExecutor(max_workers=8) as pool,
    ):
        transaction_ids = list(pool.map(trigger, range(NOTIFICATIONS)))

    # Busy: some sent, most still to do.
    wait_for(lambda: _statuses(stack, enterprise_id)["SENT"] >= 10, 60, "the first deliveries")
    assert first.proc is not None
    stopping = time.monotonic()
    first.proc.send_signal(signal.SIGTERM)  # what `docker stop` or systemd sends
    assert first.proc.wait(60) == 0, f"the worker did not exit cleanly (log: {first.log})"
    shutdown_seconds = time.monotonic() - stopping

    # It finished what it was running: nothing is left PROCESSING for a lease to rescue.
    after_stop = _statuses(stack, enterprise_id)
    assert after_stop["PROCESSING"] == 0, after_stop
    assert after_stop["SENT"] < NOTIFICATIONS, "the worker finished everything: not busy enough"

    restarted = time.monotonic()
    stack.start_worker()
    wait_for(
        lambda: _statuses(stack, enterprise_id)["SENT"] == NOTIFICATIONS,
        90,
        "every notification SENT",
    )
    drain_seconds = time.monotonic() - restarted

    accepted = Counter(event["transactionId"] for event in novu.get("/_emulator/events").json())
    stats = novu.get("/_emulator/stats").json()
    novu.close()
    assert set(accepted) == set(transaction_ids)
    assert max(accepted.values()) == 1
    # Not even a repeat for Novu to drop: no attempt was cut short.
    assert stats["duplicates"] == 0, stats
    with psycopg.connect(stack.postgres.url, connect_timeout=5) as conn:
        attempts = conn.execute(
            "SELECT max(attempts) FROM notify.ent_notification WHERE enterprise_id = %s",
            (enterprise_id,),
        ).fetchone()
    assert attempts == (1,), "an attempt was repeated"
    print(
        f"SIGTERM → exit {shutdown_seconds:.1f}s with {after_stop['SENT']} sent; "
        f"the next worker sent the other {NOTIFICATIONS - after_stop['SENT']} "
        f"in {drain_seconds:.1f}s"
    )
