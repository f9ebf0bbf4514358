"""The trigger recorder (shared/notifications/recorder.py): triggers that arrive together share one
and each still gets its own row, its own answer, and the rules of a single trigger."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from sqlalchemy import func, select

from api.errors import api_error_of
from shared.db.models import Notification
from shared.db.session import transaction
from shared.errors import Unavailable
from shared.notifications.recorder import TriggerRecorder
from shared.notifications.repository import NewNotification, Recorded, RecordResult
from tests.conftest import Stack, Tenant, make_tenant, signup_payload


@pytest.fixture()
def recorder(stack: Stack) -> Iterator[TriggerRecorder]:
    recorder = TriggerRecorder(max_rows=500)
    yield recorder
    recorder.stop()


def _notification(**fields: Any) -> NewNotification:
    # A future schedule: nothing is published, so no worker takes part.
    values: dict[str, Any] = {
        "index": 0,
        "workflow_key": "user-signup",
        "payload": signup_payload(),
        "recipients": ["someone"],
        "scheduled_for": dt.datetime.now(dt.UTC) + dt.timedelta(days=1),
    }
    return NewNotification(**{**values, **fields})


async def _record_all(
    recorder: TriggerRecorder, enterprise_id: uuid.UUID, notifications: list[NewNotification]
) -> list[Recorded | BaseException]:
    return await asyncio.gather(
        *(recorder.record(enterprise_id, "test", n) for n in notifications),
        return_exceptions=True,
    )


def _rows(enterprise_id: uuid.UUID) -> dict[int, Notification]:
    with transaction() as session:
        rows = session.scalars(
            select(Notification).where(Notification.enterprise_id == enterprise_id)
        ).all()
    return {row.id: row for row in rows}


def test_concurrent_triggers_share_transactions_and_each_gets_its_own_row(
    recorder: TriggerRecorder, tenant: Tenant
) -> None:
    notifications = [_notification(payload=signup_payload(f"user-{i}")) for i in range(60)]
    results = asyncio.run(_record_all(recorder, tenant.enterprise_id, notifications))

    assert all(isinstance(r, Recorded) for r in results), results
    recorded = [r for r in results if isinstance(r, Recorded)]
    assert {r.result for r in recorded} == {RecordResult.CREATED}
    rows = _rows(tenant.enterprise_id)
    assert len({r.notification_id for r in recorded}) == 60 == len(rows)
    for notification, result in zip(notifications, recorded, strict=True):
        row = rows[result.notification_id]
        assert row.transaction_id == result.transaction_id
        assert row.payload == notification.payload  # each answer is its own request's row
    # Group commit: one transaction (one created_at) per batch, fewer batches than triggers.
    with transaction() as session:
        transactions = session.scalar(
            select(func.count(func.distinct(Notification.created_at))).where(
                Notification.enterprise_id == tenant.enterprise_id
            )
        )
    assert transactions == recorder.batches < 60


def test_an_idempotency_key_repeated_within_one_batch_is_one_notification(
    recorder: TriggerRecorder, tenant: Tenant
) -> None:
    same = _notification(idempotency_key="k-1", request_fingerprint="f-1")
    other_body = _notification(idempotency_key="k-1", request_fingerprint="f-2")
    results = asyncio.run(_record_all(recorder, tenant.enterprise_id, [same, same, other_body]))

    first, replay, conflict = (r for r in results if isinstance(r, Recorded))
    assert (first.result, replay.result, conflict.result) == (
        RecordResult.CREATED,
        RecordResult.REPLAYED,
        RecordResult.CONFLICT,
    )
    assert first.notification_id == replay.notification_id == conflict.notification_id
    assert len(_rows(tenant.enterprise_id)) == 1


def test_a_value_postgresql_refuses_fails_only_its_own_trigger(
    recorder: TriggerRecorder, tenant: Tenant
) -> None:
    # The endpoint refuses NUL characters before they reach the recorder; this one bypasses it
    # to show that a batch still isolates a statement failure to the notification causing it.
    good = [_notification(payload=signup_payload(f"good-{i}")) for i in range(5)]
    bad = _notification(payload={**signup_payload("bad"), "name": "nul\u0000"})
    results = asyncio.run(_record_all(recorder, tenant.enterprise_id, [*good[:3], bad, *good[3:]]))

    assert isinstance(results[3], psycopg.DataError)
    created = [r for r in results if isinstance(r, Recorded)]
    assert len(created) == 5
    assert {r.notification_id for r in created} == set(_rows(tenant.enterprise_id))


@contextlib.contextmanager
def _table_locked(stack: Stack) -> Iterator[threading.Event]:
    """Another transaction holds the notification table (so the next INSERT waits) until the
    yielded event is set, or the block ends."""
    locked = threading.Event()
    release = threading.Event()

    def hold_the_table() -> None:
        with psycopg.connect(stack.database_url) as conn:
            conn.execute("LOCK TABLE notify.ent_notification IN ACCESS EXCLUSIVE MODE")
            locked.set()
            release.wait(30)

    holder = threading.Thread(target=hold_the_table)
    holder.start()
    try:
        assert locked.wait(10)
        yield release
    finally:
        release.set()
        holder.join(10)


def test_a_trigger_the_recorder_cannot_take_in_time_is_a_503_and_never_recorded(
    stack: Stack, tenant: Tenant
) -> None:
    recorder = TriggerRecorder(max_rows=1, queue_timeout=0.5)
    try:
        with _table_locked(stack) as release:  # the first INSERT waits for the lock

            async def scenario() -> list[Recorded | BaseException]:
                first = asyncio.ensure_future(
                    recorder.record(tenant.enterprise_id, "test", _notification())
                )
                await asyncio.sleep(0.2)  # the recorder has taken it, and waits on the lock
                queued = [
                    asyncio.ensure_future(
                        recorder.record(tenant.enterprise_id, "test", _notification())
                    )
                    for _ in range(3)
                ]
                done = await asyncio.gather(*queued, return_exceptions=True)
                release.set()  # the taken one goes on, and is answered with its row
                return [await first, *done]

            first, *late = asyncio.run(scenario())
    finally:
        recorder.stop()

    assert isinstance(first, Recorded) and first.result is RecordResult.CREATED
    for error in late:
        assert isinstance(error, Unavailable), error
        answer = api_error_of(error)
        assert answer is not None and answer.status_code == 503, error
    assert set(_rows(tenant.enterprise_id)) == {first.notification_id}


def test_a_submission_not_taken_in_time_answers_each_trigger_unavailable_without_raising(
    stack: Stack, tenant: Tenant
) -> None:
    # A bulk request's submissions are awaited together: one that was not taken in time must
    # answer its own triggers (503 each) and leave the others' answers (recorded rows) intact.
    recorder = TriggerRecorder(max_rows=1, queue_timeout=0.5)
    try:
        with _table_locked(stack) as release:

            async def scenario() -> list[list[Any]]:
                first = asyncio.ensure_future(
                    recorder.record_all(tenant.enterprise_id, "test", [_notification()])
                )
                await asyncio.sleep(0.2)  # taken, and waiting on the lock
                late = asyncio.ensure_future(
                    recorder.record_all(tenant.enterprise_id, "test", [_notification()] * 2)
                )
                late_answers = await late
                release.set()
                return [await first, late_answers]

            taken, late = asyncio.run(scenario())
    finally:
        recorder.stop()

    assert len(taken) == 1 and isinstance(taken[0], Recorded)
    assert len(late) == 2 and all(isinstance(answer, Unavailable) for answer in late)
    assert set(_rows(tenant.enterprise_id)) == {taken[0].notification_id}


def _session_state(recorder: TriggerRecorder) -> tuple[str, str, str]:
    """The recorder connection's role, enterprise scope and transaction status between batches."""
    connection = recorder._connection._connection
    assert connection is not None
    row = connection.execute(
        "SELECT current_user, current_setting('xnovu.enterprise_id', true)"
    ).fetchone()
    assert row is not None
    return row[0], row[1] or "", connection.info.transaction_status.name


def test_a_batch_scope_ends_with_its_transaction(
    recorder: TriggerRecorder, tenant: Tenant, stack: Stack
) -> None:
    # Keyless batches are one implicit transaction (scope, INSERTs): the role and enterprise it
    # sets must not outlive it, or the next batch, another enterprise's, would start scoped.
    other = make_tenant()
    [mine] = asyncio.run(_record_all(recorder, tenant.enterprise_id, [_notification()]))
    assert isinstance(mine, Recorded)
    role, scope, status = _session_state(recorder)
    assert scope == "" and status == "IDLE"
    assert role != "xnovu_app"
    [theirs] = asyncio.run(_record_all(recorder, other.enterprise_id, [_notification()]))
    assert isinstance(theirs, Recorded)
    assert set(_rows(tenant.enterprise_id)) == {mine.notification_id}
    assert set(_rows(other.enterprise_id)) == {theirs.notification_id}


def test_a_lost_connection_fails_its_batch_and_the_next_batch_reconnects(
    recorder: TriggerRecorder, tenant: Tenant, stack: Stack
) -> None:
    # The keyless INSERT is prepared per connection: a new connection must prepare it again.
    [first] = asyncio.run(_record_all(recorder, tenant.enterprise_id, [_notification()]))
    assert isinstance(first, Recorded)
    connection = recorder._connection._connection
    assert connection is not None
    with psycopg.connect(stack.database_url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (connection.info.backend_pid,))
    [lost] = asyncio.run(_record_all(recorder, tenant.enterprise_id, [_notification()]))
    assert isinstance(lost, psycopg.OperationalError), lost
    answer = api_error_of(lost)
    assert answer is not None and answer.status_code == 503
    again = asyncio.run(_record_all(recorder, tenant.enterprise_id, [_notification()] * 3))
    assert all(isinstance(answer, Recorded) for answer in again), again
    assert recorder._connection._connection is not connection
    assert set(_rows(tenant.enterprise_id)) == {
        first.notification_id,
        *(a.notification_id for a in again if isinstance(a, Recorded)),
    }


def test_values_bound_into_the_batch_message_are_stored_as_sent(
    recorder: TriggerRecorder, tenant: Tenant
) -> None:
    # A keyless batch's parameters travel inside the SQL text as quoted literals: whatever a
    # tenant sends must come back byte for byte and never end the literal early.
    nasty = [
        "'); DELETE FROM notify.ent_notification; --",
        "back\\\\slash \\\\' and \\\\\\\\",
        "$$ dollar $tag$ ; semicolon",
        "E'\\\\x00' newline\nand tab\t",
        "ünïcödé ✉️ \U0001d518 (outside the BMP)",
    ]
    notifications = [
        _notification(payload={**signup_payload(f"n{i}"), "note": text}, tags=[text[:40]])
        for i, text in enumerate(nasty)
    ]
    results = asyncio.run(_record_all(recorder, tenant.enterprise_id, notifications))
    assert all(isinstance(r, Recorded) for r in results), results
    rows = _rows(tenant.enterprise_id)
    assert len(rows) == len(nasty)
    for result, text in zip(results, nasty, strict=True):
        assert isinstance(result, Recorded)
        row = rows[result.notification_id]
        assert row.payload["note"] == text and row.tags == [text[:40]]


def _scratch_writer(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, str]:
    """The process's task writer, pushing every message onto a list of its own that no worker
    consumes; and that list's name."""
    from shared.queue import RedisTaskWriter, producer

    scratch = f"xnovu.test.{uuid.uuid4().hex}"

    class Scratch(RedisTaskWriter):
        def send(self, messages: Any, **options: Any) -> Any:
            return super().send(messages, countdown=options.get("countdown"), queue=scratch)

    writer = Scratch(producer(), stack.redis_url)
    monkeypatch.setattr("shared.queue.task_writer", lambda: writer)
    return writer, scratch


def test_a_publish_answer_is_read_as_soon_as_nothing_waits_to_be_recorded(
    recorder: TriggerRecorder, tenant: Tenant, stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    import redis

    writer, scratch = _scratch_writer(stack, monkeypatch)
    [recorded] = asyncio.run(
        _record_all(recorder, tenant.enterprise_id, [_notification(scheduled_for=None)])
    )
    assert isinstance(recorded, Recorded)
    broker = redis.Redis.from_url(stack.redis_url)
    try:
        deadline = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=5)
        pool = writer._redis.connection_pool
        while (pool._in_use_connections or not pool._available_connections) and (
            dt.datetime.now(dt.UTC) < deadline
        ):
            threading.Event().wait(0.01)
        # The recorder sent the message, then, with nothing else to record, read its answer
        # and gave the connection back.
        assert not pool._in_use_connections and pool._available_connections
        assert broker.llen(scratch) == 1
    finally:
        broker.delete(scratch)
        broker.close()
    with transaction() as session:
        row = session.get(Notification, recorded.notification_id)
        assert row is not None and row.enqueued_at is not None  # published, not left for beat


def test_when_the_workers_are_behind_the_next_triggers_share_a_message(
    recorder: TriggerRecorder, tenant: Tenant, stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    import base64
    import json

    import redis

    from shared.notifications.recorder import BACKLOG_MESSAGES

    _, scratch = _scratch_writer(stack, monkeypatch)
    broker = redis.Redis.from_url(stack.redis_url)

    def spaced(count: int) -> list[int]:
        """`count` triggers, each sent 10 ms after the previous one was answered."""
        ids = []
        for _ in range(count):
            [recorded] = asyncio.run(
                _record_all(recorder, tenant.enterprise_id, [_notification(scheduled_for=None)])
            )
            assert isinstance(recorded, Recorded)
            ids.append(recorded.notification_id)
            threading.Event().wait(0.01)
        threading.Event().wait(0.1)  # the last one's publish
        return ids

    def messages_of(ids: list[int]) -> list[list[int]]:
        bodies = [json.loads(m) for m in broker.lrange(scratch, 0, -1)]
        found = []
        for body in bodies:
            if "body" in body:  # a message of the recorder's, not one put there to wait
                args = json.loads(base64.b64decode(body["body"]))[0]
                if set(args[1]) & set(ids):
                    found.append(args[1])
        return found

    try:
        # Messages no worker has taken: the first trigger's publish finds them waiting.
        broker.lpush(scratch, *[json.dumps({"waiting": n}) for n in range(BACKLOG_MESSAGES)])
        ids = spaced(4)
        shared = messages_of(ids)
        assert sorted(i for message in shared for i in message) == sorted(ids)
        assert len(shared) < len(ids), shared
        assert max(map(len, shared)) >= 2, shared
        # The workers caught up (the list is empty): each trigger is published at once again.
        broker.delete(scratch)
        spaced(1)  # its publish finds the list empty
        ids = spaced(3)
        assert sorted(messages_of(ids)) == sorted([i] for i in ids)
    finally:
        broker.delete(scratch)
        broker.close()
