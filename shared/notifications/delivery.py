"""The delivery engine: one attempt of 1..N notifications of one enterprise.

claim → render → Novu trigger → record, for a lone notification and for a thousand
alike, keeping docs/architecture.md's guarantees 2 to 7, up to 100 rows per statement:

- claim: one `UPDATE … WHERE id IN (SELECT … FOR UPDATE SKIP LOCKED)` moves the due PENDING
  rows among the given ids to PROCESSING (attempt + 1, a lease) and commits. A row another
  worker holds, or that was cancelled, sent or is not due, is simply not claimed.
- render: every row on its own (`build_trigger_event`); a render failure, or anything else
  that stops one row's trigger from being built (a payload the encoder refuses), fails that
  row only, at once. Renders are shared fairly between enterprises (fairness.py): a task of an
  enterprise whose renders are slow renders only while it holds the enterprise's render lane,
  for at most the render timeout in all; the rows it does not get to go back PENDING, their
  attempt not used.
- send: a full hundred as one `POST /v1/events/trigger/bulk` (100 of Novu's rate-limit
  tokens), fewer as single `POST /v1/events/trigger` calls (1 token each), concurrently;
  every event with the transactionId fixed at insert, so a repeated send is dropped by Novu.
  Each event's result decides its row; a failure of a whole bulk call decides every row of
  it: retryable → the sub-batch is retried later, permanent → each event is sent alone, so
  that one bad event cannot fail the others.
- tokens: before a sub-batch is claimed, the tokens its calls cost (one per row, a full
  hundred's bulk call 100) are taken from Novu's rate-limit budget that every worker process
  shares (shared/novu/budget.py). A wait of up to TOKEN_WAIT_SECONDS is slept here; a longer
  one leaves the rest of the message's rows PENDING, unclaimed (no attempt used), until then.
- decide: one rule for every failure (`_failed_call`): permanent → FAILED with Novu's answer;
  retryable → PENDING with a capped, jittered backoff honouring Retry-After, or FAILED
  `attempts_exhausted` on the last attempt. Throttling never fails a notification: a 429
  empties the shared budget until its Retry-After and puts the rows back without using their
  attempt; so does Novu's 422 for a workflow it does not know yet, which also asks for a
  sync, for up to NOVU_SYNC_WAIT_SECONDS (docs/architecture.md, guarantee 7).
- record: one `UPDATE … FROM unnest(…)` writes every row's outcome (SENT, FAILED, or PENDING
  with next_attempt_at), each fenced by the attempt it claimed.

Novu's latency does not serialise the task: the sub-batches of one message are pipelined,
up to SENDS_IN_FLIGHT bulk calls in flight on a thread pool while the task thread claims and
renders the next sub-batch and records the finished ones; the single triggers of a sub-batch
under a hundred share the same pool.
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from collections import Counter as Tally
from collections import deque
from collections.abc import Callable, Container, Sequence
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

from redis import RedisError
from sqlalchemy import Connection
from sqlalchemy.exc import SQLAlchemyError

from shared import metrics
from shared.db.enums import NotificationStatus as S
from shared.db.session import ScopedMessage, connection, enterprise_transaction
from shared.notifications.direct_rows import vet
from shared.notifications.fairness import FairRenders, RenderLanes, in_lane_thread, wait_for
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
    defer_pending,
    record_outcomes,
)
from shared.notifications.timeline import excerpt
from shared.novu.budget import NovuBudget
from shared.novu.client import NovuClient, bulk_idempotency_key
from shared.novu.errors import (
    NovuError,
    NovuPermanentError,
    NovuRetryableError,
    is_ambiguous,
    is_rate_limited,
    is_workflow_not_found,
    result_error,
)
from shared.novu.retry import AMBIGUOUS_RETRY_SECONDS, backoff_delay, throttled_delay
from shared.novu.schemas import (
    BULK_TRIGGER_TOKENS,
    MAX_BULK_EVENTS,
    TRIGGER_TOKENS,
    TriggerEvent,
    TriggerResult,
)
from shared.settings import Settings
from shared.templates.errors import RenderDeferred, RenderMoved
from shared.templates.limits import watched
from shared.workflows.registry import get_registry

log = logging.getLogger(__name__)

# Rows claimed by one statement and sent by one Novu bulk call (when all of them are sent).
SUB_BATCH_SIZE = MAX_BULK_EVENTS
# Novu calls one task keeps in flight: sub-batches while it prepares the next one, or the
# single triggers of a sub-batch under a hundred.
SENDS_IN_FLIGHT = 4
# The longest wait for Novu's rate-limit tokens slept inside a task; rows whose tokens are
# further away are deferred instead, so that a worker process is never held for long.
TOKEN_WAIT_SECONDS = 2.0
# How soon a notification of a workflow Novu does not know is tried again (a sync takes a few
# seconds: Novu calls our bridge's discover), and the jitter added to it.
SYNC_RETRY_SECONDS = 5.0


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
    novu_tokens: int = 0  # what Novu charged the calls in its rate limit (a 429 costs nothing)
    throttled: int = 0  # rows Novu's 429 put back, their attempt not used
    deferred: int = 0  # rows left unclaimed: the rate-limit budget had no tokens soon
    awaiting_sync: int = 0  # rows put back because Novu does not know their workflow yet
    render_deferred: int = 0  # rows given back: their enterprise's slow renders wait their turn
    token_wait_ms: int = 0  # time slept for rate-limit tokens
    retries: list[tuple[float, list[int]]] = field(default_factory=list)
    # The notifications this task FAILED, with their error_details (shown in Flower).
    failures: list[tuple[int, dict[str, Any] | None]] = field(default_factory=list)

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
            "throttled": self.throttled,
            "deferred": self.deferred,
            "awaiting_sync": self.awaiting_sync,
            "render_deferred": self.render_deferred,
            "token_wait_ms": self.token_wait_ms,
        }


CallResult = list[TriggerResult] | NovuError


@dataclass(frozen=True, slots=True)
class _Answer:
    """A Novu call's result (or error), and how long the call took (for the timeline)."""

    result: CallResult
    ms: int


@dataclass
class _Flight:
    """One claimed sub-batch: rows decided before any call, and its calls in flight: one bulk
    call, or one single trigger per row sent."""

    rows: list[ClaimedRow]
    prepared: dict[int, PreparedTrigger]
    decided: list[AttemptOutcome]
    claim: str  # see _claim_token
    bulk: Future[_Answer] | None = None
    singles: list[Future[_Answer]] = field(default_factory=list)


@dataclass
class _Run:
    """What every step of one delivery task shares."""

    enterprise_id: uuid.UUID
    novu: NovuClient
    settings: Settings
    pool: Executor
    budget: NovuBudget | None
    fair: FairRenders
    report: DeliveryReport = field(default_factory=DeliveryReport)
    # Workflow keys a sync was requested for by this task: one request each is enough.
    sync_requested: set[str] = field(default_factory=set)
    # The jittered delay of each kind of put-back, drawn once per task, so that the rows it
    # puts back come back together, in one message.
    delays: dict[tuple[str, float | None], float] = field(default_factory=dict)

    def delay(self, kind: str, base: float | None, draw: Callable[[], float]) -> float:
        """The task's delay for `kind` (and `base`, Novu's Retry-After of a 429)."""
        key = (kind, base)
        if key not in self.delays:
            self.delays[key] = draw()
        return self.delays[key]


def deliver(
    enterprise_id: uuid.UUID,
    notification_ids: Sequence[int],
    *,
    novu: NovuClient,
    settings: Settings,
    executor: Executor,
    budget: NovuBudget | None = None,
    lanes: RenderLanes | None = None,
) -> DeliveryReport:
    """Run one delivery attempt of each due PENDING row among the ids (one or many) and record
    the outcomes. Ids that are not due, claimed elsewhere, sent or cancelled are skipped.

    The ids are handled in sub-batches of SUB_BATCH_SIZE, each paid for in Novu's rate-limit
    `budget` (None: unmetered), then claimed and recorded by one statement; up to
    SENDS_IN_FLIGHT of their Novu calls run at once on `executor`. Renders take their turn in
    the enterprise's render `lanes` when they are slow (None: unchecked). A message of one full
    sub-batch makes its bulk call on the task thread, and a lone notification its single
    trigger: there is nothing to overlap them with, and the hand-off to a pool thread and back
    would only add CPU and latency.

    Every statement of the batch runs on one pooled connection, checked out once.
    """
    fair = FairRenders(lanes, enterprise_id, settings.template_render_timeout_seconds)
    run = _Run(enterprise_id, novu, settings, executor, budget, fair)
    window: deque[_Flight] = deque()
    ids = list(dict.fromkeys(notification_ids))  # a repeated id is claimed once anyway
    bulk_on: Executor | None = executor if len(ids) > SUB_BATCH_SIZE else None
    with connection() as conn:
        try:
            for start in range(0, len(ids), SUB_BATCH_SIZE):
                chunk = ids[start : start + SUB_BATCH_SIZE]
                wait = fair.admit()
                if wait is not None:
                    why = "wait for their enterprise's renders"
                    rest = ids[start:]
                    deferred = _defer(conn, run, rest, wait, "render_deferred", why)
                    run.report.render_deferred += deferred
                    break
                if not _pay(conn, run, chunk, ids[start:]):
                    break  # the rest was deferred
                flight = _launch(conn, run, chunk, bulk_on)
                if flight is not None:
                    window.append(flight)
                # Record finished calls as soon as they are back; block only when the window
                # is full.
                while window and (len(window) >= SENDS_IN_FLIGHT or _done(window[0])):
                    _land(conn, run, window.popleft())
            while window:
                _land(conn, run, window.popleft())
        except BaseException:
            # Failing half-way (the database went away, a time limit): still record what the
            # calls already in flight answered, if that can be done (after a disconnect the
            # connection reconnects); rows it cannot record stay PROCESSING until the
            # reconciler's lease check sends them again (Novu drops the repeats).
            while window:
                try:
                    _land(conn, run, window.popleft())
                except Exception as exc:
                    log.warning("could not record a sub-batch of a failed batch: %s", exc)
            raise
        finally:
            fair.release()
    return run.report


def _done(flight: _Flight) -> bool:
    calls = [flight.bulk] if flight.bulk is not None else flight.singles
    return all(call.done() for call in calls)


def _pay(conn: Connection, run: _Run, chunk: list[int], rest: list[int]) -> bool:
    """Take the tokens the chunk's calls cost at most (one a row; a full hundred goes as one
    bulk call of 100), sleeping for them when they are at most TOKEN_WAIT_SECONDS away. When
    they are further, defer `rest` (this chunk and the ones after it) unclaimed until then,
    and answer False. Tokens a chunk does not spend are refunded once it is sent."""
    if run.budget is None:
        return True
    reservation = run.budget.reserve(len(chunk), max_wait=TOKEN_WAIT_SECONDS)
    if reservation.taken:
        if reservation.wait > 0:
            time.sleep(reservation.wait)
            run.report.token_wait_ms += round(reservation.wait * 1000)
        return True
    # The tokens of rows that come back together would again not all be there: spread them.
    delay = reservation.wait * random.uniform(1.0, 1.5)
    why = "wait for Novu rate-limit tokens"
    run.report.deferred += _defer(conn, run, rest, delay, "novu_rate_limited", why)
    return False


def _defer(conn: Connection, run: _Run, rest: list[int], delay: float, code: str, why: str) -> int:
    """Leave the due PENDING rows among `rest` unclaimed for `delay` seconds (no attempt used),
    by a countdown message or, for a longer delay, beat; answers how many were. `code` and
    `why` are the timeline's reason."""
    by_message = delay <= run.settings.max_countdown_seconds
    with enterprise_transaction(conn, run.enterprise_id):
        deferred = defer_pending(
            conn,
            enterprise_id=run.enterprise_id,
            notification_ids=rest,
            delay=delay,
            by_message=by_message,
            code=code,
            why=why,
        )
    run.report.skipped += len(rest) - len(deferred)
    metrics.record_retries(Tally({code: len(deferred)}))
    if deferred and by_message:
        run.report.retries.append((delay, deferred))
    log.info("%d notifications %s: deferred %.1fs", len(deferred), why, delay)
    return len(deferred)


def _launch(
    conn: Connection, run: _Run, chunk: list[int], executor: Executor | None
) -> _Flight | None:
    """Claim a sub-batch, render it, and start its Novu calls: a bulk call on `executor` (or
    made here, already answered, when there is none), single triggers on the pool; refund the
    tokens paid for rows not sent. None when nothing was claimed."""
    report = run.report
    rows, generation = claim_due(
        ScopedMessage(conn, run.enterprise_id),
        enterprise_id=run.enterprise_id,
        notification_ids=chunk,
        lease_seconds=run.settings.processing_lease_seconds,
    )
    report.skipped += len(chunk) - len(rows)
    if rows:
        report.claimed += len(rows)
        # A reload that happened before this claim is honoured by this very delivery.
        get_registry().observe_generation(run.enterprise_id, generation)

    prepared: dict[int, PreparedTrigger] = {}
    decided: list[AttemptOutcome] = []
    for index, row in enumerate(rows):
        if run.fair.spent_out():  # the task's render time is spent: the rest waits its turn
            why = "the delivery's render time is spent"
            decided.extend(_render_deferred(run, rows[index:], wait_for(0.0), why))
            break
        try:
            prepared[row.id] = _prepare(run, row)
        except RenderDeferred as exc:
            decided.extend(_render_deferred(run, rows[index:], exc.delay, str(exc)))
            break
        except PermanentDeliveryError as exc:
            error = {"code": exc.code, "message": str(exc), "attempt": row.attempts}
            if exc.details is not None:
                error["details"] = exc.details
            decided.append(AttemptOutcome(row.id, row.attempts, S.FAILED, error=error))
    flight = _Flight(rows=rows, prepared=prepared, decided=decided, claim=_claim_token())
    to_send = [row for row in rows if row.id in prepared]
    claim = flight.claim
    spent = 0
    if len(to_send) == SUB_BATCH_SIZE:
        events = [prepared[row.id].event for row in to_send]
        attempts = [f"{row.transaction_id}-{row.attempts}" for row in to_send]
        key = bulk_idempotency_key([claim, *attempts])
        flight.bulk = _start(partial(run.novu.trigger_bulk, events, idempotency_key=key), executor)
        spent = BULK_TRIGGER_TOKENS
    elif to_send:
        # Fewer than a hundred cost fewer tokens as single triggers. A lone one is sent from the
        # task thread: a hand-off to a pool thread and back would only add CPU and latency.
        pool = run.pool if len(to_send) > 1 else None
        flight.singles = _send_singles(to_send, prepared, run.novu, pool, claim)
        spent = len(to_send) * TRIGGER_TOKENS
    if run.budget is not None and spent < len(chunk):
        run.budget.refund(len(chunk) - spent)
    return flight if rows else None


def _prepare(run: _Run, row: ClaimedRow) -> PreparedTrigger:
    """One row's trigger (`_build`). While the task holds its enterprise's render lane, the
    row is built on the lane's low-priority thread; a build that turns slow here stops and
    starts again there (fairness.py)."""
    if run.fair.holding:
        return in_lane_thread(partial(_build, run, row))
    try:
        return _build(run, row)
    except RenderMoved:
        return in_lane_thread(partial(_build, run, row))


def _build(run: _Run, row: ClaimedRow) -> PreparedTrigger:
    """One row's trigger, its renders watched for slowness (fairness.py). Anything but a
    database or Redis failure (which may pass: the task is retried) that stops it being built
    is this row's own, and permanent: PermanentDeliveryError, so that it fails alone and at
    once instead of failing its whole batch on every retry."""
    watch = run.fair.row()
    try:
        with watched(watch):
            if row.direct is not None:  # another service inserted it: checked as intake would
                vet(row, run.settings)
            return build_trigger_event(row)
    except (PermanentDeliveryError, RenderDeferred, SQLAlchemyError, RedisError):
        raise
    except Exception as exc:
        log.exception("notification %s: its trigger cannot be built", row.id)
        raise PermanentDeliveryError(
            "trigger_unbuildable",
            f"the Novu trigger cannot be built: {type(exc).__name__}: {exc}"[:1000],
        ) from exc
    finally:
        run.fair.spend(watch.elapsed())


def _render_deferred(
    run: _Run, rows: Sequence[ClaimedRow], delay: float, why: str
) -> list[AttemptOutcome]:
    """Claimed rows whose renders wait their enterprise's turn: back to PENDING in `delay`
    seconds, their attempt not used."""
    run.report.render_deferred += len(rows)
    return _given_back(
        run,
        rows,
        delay,
        lambda row: {"code": "render_deferred", "message": why, "attempt": row.attempts},
    )


def _start(send: Callable[[], list[TriggerResult]], executor: Executor | None) -> Future[_Answer]:
    """A Novu call on `executor`, or made here (already answered) when there is none."""
    if executor is not None:
        return executor.submit(_call, send)
    done: Future[_Answer] = Future()
    done.set_result(_call(send))
    return done


def _claim_token() -> str:
    """What makes a claim's Idempotency-Keys new: an attempt Novu throttled or refused for an
    unknown workflow is given back, so the next claim has the same attempt number, and Novu
    replays a key's stored answer (its 422 included) for 24 h."""
    return uuid.uuid4().hex[:12]


def _send_singles(
    rows: Sequence[ClaimedRow],
    prepared: dict[int, PreparedTrigger],
    novu: NovuClient,
    executor: Executor | None,
    claim: str,
) -> list[Future[_Answer]]:
    """One single trigger per row, each with its claim's own Idempotency-Key."""
    calls = []
    for row in rows:
        key = f"{attempt_idempotency_key(row.transaction_id, row.attempts)}-{claim}"
        calls.append(_start(partial(_trigger_one, novu, prepared[row.id].event, key), executor))
    return calls


def _call(send: Callable[[], list[TriggerResult]]) -> _Answer:
    """Run a Novu call on a pool thread; its error is returned, to be decided by the task."""
    started = time.perf_counter()
    result: CallResult
    try:
        result = send()
    except NovuError as exc:
        result = exc
    return _Answer(result, round((time.perf_counter() - started) * 1000))


def _charged(run: _Run, result: CallResult, tokens: int) -> None:
    """Count a call Novu answered, and the tokens it charged: none for a 429, which also
    empties the shared budget until its Retry-After, so that every process pauses."""
    run.report.novu_calls += 1
    if isinstance(result, NovuError) and is_rate_limited(result):
        if run.budget is not None:
            run.budget.drain_for(result)
        return
    run.report.novu_tokens += tokens
    endpoint = "trigger_bulk" if tokens == BULK_TRIGGER_TOKENS else "trigger"
    metrics.NOVU_TOKENS.labels(endpoint).inc(tokens)


def _land(conn: Connection, run: _Run, flight: _Flight) -> None:
    """Wait for a sub-batch's call, decide each row, and record them all in one statement."""
    report = run.report
    outcomes = list(flight.decided)
    sent_rows = [row for row in flight.rows if row.id in flight.prepared]
    if flight.bulk is not None:
        answer = flight.bulk.result()
        result = answer.result
        _charged(run, result, BULK_TRIGGER_TOKENS)
        if isinstance(result, NovuPermanentError):
            outcomes.extend(_one_by_one(run, sent_rows, flight))
        elif isinstance(result, NovuError):
            outcomes.extend(_timed(_failed_call(run, sent_rows, result), answer.ms))
        else:
            for row, event_result in zip(sent_rows, result, strict=True):
                prepared = flight.prepared[row.id]
                outcomes.append(_event_outcome(run, row, prepared, event_result, answer.ms))
    else:
        outcomes.extend(_single_outcomes(run, sent_rows, flight.singles, flight))

    since_due: dict[int, float] = {}
    moved = record_outcomes(
        ScopedMessage(conn, run.enterprise_id),
        enterprise_id=run.enterprise_id,
        outcomes=outcomes,
        since_due=since_due,
    )
    if log.isEnabledFor(logging.INFO):
        _log_outcomes(flight.rows, outcomes, moved)
    try:
        _count_outcomes(run.enterprise_id, flight.rows, outcomes, moved, since_due)
    except Exception as exc:  # the outcomes are recorded: a metric never fails a delivery
        log.warning("delivery metrics not counted: %s", exc)
    retry_groups: dict[float, list[int]] = {}
    for outcome in outcomes:
        if outcome.notification_id not in moved:
            report.lost_race += 1
        elif outcome.status is S.SENT:
            report.sent += 1
        elif outcome.status is S.FAILED:
            report.failed += 1
            report.failures.append((outcome.notification_id, outcome.error))
        else:
            report.retried += 1
            if outcome.by_message and outcome.retry_in is not None:
                retry_groups.setdefault(outcome.retry_in, []).append(outcome.notification_id)
    report.retries.extend(retry_groups.items())


def _count_outcomes(
    enterprise_id: uuid.UUID,
    rows: Sequence[ClaimedRow],
    outcomes: Sequence[AttemptOutcome],
    moved: Container[int],
    since_due: dict[int, float],
) -> None:
    """The sub-batch's outcomes in the worker's metrics (shared/metrics.py): one increment per
    label set, the workflow of each key looked up once, in memory only: the enterprise's
    workflows when the registry holds them fresh (the render just used them), else the static
    ones (a key of neither counts as dynamic)."""
    registry = get_registry()
    fresh = registry.is_fresh(enterprise_id)
    keys = {row.id: row.workflow_key for row in rows}
    workflows: dict[str, tuple[str, tuple[str, ...]]] = {}
    counted = metrics.Outcomes()
    for outcome in outcomes:
        key = keys.get(outcome.notification_id, "")
        if key not in workflows:
            if fresh:
                workflow = registry.get_workflow(key, enterprise_id)
            else:
                workflow = registry.get_static_workflows().get(key)
            static = workflow is not None and workflow.enterprise_id is None
            channels = tuple(c.value.lower() for c in workflow.channels) if workflow else ()
            workflows[key] = (metrics.workflow_label(key, static), channels)
        label, channels = workflows[key]
        if outcome.notification_id not in moved:
            counted.add("lost_race", label, channels)
        elif outcome.status is S.SENT:
            counted.add("sent", label, channels, since_due=since_due.get(outcome.notification_id))
        elif outcome.status is S.FAILED:
            counted.add("failed", label, channels)
        else:
            reason = str((outcome.error or {}).get("code", "unknown"))
            counted.add("retry" if outcome.attempt_used else "given_back", label, channels, reason)
    counted.record()


def _log_outcomes(
    rows: Sequence[ClaimedRow], outcomes: Sequence[AttemptOutcome], moved: Container[int]
) -> None:
    """One line per recorded outcome, naming its notification and transaction (shared/logs.py;
    the task's enterprise is in the context): SENT and retries at INFO, FAILED at WARNING."""
    transactions = {row.id: row.transaction_id for row in rows}
    for outcome in outcomes:
        if outcome.notification_id not in moved:
            continue
        fields: dict[str, Any] = {
            "notification_id": outcome.notification_id,
            "transaction_id": transactions.get(outcome.notification_id),
            "attempt": outcome.attempt,
        }
        if outcome.call is not None:
            fields["novu_status"] = outcome.call.get("statusCode")
            fields["duration_ms"] = outcome.call.get("durationMs")
        if outcome.status is S.SENT:
            log.info("notification sent", extra=fields)
        elif outcome.status is S.FAILED:
            log.warning("notification failed", extra={**fields, "error": outcome.error})
        else:
            code = (outcome.error or {}).get("code")
            log.info(
                "attempt given back" if not outcome.attempt_used else "attempt failed",
                extra={**fields, "error_code": code, "retry_in_s": outcome.retry_in},
            )


def _event_outcome(
    run: _Run, row: ClaimedRow, prepared: PreparedTrigger, result: TriggerResult, ms: int
) -> AttemptOutcome:
    """SENT when Novu processed the event; FAILED with Novu's answer when it did not (or back
    to PENDING when it does not know the workflow yet)."""
    error = result_error(result)
    call = _answered(result, ms)
    if error is None:
        return AttemptOutcome(
            row.id,
            row.attempts,
            S.SENT,
            render_fallbacks=prepared.render_fallbacks or None,
            call=call,
        )
    if is_workflow_not_found(result):
        return replace(_awaiting_sync(run, row, error), call=call)
    return AttemptOutcome(
        row.id,
        row.attempts,
        S.FAILED,
        error=_novu_error("novu_rejected", error, row.attempts),
        call=call,
    )


def _answered(result: TriggerResult, ms: int) -> dict[str, Any]:
    """What the timeline keeps of Novu's answer for one event (timeline.py): the HTTP status,
    an excerpt of the event's result, the call's duration (a bulk call's, for each of its
    events), and whether Novu replayed a stored answer."""
    call: dict[str, Any] = {
        "statusCode": result.status_code,
        "answer": excerpt(result.model_dump(mode="json", by_alias=True, exclude_none=True)),
        "durationMs": ms,
    }
    if result.replayed:
        call["replayed"] = True
    return call


def _timed(outcomes: list[AttemptOutcome], ms: int) -> list[AttemptOutcome]:
    """The outcomes of one failed call, each with the call's duration for the timeline."""
    return [replace(outcome, call={"durationMs": ms}) for outcome in outcomes]


def _failed_call(run: _Run, rows: Sequence[ClaimedRow], exc: NovuError) -> list[AttemptOutcome]:
    """The one retry decision: every row of a Novu call that failed as a whole is FAILED when
    the error is permanent or the row is on its last attempt, otherwise back to PENDING with
    one backoff delay for the whole call. A 429 (Novu's rate limit) and a 422 for a workflow
    Novu does not know yet put the rows back without using their attempt, whatever it was.
    Retries sooner than MAX_COUNTDOWN_SECONDS ride a countdown message; later ones wait in the
    database for beat."""
    settings = run.settings
    if is_workflow_not_found(exc):
        return [_awaiting_sync(run, row, exc) for row in rows]
    if isinstance(exc, NovuPermanentError):
        return [
            AttemptOutcome(
                row.id, row.attempts, S.FAILED, _novu_error("novu_rejected", exc, row.attempts)
            )
            for row in rows
        ]
    assert isinstance(exc, NovuRetryableError)
    if is_rate_limited(exc):
        run.report.throttled += len(rows)
        retry_after = exc.retry_after
        delay = run.delay("throttled", retry_after, lambda: throttled_delay(retry_after))
        return _put_back(run, rows, exc, "novu_rate_limited", delay)
    delay = backoff_delay(
        max(row.attempts for row in rows),
        base=settings.retry_base_seconds,
        cap=settings.retry_max_seconds,
        retry_after=exc.retry_after,
    )
    # Novu may have run a call that got no answer: the rows' outcome is unknown, and a cancel
    # must ask Novu (docs/architecture.md, "Cancel").
    unknown = is_ambiguous(exc)
    if unknown:
        delay = max(delay, AMBIGUOUS_RETRY_SECONDS)
    by_message = delay <= settings.max_countdown_seconds
    outcomes = []
    for row in rows:
        error = _novu_error("novu_unavailable", exc, row.attempts)
        if row.attempts >= settings.delivery_max_attempts:
            error["code"] = "attempts_exhausted"
            outcomes.append(
                AttemptOutcome(row.id, row.attempts, S.FAILED, error=error, outcome_unknown=unknown)
            )
        else:
            outcomes.append(
                AttemptOutcome(
                    row.id,
                    row.attempts,
                    S.PENDING,
                    error=error,
                    retry_in=delay,
                    by_message=by_message,
                    outcome_unknown=unknown,
                )
            )
    log.info("batch of %d: retry in %.1fs: %s", len(rows), delay, exc)
    return outcomes


def _put_back(
    run: _Run, rows: Sequence[ClaimedRow], exc: NovuError, code: str, delay: float
) -> list[AttemptOutcome]:
    """Back to PENDING in `delay` seconds without using the attempt (guarantee 7)."""
    return _given_back(run, rows, delay, lambda row: _novu_error(code, exc, row.attempts))


def _given_back(
    run: _Run,
    rows: Sequence[ClaimedRow],
    delay: float,
    error: Callable[[ClaimedRow], dict[str, Any]],
) -> list[AttemptOutcome]:
    """Back to PENDING in `delay` seconds, the attempt not used, each with `error(row)`."""
    by_message = delay <= run.settings.max_countdown_seconds
    return [
        AttemptOutcome(
            row.id,
            row.attempts,
            S.PENDING,
            error=error(row),
            retry_in=delay,
            by_message=by_message,
            attempt_used=False,
        )
        for row in rows
    ]


def _awaiting_sync(run: _Run, row: ClaimedRow, exc: NovuError) -> AttemptOutcome:
    """Novu does not know the row's workflow: ask for a sync (once per workflow and task) and
    put the row back, its attempt not used, until NOVU_SYNC_WAIT_SECONDS have passed since
    Novu first refused it; then FAILED, saying so."""
    bound = run.settings.novu_sync_wait_seconds
    if row.workflow_key not in run.sync_requested:
        run.sync_requested.add(row.workflow_key)
        # Imported here: the sync module pulls in the bridge's catalog, which the delivery
        # path needs only when Novu does not know a workflow.
        from shared.novu.sync import request_sync

        request_sync(f"Novu does not know workflow {row.workflow_key!r}")
    since = (
        run.budget.unknown_since(row.transaction_id, keep=bound + SYNC_RETRY_SECONDS * 4)
        if run.budget is not None
        else time.time()
    )
    waited = time.time() - since
    if waited >= bound:
        error = _novu_error("novu_workflow_not_found", exc, row.attempts)
        error["message"] = (
            f"Novu does not know workflow {row.workflow_key!r}: not synced within "
            f"{bound:g} s (NOVU_SYNC_WAIT_SECONDS); {exc}"
        )
        return AttemptOutcome(row.id, row.attempts, S.FAILED, error=error)
    run.report.awaiting_sync += 1
    delay = run.delay("sync", None, lambda: SYNC_RETRY_SECONDS + random.uniform(0.0, 1.0))
    (outcome,) = _put_back(run, [row], exc, "novu_workflow_not_synced", delay)
    return outcome


def _one_by_one(run: _Run, rows: Sequence[ClaimedRow], flight: _Flight) -> list[AttemptOutcome]:
    """Novu refused the bulk call as a whole (one event too large, say): send each event on
    its own, so that each row gets its own answer. Their tokens are taken first; when they
    are not there soon, the rows go back to PENDING without using their attempt."""
    if run.budget is not None:
        reservation = run.budget.reserve(len(rows), max_wait=TOKEN_WAIT_SECONDS)
        if not reservation.taken:
            run.report.throttled += len(rows)
            refused = NovuRetryableError(None, "waiting for Novu rate-limit tokens")
            delay = reservation.wait * random.uniform(1.0, 1.5)
            return _put_back(run, rows, refused, "novu_rate_limited", delay)
        time.sleep(reservation.wait)
    calls = _send_singles(rows, flight.prepared, run.novu, run.pool, flight.claim)
    return _single_outcomes(run, rows, calls, flight)


def _single_outcomes(
    run: _Run,
    rows: Sequence[ClaimedRow],
    calls: Sequence[Future[_Answer]],
    flight: _Flight,
) -> list[AttemptOutcome]:
    """Each row's outcome from its own single trigger."""
    outcomes: list[AttemptOutcome] = []
    for row, call in zip(rows, calls, strict=True):
        answer = call.result()
        result = answer.result
        _charged(run, result, TRIGGER_TOKENS)
        if isinstance(result, NovuError):
            outcomes.extend(_timed(_failed_call(run, [row], result), answer.ms))
        else:
            prepared = flight.prepared[row.id]
            outcomes.append(_event_outcome(run, row, prepared, result[0], answer.ms))
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
