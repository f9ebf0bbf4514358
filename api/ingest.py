"""Group commit for single triggers: the triggers that arrive together share one transaction.

Each `POST /api/trigger` used to pay for its own transaction (a commit is an fsync) and its own
Celery message. Here an API process hands every new notification to one recorder thread and
awaits the answer. The thread takes whatever has queued up (at most TRIGGER_BATCH_MAX_ROWS),
records each enterprise's share with the bulk trigger's single INSERT in one row-level-security
scoped transaction, commits, answers the waiting requests, and publishes their deliveries as
`deliver_batch` messages (see _Held: under load, a few batches share a message). Nothing waits
on a timer to form a batch: a lone trigger is recorded at once, and under load the batches grow
by themselves while the previous commit is in flight.

DESIGN's rules hold per notification exactly as before: the row is committed before its 202;
the message is published after the commit (if Redis is down, `enqueued_at` is cleared and beat
publishes it); a crash between commit and publish leaves a PENDING row the reconciler
republishes. A request whose client went away still has its row recorded, as any request whose
answer is lost (callers retry with an Idempotency-Key).

One event that PostgreSQL refuses must not fail the others it shares a statement with: the
endpoint refuses unstorable values before they get here, and a batch that still fails with a
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
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, cast

import psycopg
from psycopg.rows import namedtuple_row
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from api.errors import ApiError
from api.metrics import PUBLISHED_MESSAGES, RECORDED_BATCHES, RECORDED_ROWS
from shared.db.session import APP_ROLE, SCOPE_SQL, get_engine, transaction
from shared.notifications.bulk import BulkNotification, BulkRecorded, record_notifications
from shared.notifications.transitions import clear_enqueued
from shared.queue import publish_deliver_batch
from shared.settings import get_settings

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Waiting:
    """One notification to record and the request awaiting its outcome."""

    enterprise_id: uuid.UUID
    created_by: str
    notification: BulkNotification
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[BulkRecorded]
    taken: bool = False  # the recorder has it: its outcome will come
    abandoned: bool = False  # it waited too long to be taken: answered 503, never recorded


@dataclass(slots=True)
class _Group:
    """The notifications of one enterprise (and key) in a batch: one transaction."""

    enterprise_id: uuid.UUID
    created_by: str
    waiting: list[_Waiting] = field(default_factory=list)


# A notification's outcome: its row, or the error its request raises.
_Outcome = tuple[_Waiting, BulkRecorded | BaseException]

_STOP = None

# How long committed rows may wait, under load, for others to share their deliver_batch
# message; and how many ids make a message worth sending at once.
PUBLISH_MAX_DELAY_SECONDS = 0.005
PUBLISH_MAX_IDS = 500

# How long a trigger may wait for the recorder to take it: as long as a request waited for a
# pooled connection before (the pool's timeout), then 503.
QUEUE_TIMEOUT_SECONDS = 2.0


class TriggerRecorder:
    """The recorder thread of one API process (see the module's docstring)."""

    def __init__(self, max_rows: int, queue_timeout: float = QUEUE_TIMEOUT_SECONDS) -> None:
        self.max_rows = max_rows
        self.queue_timeout = queue_timeout
        self._queue: queue.SimpleQueue[_Waiting | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._lock = threading.Lock()
        self._connection = _Connection()
        self._held = _Held()
        self.batches = 0

    async def record(
        self, enterprise_id: uuid.UUID, created_by: str, notification: BulkNotification
    ) -> BulkRecorded:
        """Record one notification and return its committed row (its delivery is published
        right after); a database error is raised here, as it would be from the request's own
        transaction."""
        self._ensure_running()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[BulkRecorded] = loop.create_future()
        waiting = _Waiting(enterprise_id, created_by, notification, loop, future)
        self._queue.put(waiting)
        expiry = loop.call_later(self.queue_timeout, self._expire, waiting)
        try:
            return await future
        finally:
            expiry.cancel()

    def _expire(self, waiting: _Waiting) -> None:
        """A notification still queued after `queue_timeout` (the database is slow or gone) is
        answered 503 and will never be recorded; one the recorder has taken waits for its
        outcome, whatever it is, so that a 503 always means "not recorded"."""
        with self._lock:
            if waiting.taken or waiting.future.done():
                return
            waiting.abandoned = True
        waiting.future.set_exception(
            ApiError(
                503,
                "database_unavailable",
                "the database is unavailable, try again",
                headers={"Retry-After": "2"},
            )
        )

    def _take(self, batch: list[_Waiting]) -> list[_Waiting]:
        """The batch's notifications that were not abandoned, now marked taken."""
        with self._lock:
            for waiting in batch:
                waiting.taken = not waiting.abandoned
        return [waiting for waiting in batch if waiting.taken]

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
            try:
                first = self._queue.get(timeout=self._held.wait_seconds())
            except queue.Empty:  # the held ids are due for publishing
                self._held.publish()
                continue
            if first is _STOP:
                self._held.publish()
                self._connection.close()
                return
            batch = [first]
            stopping = False
            while len(batch) < self.max_rows:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stopping = True
                    break
                batch.append(item)
            batch = self._take(batch)
            try:
                outcomes = self._record_batch(batch)
            except Exception as exc:  # a bug must not end the thread: fail this batch only
                log.exception("recording a batch of %d triggers failed", len(batch))
                outcomes = [(waiting, exc) for waiting in batch]
            _answer_all(outcomes)
            if stopping or self._queue.empty() or self._held.due():
                self._held.publish()
            if stopping:
                self._connection.close()
                return

    def _record_batch(self, batch: Sequence[_Waiting]) -> list[_Outcome]:
        groups: dict[tuple[uuid.UUID, str], _Group] = {}
        for waiting in batch:
            key = (waiting.enterprise_id, waiting.created_by)
            if key not in groups:
                groups[key] = _Group(waiting.enterprise_id, waiting.created_by)
            groups[key].waiting.append(waiting)
        self.batches += 1
        RECORDED_BATCHES.inc()
        outcomes: list[_Outcome] = []
        for group in groups.values():
            outcomes.extend(self._record_group(group))
        return outcomes

    def _record_group(self, group: _Group) -> list[_Outcome]:
        try:
            recorded = self._connection.record(group.enterprise_id, group.created_by, group.waiting)
        except (psycopg.OperationalError, SQLAlchemyError) as exc:
            # The database is unavailable (or the pool could not connect): a 503 for each.
            return [(waiting, exc) for waiting in group.waiting]
        except psycopg.Error as exc:
            if len(group.waiting) == 1:
                return [(group.waiting[0], exc)]
            # Something in one notification was refused: record each on its own.
            log.warning(
                "a batch of %d triggers failed (%s); recording one by one", len(group.waiting), exc
            )
            return [
                outcome
                for waiting in group.waiting
                for outcome in self._record_group(
                    _Group(group.enterprise_id, group.created_by, [waiting])
                )
            ]
        self._held.add(group.enterprise_id, recorded)
        RECORDED_ROWS.inc(len(recorded))
        return list(zip(group.waiting, recorded, strict=True))


class _Connection:
    """The recorder's own PostgreSQL connection: one thread records every batch, so it needs
    no pool, and a plain psycopg connection costs a fraction of an ORM session per batch. It is
    opened through the process's engine (same URL, timeouts, statement_timeout) and dropped
    after any error, to be opened again for the next batch."""

    def __init__(self) -> None:
        self._connection: psycopg.Connection[Any] | None = None

    def record(
        self, enterprise_id: uuid.UUID, created_by: str, waiting: Sequence[_Waiting]
    ) -> list[BulkRecorded]:
        """One transaction of one enterprise's notifications, committed, rows in the order
        given. BEGIN, the row-level-security scope and the INSERT go in one round trip
        (pipeline mode), the COMMIT in a second."""
        connection = self._open()
        try:
            with connection.transaction():
                connection.execute(SCOPE_SQL, (APP_ROLE, str(enterprise_id)))
                cursor = connection.cursor(row_factory=namedtuple_row)

                def execute(sql: str, parameters: dict[str, Any]) -> Sequence[Any]:
                    return cursor.execute(sql, parameters).fetchall()

                # Results come back in the order given, one per notification.
                return record_notifications(
                    execute,
                    enterprise_id=enterprise_id,
                    notifications=[w.notification for w in waiting],
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
            # The INSERT's generic plan is as good as a custom one (it reads no table to
            # choose): let PostgreSQL reuse it rather than plan every batch.
            connection.execute("SET plan_cache_mode = auto")
            connection.commit()
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
    them after REDELIVER_AFTER_SECONDS, as any message lost on its way to Redis."""

    def __init__(self) -> None:
        self._ids: dict[uuid.UUID, list[int]] = {}
        self._count = 0
        self._since = 0.0

    def add(self, enterprise_id: uuid.UUID, recorded: Sequence[BulkRecorded]) -> None:
        due = [row.notification_id for row in recorded if row.publish]
        if not due:
            return
        if not self._count:
            self._since = time.monotonic()
        self._ids.setdefault(enterprise_id, []).extend(due)
        self._count += len(due)

    def due(self) -> bool:
        return self._count >= PUBLISH_MAX_IDS or (
            self._count > 0 and time.monotonic() - self._since >= PUBLISH_MAX_DELAY_SECONDS
        )

    def wait_seconds(self) -> float | None:
        """How long the recorder may wait for the next trigger before publishing."""
        if not self._count:
            return None
        return max(0.0, self._since + PUBLISH_MAX_DELAY_SECONDS - time.monotonic())

    def publish(self) -> None:
        held, self._ids, self._count = self._ids, {}, 0
        for enterprise_id, ids in held.items():
            _publish(enterprise_id, ids)


def _publish(enterprise_id: uuid.UUID, due: list[int]) -> None:
    """One deliver_batch message for these rows; when Redis refuses it, the rows are left for
    beat (enqueued_at cleared), as a single trigger's would be."""
    PUBLISHED_MESSAGES.inc()
    failed = publish_deliver_batch(enterprise_id, due)
    if not failed:
        return
    try:
        with transaction(enterprise_id) as session:
            clear_enqueued(session, notification_ids=failed)
    except DBAPIError as exc:
        # Then the reconciler republishes them once enqueued_at is older than
        # REDELIVER_AFTER_SECONDS; they are recorded either way.
        log.warning("could not mark %d unpublished rows: %s", len(failed), exc)


def _answer_all(outcomes: Sequence[_Outcome]) -> None:
    """Wake the requests awaiting these outcomes, from the recorder thread: one call into each
    event loop for the whole batch (each call wakes the loop through its self-pipe)."""
    by_loop: dict[asyncio.AbstractEventLoop, list[_Outcome]] = {}
    for outcome in outcomes:
        by_loop.setdefault(outcome[0].loop, []).append(outcome)
    for loop, settled in by_loop.items():
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            loop.call_soon_threadsafe(_settle, settled)


def _settle(outcomes: Sequence[_Outcome]) -> None:
    """On the requests' loop: each future gets its row or its error."""
    for waiting, outcome in outcomes:
        if waiting.future.done():  # the request was cancelled (its client went away)
            continue
        if isinstance(outcome, BulkRecorded):
            waiting.future.set_result(outcome)
        else:
            waiting.future.set_exception(outcome)


@lru_cache(maxsize=1)
def trigger_recorder() -> TriggerRecorder:
    """The process's recorder."""
    return TriggerRecorder(get_settings().trigger_batch_max_rows)
