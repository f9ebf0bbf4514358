"""The delivery engine: one attempt of 1..N notifications of one enterprise.

claim → render → Novu trigger → record, for a lone notification and for a thousand
alike, keeping docs/architecture.md's guarantees 2 to 7, up to 100 rows per statement:

- claim: one `UPDATE … WHERE id IN (SELECT … FOR UPDATE SKIP LOCKED)` moves the due PENDING
  rows among the given ids to PROCESSING (attempt + 1, a lease) and commits. A row another
  worker holds, or that was cancelled, sent or is not due, is simply not claimed.
- render: every row on its own (`build_trigger_event`); a render failure fails that row only.
- send: a full hundred as one `POST /v1/events/trigger/bulk` (100 of Novu's rate-limit
  tokens), fewer as single `POST /v1/events/trigger` calls (1 token each), concurrently;
  every event with the transactionId fixed at insert, so a repeated send is dropped by Novu.
  Each event's result decides its row; a failure of a whole bulk call decides every row of
  it: retryable → the sub-batch is retried later, permanent → each event is sent alone, so
  that one bad event cannot fail the others.
- decide: one rule for every failure (`_failed_call`): permanent → FAILED with Novu's answer;
  retryable → PENDING with a capped, jittered backoff honouring Retry-After, or FAILED
  `attempts_exhausted` on the last attempt.
- record: one `UPDATE … FROM unnest(…)` writes every row's outcome (SENT, FAILED, or PENDING
  with next_attempt_at), each fenced by the attempt it claimed.

Novu's latency does not serialise the task: the sub-batches of one message are pipelined,
up to SENDS_IN_FLIGHT bulk calls in flight on a thread pool while the task thread claims and
renders the next sub-batch and records the finished ones; the single triggers of a sub-batch
under a hundred share the same pool.
"""

from __future__ import annotations

import logging
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from sqlalchemy import Connection

from shared.db.enums import NotificationStatus as S
from shared.db.session import connection, enterprise_transaction
from shared.notifications.novu_trigger import (
    PermanentDeliveryError,
    PreparedTrigger,
    attempt_idempotency_key,
    build_trigger_event,
)
from shared.notifications.repository import (
    AttemptOutcome,
    ClaimedRow,
    claim_due,
    record_outcomes,
)
from shared.novu.client import NovuClient, bulk_idempotency_key
from shared.novu.errors import NovuError, NovuPermanentError, NovuRetryableError, result_error
from shared.novu.retry import backoff_delay
from shared.novu.schemas import (
    BULK_TRIGGER_TOKENS,
    MAX_BULK_EVENTS,
    TRIGGER_TOKENS,
    TriggerEvent,
    TriggerResult,
)
from shared.settings import Settings
from shared.workflows.registry import get_registry

log = logging.getLogger(__name__)

# Rows claimed by one statement and sent by one Novu bulk call (when all of them are sent).
SUB_BATCH_SIZE = MAX_BULK_EVENTS
# Novu calls one task keeps in flight: sub-batches while it prepares the next one, or the
# single triggers of a sub-batch under a hundred.
SENDS_IN_FLIGHT = 4


@dataclass
class DeliveryReport:
    """Counts of one delivery task, and the retries to publish as countdown messages."""

    claimed: int = 0
    sent: int = 0
    failed: int = 0
    retried: int = 0
    skipped: int = 0
    lost_race: int = 0
    novu_calls: int = 0
    novu_tokens: int = 0  # what the calls cost in Novu's rate limit
    retries: list[tuple[float, list[int]]] = field(default_factory=list)

    def as_dict(self) -> dict[str, int]:
        return {
            "claimed": self.claimed,
            "sent": self.sent,
            "failed": self.failed,
            "retried": self.retried,
            "skipped": self.skipped,
            "lost_race": self.lost_race,
            "novu_calls": self.novu_calls,
            "novu_tokens": self.novu_tokens,
        }


CallResult = list[TriggerResult] | NovuError


@dataclass
class _Flight:
    """One claimed sub-batch: rows decided before any call, and its calls in flight: one bulk
    call, or one single trigger per row sent."""

    rows: list[ClaimedRow]
    prepared: dict[int, PreparedTrigger]
    decided: list[AttemptOutcome]
    bulk: Future[CallResult] | None = None
    singles: list[Future[CallResult]] = field(default_factory=list)


def deliver(
    enterprise_id: uuid.UUID,
    notification_ids: Sequence[int],
    *,
    novu: NovuClient,
    settings: Settings,
    executor: Executor,
) -> DeliveryReport:
    """Run one delivery attempt of each due PENDING row among the ids (one or many) and record
    the outcomes. Ids that are not due, claimed elsewhere, sent or cancelled are skipped.

    The ids are handled in sub-batches of SUB_BATCH_SIZE, each claimed and recorded by one
    statement; up to SENDS_IN_FLIGHT of their Novu calls run at once on `executor`. A message
    of one full sub-batch makes its bulk call on the task thread, and a lone notification its
    single trigger: there is nothing to overlap them with, and the hand-off to a pool thread
    and back would only add CPU and latency.

    Every statement of the batch runs on one pooled connection, checked out once.
    """
    report = DeliveryReport()
    window: deque[_Flight] = deque()
    ids = list(dict.fromkeys(notification_ids))  # a repeated id is claimed once anyway
    run: Executor | None = executor if len(ids) > SUB_BATCH_SIZE else None
    with connection() as conn:
        try:
            for start in range(0, len(ids), SUB_BATCH_SIZE):
                chunk = ids[start : start + SUB_BATCH_SIZE]
                flight = _launch(conn, enterprise_id, chunk, novu, settings, run, executor, report)
                if flight is not None:
                    window.append(flight)
                # Record finished calls as soon as they are back; block only when the window
                # is full.
                while window and (len(window) >= SENDS_IN_FLIGHT or _done(window[0])):
                    _land(conn, enterprise_id, window.popleft(), novu, settings, executor, report)
            while window:
                _land(conn, enterprise_id, window.popleft(), novu, settings, executor, report)
        except BaseException:
            # Failing half-way (the database went away, a time limit): still record what the
            # calls already in flight answered, if that can be done (after a disconnect the
            # connection reconnects); rows it cannot record stay PROCESSING until the
            # reconciler's lease check sends them again (Novu drops the repeats).
            while window:
                try:
                    _land(conn, enterprise_id, window.popleft(), novu, settings, executor, report)
                except Exception as exc:
                    log.warning("could not record a sub-batch of a failed batch: %s", exc)
            raise
    return report


def _done(flight: _Flight) -> bool:
    calls = [flight.bulk] if flight.bulk is not None else flight.singles
    return all(call.done() for call in calls)


def _launch(
    conn: Connection,
    enterprise_id: uuid.UUID,
    chunk: list[int],
    novu: NovuClient,
    settings: Settings,
    executor: Executor | None,
    pool: Executor,
    report: DeliveryReport,
) -> _Flight | None:
    """Claim a sub-batch, render it, and start its Novu calls: a bulk call on `executor` (or
    made here, already answered, when there is none), single triggers on `pool`; None when
    nothing was claimed."""
    with enterprise_transaction(conn, enterprise_id):
        rows, generation = claim_due(
            conn,
            enterprise_id=enterprise_id,
            notification_ids=chunk,
            lease_seconds=settings.processing_lease_seconds,
        )
    report.skipped += len(chunk) - len(rows)
    if not rows:
        return None
    report.claimed += len(rows)
    # A reload that happened before this claim is honoured by this very delivery.
    get_registry().observe_generation(enterprise_id, generation)

    prepared: dict[int, PreparedTrigger] = {}
    decided: list[AttemptOutcome] = []
    for row in rows:
        try:
            prepared[row.id] = build_trigger_event(row)
        except PermanentDeliveryError as exc:
            error = {"code": exc.code, "message": str(exc), "attempt": row.attempts}
            decided.append(AttemptOutcome(row.id, row.attempts, S.FAILED, error=error))
    flight = _Flight(rows=rows, prepared=prepared, decided=decided)
    to_send = [row for row in rows if row.id in prepared]
    if len(to_send) == SUB_BATCH_SIZE:
        events = [prepared[row.id].event for row in to_send]
        # Deterministic for this set of attempts, new for every retry.
        key = bulk_idempotency_key([f"{row.transaction_id}-{row.attempts}" for row in to_send])
        flight.bulk = _start(partial(novu.trigger_bulk, events, idempotency_key=key), executor)
        report.novu_calls += 1
        report.novu_tokens += BULK_TRIGGER_TOKENS
    elif to_send:
        # Fewer than a hundred cost fewer tokens as single triggers. A lone one is sent from the
        # task thread: a hand-off to a pool thread and back would only add CPU and latency.
        flight.singles = _send_singles(to_send, prepared, novu, pool if len(to_send) > 1 else None)
        report.novu_calls += len(to_send)
        report.novu_tokens += len(to_send) * TRIGGER_TOKENS
    return flight


def _start(
    send: Callable[[], list[TriggerResult]], executor: Executor | None
) -> Future[CallResult]:
    """A Novu call on `executor`, or made here (already answered) when there is none."""
    if executor is not None:
        return executor.submit(_call, send)
    done: Future[CallResult] = Future()
    done.set_result(_call(send))
    return done


def _send_singles(
    rows: Sequence[ClaimedRow],
    prepared: dict[int, PreparedTrigger],
    novu: NovuClient,
    executor: Executor | None,
) -> list[Future[CallResult]]:
    """One single trigger per row, each with its attempt's Idempotency-Key."""
    calls = []
    for row in rows:
        key = attempt_idempotency_key(row.transaction_id, row.attempts)
        calls.append(_start(partial(_trigger_one, novu, prepared[row.id].event, key), executor))
    return calls


def _call(send: Callable[[], list[TriggerResult]]) -> CallResult:
    """Run a Novu call on a pool thread; its error is returned, to be decided by the task."""
    try:
        return send()
    except NovuError as exc:
        return exc


def _land(
    conn: Connection,
    enterprise_id: uuid.UUID,
    flight: _Flight,
    novu: NovuClient,
    settings: Settings,
    executor: Executor,
    report: DeliveryReport,
) -> None:
    """Wait for a sub-batch's call, decide each row, and record them all in one statement."""
    outcomes = list(flight.decided)
    sent_rows = [row for row in flight.rows if row.id in flight.prepared]
    if flight.bulk is not None:
        result = flight.bulk.result()
        if isinstance(result, NovuPermanentError):
            outcomes.extend(_one_by_one(sent_rows, flight, novu, settings, executor, report))
        elif isinstance(result, NovuError):
            outcomes.extend(_failed_call(sent_rows, result, settings))
        else:
            for row, event_result in zip(sent_rows, result, strict=True):
                outcomes.append(_event_outcome(row, flight.prepared[row.id], event_result))
    else:
        outcomes.extend(_single_outcomes(sent_rows, flight.singles, flight, settings))

    with enterprise_transaction(conn, enterprise_id):
        moved = record_outcomes(conn, enterprise_id=enterprise_id, outcomes=outcomes)
    retry_groups: dict[float, list[int]] = {}
    for outcome in outcomes:
        if outcome.notification_id not in moved:
            report.lost_race += 1
        elif outcome.status is S.SENT:
            report.sent += 1
        elif outcome.status is S.FAILED:
            report.failed += 1
            log.warning("notification %s failed: %s", outcome.notification_id, outcome.error)
        else:
            report.retried += 1
            if outcome.by_message and outcome.retry_in is not None:
                retry_groups.setdefault(outcome.retry_in, []).append(outcome.notification_id)
    report.retries.extend(retry_groups.items())


def _event_outcome(
    row: ClaimedRow, prepared: PreparedTrigger, result: TriggerResult
) -> AttemptOutcome:
    """SENT when Novu processed the event; FAILED with Novu's answer when it did not."""
    error = result_error(result)
    if error is None:
        return AttemptOutcome(
            row.id, row.attempts, S.SENT, render_fallbacks=prepared.render_fallbacks or None
        )
    return AttemptOutcome(
        row.id, row.attempts, S.FAILED, error=_novu_error("novu_rejected", error, row.attempts)
    )


def _failed_call(
    rows: Sequence[ClaimedRow], exc: NovuError, settings: Settings
) -> list[AttemptOutcome]:
    """The one retry decision: every row of a Novu call that failed as a whole is FAILED when
    the error is permanent or the row is on its last attempt, otherwise back to PENDING with
    one backoff delay for the whole call. Retries sooner than MAX_COUNTDOWN_SECONDS ride a
    countdown message; later ones wait in the database for beat."""
    if isinstance(exc, NovuPermanentError):
        return [
            AttemptOutcome(
                row.id, row.attempts, S.FAILED, _novu_error("novu_rejected", exc, row.attempts)
            )
            for row in rows
        ]
    assert isinstance(exc, NovuRetryableError)
    delay = backoff_delay(
        max(row.attempts for row in rows),
        base=settings.retry_base_seconds,
        cap=settings.retry_max_seconds,
        retry_after=exc.retry_after,
    )
    by_message = delay <= settings.max_countdown_seconds
    outcomes = []
    for row in rows:
        error = _novu_error("novu_unavailable", exc, row.attempts)
        if row.attempts >= settings.delivery_max_attempts:
            error["code"] = "attempts_exhausted"
            outcomes.append(AttemptOutcome(row.id, row.attempts, S.FAILED, error=error))
        else:
            outcomes.append(
                AttemptOutcome(
                    row.id,
                    row.attempts,
                    S.PENDING,
                    error=error,
                    retry_in=delay,
                    by_message=by_message,
                )
            )
    log.info("batch of %d: retry in %.1fs: %s", len(rows), delay, exc)
    return outcomes


def _one_by_one(
    rows: Sequence[ClaimedRow],
    flight: _Flight,
    novu: NovuClient,
    settings: Settings,
    executor: Executor,
    report: DeliveryReport,
) -> list[AttemptOutcome]:
    """Novu refused the bulk call as a whole (one event too large, say): send each event on
    its own, so that each row gets its own answer."""
    calls = _send_singles(rows, flight.prepared, novu, executor)
    report.novu_calls += len(calls)
    report.novu_tokens += len(calls) * TRIGGER_TOKENS
    return _single_outcomes(rows, calls, flight, settings)


def _single_outcomes(
    rows: Sequence[ClaimedRow],
    calls: Sequence[Future[CallResult]],
    flight: _Flight,
    settings: Settings,
) -> list[AttemptOutcome]:
    """Each row's outcome from its own single trigger."""
    outcomes: list[AttemptOutcome] = []
    for row, call in zip(rows, calls, strict=True):
        result = call.result()
        if isinstance(result, NovuError):
            outcomes.extend(_failed_call([row], result, settings))
        else:
            outcomes.append(_event_outcome(row, flight.prepared[row.id], result[0]))
    return outcomes


def _trigger_one(novu: NovuClient, event: TriggerEvent, key: str) -> list[TriggerResult]:
    return [novu.trigger(event, idempotency_key=key)]


def _novu_error(code: str, exc: NovuError, attempt: int) -> dict[str, Any]:
    return {
        "code": code,
        "message": str(exc),
        "statusCode": exc.status_code,
        "novu": exc.body,
        "attempt": attempt,
    }
