"""Group commit: the triggers that arrive together, single or bulk, share one transaction.

A commit is an fsync, and a Celery message a round trip to Redis, so an API process does not
pay for them per trigger. Intake hands every checked trigger to the process's one recorder
thread and awaits the answer. The thread takes whatever has queued up (at least one
submission, up to TRIGGER_BATCH_MAX_ROWS rows), records each enterprise's share with one
INSERT in one row-level-security scoped transaction, commits, answers the waiting requests, and
publishes their deliveries as deliver_batch messages (see _Held: under load, a few batches
share a message). Nothing waits on a timer to form a batch: a lone trigger is recorded at once,
and under load the batches grow by themselves while the previous commit is in flight. A bulk
request is one submission, recorded in the same batch as whatever else waits.

The guarantees hold per notification (docs/architecture.md, guarantees 1 and 6): the row is
committed before its 202; the message is published after the commit (if Redis is down,
`enqueued_at` is cleared and beat publishes it); a crash between commit and publish leaves a
PENDING row the reconciler republishes. A request whose client went away still has its row
recorded, as any request whose answer is lost (callers retry with an Idempotency-Key).

One trigger that PostgreSQL refuses must not fail the others it shares a statement with:
intake refuses unstorable values before they get here, and a group that still fails with a
data error is recorded again one notification per transaction, so that only the bad one fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import queue
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, cast

import psycopg
from psycopg.rows import namedtuple_row
from sqlalchemy.exc import SQLAlchemyError

from shared import logs
from shared.db.session import SCOPE_SQL, get_engine, scope_parameters, scoped_message
from shared.errors import Unavailable
from shared.notifications.publisher import start_publishing
from shared.notifications.repository import (
    INSERT_SQL,
    NewNotification,
    Recorded,
    RecordResult,
    insert_pending,
    keyless_insert,
)
from shared.queue import pushed_queue_length
from shared.settings import get_settings

log = logging.getLogger(__name__)

# One trigger's answer: its row, or the error its request answers with.
Answer = Recorded | BaseException


@dataclass(slots=True)
class _Submission:
    """Triggers of one enterprise (and caller) to record, and the request awaiting them."""

    enterprise_id: uuid.UUID
    created_by: str
    notifications: Sequence[NewNotification]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[list[Answer]]
    request_id: str | None  # for the lines this thread logs about the request's notifications
    taken: bool = False  # the recorder has it: its answers will come
    abandoned: bool = False  # it waited too long to be taken: answered 503, never recorded


# A submission and its answers, one per notification.
_Settlement = tuple[_Submission, list[Answer]]

_STOP = None

# How long committed rows may wait, under load, for others to share their deliver_batch
# message; and how many ids make a message worth sending at once.
PUBLISH_MAX_DELAY_SECONDS = 0.005
PUBLISH_MAX_IDS = 500
# When the last publish found the workers behind (the delivery list held at least
# BACKLOG_MESSAGES messages, its own included), rows are held up to BACKLOG_DELAY_SECONDS
# even with no trigger waiting, so that the triggers of the next milliseconds share their
# message: a message would wait behind the others anyway, and the workers take fewer, larger
# messages, at a fraction of the CPU per notification (docs/performance.md).
BACKLOG_MESSAGES = 3
BACKLOG_DELAY_SECONDS = 0.02

# How long a trigger may wait for the recorder to take it: as long as a request waited for a
# pooled connection before (the pool's timeout), then 503.
QUEUE_TIMEOUT_SECONDS = 2.0


class TriggerRecorder:
    """The recorder thread of one API process (see the module's docstring)."""

    def __init__(self, max_rows: int, queue_timeout: float = QUEUE_TIMEOUT_SECONDS) -> None:
        self.max_rows = max_rows
        self.queue_timeout = queue_timeout
        self._queue: queue.SimpleQueue[_Submission | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._lock = threading.Lock()
        self._connection = _Connection()
        self._held = _Held()
        # Counters for /metrics: transactions, rows committed, deliver_batch messages.
        self.batches = 0
        self.rows = 0

    @property
    def messages(self) -> int:
        return self._held.messages

    async def record(
        self, enterprise_id: uuid.UUID, created_by: str, notification: NewNotification
    ) -> Recorded:
        """Record one notification and return its committed row; its error is raised."""
        [answer] = await self.record_all(enterprise_id, created_by, [notification])
        if isinstance(answer, BaseException):
            raise answer
        return answer

    async def record_all(
        self,
        enterprise_id: uuid.UUID,
        created_by: str,
        notifications: Sequence[NewNotification],
    ) -> list[Answer]:
        """Record notifications of one enterprise and answer each with its committed row (its
        delivery is published right after) or the error its request answers with: a database
        error as it would be raised by the request's own transaction, or Unavailable when the
        recorder could not take them in time (then none was recorded)."""
        self._ensure_running()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[Answer]] = loop.create_future()
        submission = _Submission(
            enterprise_id, created_by, notifications, loop, future, logs.REQUEST_ID.get()
        )
        self._queue.put(submission)
        expiry = loop.call_later(self.queue_timeout, self._expire, submission)
        try:
            return await future
        except Unavailable as exc:  # not taken in time: none of them was recorded
            return [exc] * len(notifications)
        finally:
            expiry.cancel()

    def _expire(self, submission: _Submission) -> None:
        """A submission still queued after `queue_timeout` (the database is slow or gone) is
        answered 503 and will never be recorded; one the recorder has taken waits for its
        answers, whatever they are, so that a 503 always means "not recorded"."""
        with self._lock:
            if submission.taken or submission.future.done():
                return
            submission.abandoned = True
        submission.future.set_exception(
            Unavailable("database_unavailable", "the database is unavailable, try again")
        )

    def _take(self, batch: list[_Submission]) -> list[_Submission]:
        """The batch's submissions that were not abandoned, now marked taken."""
        with self._lock:
            for submission in batch:
                submission.taken = not submission.abandoned
        return [submission for submission in batch if submission.taken]

    def stop(self, timeout: float = 10.0) -> None:
        """Record what is queued, then end the thread (the app's shutdown)."""
        thread = self._thread
        if thread is None or not thread.is_alive():
            return
        self._queue.put(_STOP)
        thread.join(timeout)

    def _ensure_running(self) -> None:
        pid = os.getpid()
        if self._thread is not None and self._pid == pid and self._thread.is_alive():
            return
        with self._lock:
            if self._thread is None or self._pid != pid or not self._thread.is_alive():
                self._pid = pid
                self._thread = threading.Thread(
                    target=self._run, name="xnovu-trigger-recorder", daemon=True
                )
                self._thread.start()

    def _run(self) -> None:
        while True:
            if self._held.unanswered and self._queue.empty():
                self._held.answers()  # nothing to record meanwhile: read the broker's answer
            try:
                first = self._queue.get(timeout=self._held.wait_seconds())
            except queue.Empty:  # the held ids are due for publishing
                self._held.publish()
                continue
            if first is _STOP:
                break
            batch, stopping = self._gather(first)
            batch = self._take(batch)
            try:
                settled = self._record_batch(batch)
            except Exception as exc:  # a bug must not end the thread: fail this batch only
                log.exception("recording a batch of %d submissions failed", len(batch))
                settled = [(s, [exc] * len(s.notifications)) for s in batch]
            if log.isEnabledFor(logging.INFO):
                _log_accepted(settled)
            _answer_all(settled)
            if stopping:
                break
            if self._held.due() or (self._queue.empty() and not self._held.backlogged):
                self._held.publish()
        self._held.publish()
        self._held.answers()
        self._connection.close()

    def _gather(self, first: _Submission) -> tuple[list[_Submission], bool]:
        """`first` and whatever else waits, up to max_rows rows; and whether a stop came."""
        batch = [first]
        rows = len(first.notifications)
        while rows < self.max_rows:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is _STOP:
                return batch, True
            batch.append(item)
            rows += len(item.notifications)
        return batch, False

    def _record_batch(self, batch: Sequence[_Submission]) -> list[_Settlement]:
        groups: dict[tuple[uuid.UUID, str], list[_Submission]] = {}
        for submission in batch:
            groups.setdefault((submission.enterprise_id, submission.created_by), []).append(
                submission
            )
        self.batches += 1
        settled: list[_Settlement] = []
        for (enterprise_id, created_by), submissions in groups.items():
            notifications = [n for s in submissions for n in s.notifications]
            answers = self._record_group(enterprise_id, created_by, notifications)
            start = 0
            for submission in submissions:
                end = start + len(submission.notifications)
                settled.append((submission, answers[start:end]))
                start = end
        return settled

    def _record_group(
        self, enterprise_id: uuid.UUID, created_by: str, notifications: list[NewNotification]
    ) -> list[Answer]:
        """One transaction of one enterprise's notifications; an answer for each."""
        try:
            recorded = self._connection.record(enterprise_id, created_by, notifications)
        except (psycopg.OperationalError, SQLAlchemyError) as exc:
            # The database is unavailable (or the pool could not connect): a 503 for each.
            return [exc] * len(notifications)
        except psycopg.Error as exc:
            if len(notifications) == 1:
                return [exc]
            # Something in one notification was refused: record each on its own.
            log.warning(
                "a batch of %d triggers failed (%s); recording one by one", len(notifications), exc
            )
            return [
                answer
                for notification in notifications
                for answer in self._record_group(enterprise_id, created_by, [notification])
            ]
        self._held.add(enterprise_id, recorded)
        self.rows += len(recorded)
        return list(recorded)


# A batch without idempotency keys is one simple-query message (_insert_keyless): the scope,
# then its INSERTs through a statement prepared once per connection, so that PostgreSQL plans
# the INSERT once and parses only the EXECUTE of each batch.
PREPARED_INSERT = "xnovu_insert_pending"
_PREPARE_KEYLESS = f"PREPARE {PREPARED_INSERT} (uuid, text, text) AS " + INSERT_SQL.replace(
    "%(enterprise_id)s", "$1"
).replace("%(created_by)s", "$2").replace("%(rows)s", "$3")
_KEYLESS_INSERT = "EXECUTE {name} (%(enterprise_id_{n})s, %(created_by_{n})s, %(rows_{n})s)"
if "%(" in _PREPARE_KEYLESS:  # INSERT_SQL grew a parameter the prepared statement lacks
    raise RuntimeError("INSERT_SQL's parameters changed: update _PREPARE_KEYLESS")


def _keyless_statement(n: int, *, prepared: bool) -> str:
    """The n-th INSERT of a keyless message: the prepared statement's EXECUTE, or (behind a
    transaction pooler, where a session's prepared statement is not ours) the INSERT itself."""
    if prepared:
        return _KEYLESS_INSERT.format(name=PREPARED_INSERT, n=n)
    return (
        INSERT_SQL.replace("%(enterprise_id)s", f"%(enterprise_id_{n})s")
        .replace("%(created_by)s", f"%(created_by_{n})s")
        .replace("%(rows)s", f"%(rows_{n})s")
    )


def _insert_keyless(
    connection: psycopg.Connection[Any],
    enterprise_id: uuid.UUID,
    statements: Sequence[dict[str, Any]],
    *,
    prepared: bool = True,
) -> list[list[Any]]:
    """The scope and the INSERTs (KeylessInsert.statements) as one message, one transaction
    and one round trip (shared/db/session.py, `scoped_message`); each INSERT's rows. Through
    psycopg's pipeline mode, BEGIN, the scope, the INSERT and COMMIT were one round trip too,
    but each statement its own send: 33 system calls per batch against 4 now (strace), each one
    letting go of the GIL, and about twice this function's CPU (docs/performance.md)."""
    parameters = {
        f"{key}_{n}": value
        for n, statement in enumerate(statements)
        for key, value in statement.items()
    }
    inserts = [_keyless_statement(n, prepared=prepared) for n in range(len(statements))]
    return scoped_message(
        connection, enterprise_id, inserts, parameters, row_factory=namedtuple_row
    )


class _Connection:
    """The recorder's own PostgreSQL connection: one thread records every batch, so it needs
    no pool, and a plain psycopg connection costs a fraction of an ORM session per batch. It is
    opened through the process's engine (same URL, timeouts, statement_timeout) and dropped
    after any error, to be opened again for the next batch."""

    def __init__(self) -> None:
        self._connection: psycopg.Connection[Any] | None = None
        # A session of our own to keep a prepared statement in (not behind a transaction
        # pooler, where each transaction may run in another server session).
        self._prepared = not get_settings().db_transaction_pooler

    def record(
        self,
        enterprise_id: uuid.UUID,
        created_by: str,
        notifications: Sequence[NewNotification],
    ) -> list[Recorded]:
        """One transaction of one enterprise's notifications, committed, rows in the order
        given."""
        connection = self._open()
        try:
            keyless = keyless_insert(enterprise_id, notifications, created_by)
            if keyless is not None:
                return keyless.recorded(
                    _insert_keyless(
                        connection, enterprise_id, keyless.statements, prepared=self._prepared
                    )
                )
            with connection.transaction():
                connection.execute(SCOPE_SQL, scope_parameters(enterprise_id))
                cursor = connection.cursor(row_factory=namedtuple_row)

                def execute(sql: str, parameters: dict[str, Any]) -> Sequence[Any]:
                    return cursor.execute(sql, parameters).fetchall()

                return insert_pending(
                    execute,
                    enterprise_id=enterprise_id,
                    notifications=notifications,
                    created_by=created_by,
                )
        except psycopg.Error:
            if connection.broken or connection.closed:
                self.close()
            raise

    def _open(self) -> psycopg.Connection[Any]:
        if self._connection is None or self._connection.closed:
            fairy = get_engine().raw_connection()
            fairy.detach()  # this thread's own, never returned to the pool
            connection = cast("psycopg.Connection[Any]", fairy.dbapi_connection)
            if self._prepared:
                # The INSERT's generic plan is as good as a custom one (it reads no table to
                # choose): let PostgreSQL reuse it rather than plan every batch.
                connection.execute("SET plan_cache_mode = auto")
                connection.execute(_PREPARE_KEYLESS)
                connection.commit()
            # Transactions are explicit: `transaction()` blocks, or _insert_keyless's one
            # implicit transaction.
            connection.autocommit = True
            self._connection = connection
        return self._connection

    def close(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(Exception):
                self._connection.close()
            self._connection = None


class _Held:
    """Committed, due rows whose deliveries are not published yet: the recorder answers a
    batch first and publishes after. When no trigger is waiting it publishes at once; under
    load it lets the ids of a few batches gather, up to PUBLISH_MAX_DELAY_SECONDS or
    PUBLISH_MAX_IDS, into one deliver_batch message per enterprise. A crash in between loses
    no notification: the rows are committed with `enqueued_at`, and the reconciler republishes
    them after REDELIVER_AFTER_SECONDS, as any message lost on its way to Redis.

    A publish is sent, and its answer read at the next publish or when the recorder has nothing
    to record (`answers`): waiting for it, with the CPU busy, took 1 to 2 ms of each batch's
    5, during which the next batch waited (docs/performance.md). A publish Redis refused
    leaves its rows for beat then, as before."""

    def __init__(self) -> None:
        self._ids: dict[uuid.UUID, list[int]] = {}
        self._count = 0
        self._since = 0.0
        self._answer: Callable[[], int] | None = None
        self.messages = 0
        # The last answered publish found the workers behind (BACKLOG_MESSAGES).
        self.backlogged = False

    def add(self, enterprise_id: uuid.UUID, recorded: Sequence[Recorded]) -> None:
        due = [row.notification_id for row in recorded if row.publish]
        if not due:
            return
        if not self._count:
            self._since = time.monotonic()
        self._ids.setdefault(enterprise_id, []).extend(due)
        self._count += len(due)

    def _delay(self) -> float:
        return BACKLOG_DELAY_SECONDS if self.backlogged else PUBLISH_MAX_DELAY_SECONDS

    def due(self) -> bool:
        return self._count >= PUBLISH_MAX_IDS or (
            self._count > 0 and time.monotonic() - self._since >= self._delay()
        )

    def wait_seconds(self) -> float | None:
        """How long the recorder may wait for the next trigger before publishing."""
        if not self._count:
            return None
        return max(0.0, self._since + self._delay() - time.monotonic())

    @property
    def unanswered(self) -> bool:
        """A publish was sent whose answer is not read yet."""
        return self._answer is not None

    def publish(self) -> None:
        """Send the held rows' deliver_batch messages, after reading the previous answer."""
        self.answers()
        held, self._ids, self._count = self._ids, {}, 0
        if held:
            self.messages += len(held)
            self._answer = start_publishing(held)

    def answers(self) -> None:
        """Read the last publish's answer (its failed rows are left for beat), and from it
        whether the workers are behind."""
        answer, self._answer = self._answer, None
        if answer is not None:
            answer()
            length = pushed_queue_length()
            self.backlogged = length is not None and length >= BACKLOG_MESSAGES


def _log_accepted(settled: Sequence[_Settlement]) -> None:
    """A line per notification recorded (or replayed by its key), naming it and its request:
    what `grep <notification id>` finds first (shared/logs.py). The batch's lines are one write,
    made before its requests are answered (logs.one_write)."""
    with logs.one_write():
        for submission, answers in settled:
            for answer in answers:
                if isinstance(answer, Recorded) and answer.result is not RecordResult.CONFLICT:
                    log_accepted(
                        log,
                        submission.enterprise_id,
                        answer.notification_id,
                        answer.transaction_id,
                        answer.workflow_key,
                        replayed=answer.result is RecordResult.REPLAYED,
                        request_id=submission.request_id,
                    )


def log_accepted(
    logger: logging.Logger,
    enterprise_id: uuid.UUID,
    notification_id: int,
    transaction_id: str,
    workflow_key: str,
    *,
    replayed: bool,
    request_id: str | None = None,
) -> None:
    """The `notification accepted` line, wherever a trigger is accepted (here for the rows
    this thread records, in intake for a trigger naming a stored notification). Without
    `request_id`, the line gets the current request's (shared/logs.py)."""
    fields: dict[str, Any] = {
        "enterprise_id": str(enterprise_id),
        "notification_id": notification_id,
        "transaction_id": transaction_id,
        "workflow_id": workflow_key,
        "replayed": replayed,
    }
    if request_id is not None:
        fields["request_id"] = request_id
    logs.info(logger, "notification accepted", fields)


def _answer_all(settled: Sequence[_Settlement]) -> None:
    """Wake the requests awaiting these answers, from the recorder thread: one call into each
    event loop for the whole batch (each call wakes the loop through its self-pipe)."""
    by_loop: dict[asyncio.AbstractEventLoop, list[_Settlement]] = {}
    for item in settled:
        by_loop.setdefault(item[0].loop, []).append(item)
    for loop, items in by_loop.items():
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            loop.call_soon_threadsafe(_settle, items)


def _settle(settled: Sequence[_Settlement]) -> None:
    """On the requests' loop: each future gets its answers."""
    for submission, answers in settled:
        if not submission.future.done():  # done: the request was cancelled (client went away)
            submission.future.set_result(answers)


@lru_cache(maxsize=1)
def trigger_recorder() -> TriggerRecorder:
    """The process's recorder."""
    return TriggerRecorder(get_settings().trigger_batch_max_rows)
