"""Rule 1 of "never lost": with Redis down the API still accepts, at once, and the notification
is sent once Redis is back (beat publishes the rows the API could not)."""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Iterator
from typing import Any

import psutil
import pytest
from kombu.exceptions import OperationalError
from redis.exceptions import RedisError
from sqlalchemy import select

from shared.db.models import Notification
from shared.db.session import transaction
from tests.conftest import signup_payload, wait_for_status

# A worker that exits on kombu's restore bug (see _wait_until_worker_holds_nothing) is started
# again, as its supervisor does in production; the notifications must still be sent once.
pytestmark = [pytest.mark.integration, pytest.mark.worker_may_exit]

TRIGGERS = 5
# "Well under 2 s": a refused connection fails the publish at once; a Redis that hangs costs
# the publish's and the rate limiter's socket timeouts (0.5 s each).
DOWN_ANSWER_SECONDS = 0.5
HUNG_ANSWER_SECONDS = 1.5


def _trigger_timed(client: Any, tenant: Any) -> tuple[dict[str, Any], float]:
    started = time.monotonic()
    response = client.post(
        "/api/trigger",
        json={"workflowId": "user-signup", "payload": signup_payload()},
        headers=tenant.headers,
    )
    elapsed = time.monotonic() - started
    assert response.status_code == 202, response.text
    return response.json(), elapsed


def _wait_until_worker_holds_nothing(timeout: float = 60) -> None:
    """Wait until no worker holds a message (active, prefetched or waiting for its countdown).

    A Celery 5.7 / kombu 5.7 worker that held unacknowledged messages when Redis went away
    exited with "Unrecoverable error: AttributeError(... 'hostname')" while restoring them;
    worker/broker.py now keeps it alive (tests/integration/test_kombu_restore.py). These tests
    are about the API and beat during the outage, so they still start from a worker that holds
    nothing, and run it supervised (Worker.supervised), as production does.
    """
    from shared.queue import producer

    deadline = time.monotonic() + timeout
    held: dict[str, Any] = {}
    while time.monotonic() < deadline:
        inspect = producer().control.inspect(timeout=1.0)
        try:
            held = {
                kind: sum(len(tasks) for tasks in (answer or {}).values())
                for kind, answer in (
                    ("active", inspect.active()),
                    ("reserved", inspect.reserved()),
                    ("scheduled", inspect.scheduled()),
                )
            }
        except (RedisError, OperationalError) as exc:
            # A connection of the client's pool that the previous test's Redis restart closed.
            held = {"unknown": repr(exc)}
        else:
            if not any(held.values()):
                return
        time.sleep(0.5)
    raise AssertionError(f"the worker still holds messages after {timeout} s: {held}")


def _assert_sent_once(client: Any, tenant: Any, emulator: Any, accepted: list[Any]) -> None:
    for answer in accepted:
        row = wait_for_status(client, tenant, answer["notificationId"], {"SENT"}, timeout=60)
        assert row["transaction_id"] == answer["transactionId"]
        events = emulator.get("/_emulator/events", params={"transactionId": row["transaction_id"]})
        assert len(events.json()) == 1


def test_trigger_while_redis_is_down_is_accepted_at_once_and_sent_when_it_returns(
    client, tenant, worker, emulator, stack
):
    _wait_until_worker_holds_nothing()
    with worker.supervised():
        stack.redis.stop()
        try:
            timed = [_trigger_timed(client, tenant) for _ in range(TRIGGERS)]
            with transaction() as session:
                ids = [answer["notificationId"] for answer, _ in timed]
                statuses = session.scalars(
                    select(Notification.notification_status).where(Notification.id.in_(ids))
                ).all()
            # Recorded, not published: they wait in PostgreSQL for beat to publish them.
            assert [status.value for status in statuses] == ["PENDING"] * TRIGGERS
        finally:
            stack.redis.start()
        seconds = [elapsed for _, elapsed in timed]
        assert max(seconds) < DOWN_ANSWER_SECONDS, seconds
        _assert_sent_once(client, tenant, emulator, [answer for answer, _ in timed])
    print(f"202 with Redis down in {', '.join(f'{s * 1000:.0f} ms' for s in seconds)}")


@contextlib.contextmanager
def _redis_hung(stack: Any) -> Iterator[None]:
    """Redis frozen (SIGSTOP): connections open, nothing answers, as in a partition."""
    server = psutil.Process(int(stack.redis.pid_path.read_text()))
    server.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        server.send_signal(signal.SIGCONT)


def test_trigger_while_redis_hangs_is_accepted_within_its_timeouts_and_sent_after(
    client, tenant, worker, emulator, stack
):
    _trigger_timed(client, tenant)  # connections to Redis are open when it freezes
    _wait_until_worker_holds_nothing()
    with worker.supervised():
        with _redis_hung(stack):
            timed = [_trigger_timed(client, tenant) for _ in range(3)]
        seconds = [elapsed for _, elapsed in timed]
        assert max(seconds) < HUNG_ANSWER_SECONDS, seconds
        _assert_sent_once(client, tenant, emulator, [answer for answer, _ in timed])
    print(f"202 with Redis hung in {', '.join(f'{s * 1000:.0f} ms' for s in seconds)}")


def test_retry_that_cannot_be_published_is_released_by_beat_when_due(
    client, tenant, worker, emulator, stack
):
    from worker.tasks.deliver import deliver_batch

    _wait_until_worker_holds_nothing()
    with worker.supervised():
        stack.redis.stop()
        try:
            answer, _ = _trigger_timed(client, tenant)
            emulator.post("/_emulator/faults", json={"status": 500}).raise_for_status()
            # One attempt, run here: Novu fails it, and its countdown message cannot be published.
            report = deliver_batch(str(tenant.enterprise_id), [answer["notificationId"]])
            assert report["retried"] == 1
            with transaction() as session:
                row = session.scalars(
                    select(Notification).where(Notification.id == answer["notificationId"])
                ).one()
            assert (row.notification_status.value, row.attempts) == ("PENDING", 1)
            # Left for beat to release when due, not for the reconciler's redelivery much later.
            assert row.enqueued_at is None and row.next_attempt_at is not None
            emulator.delete("/_emulator/faults").raise_for_status()
        finally:
            stack.redis.start()
        _assert_sent_once(client, tenant, emulator, [answer])
