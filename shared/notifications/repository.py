"""The statements of a notification's delivery path, as plain SQL: insert, claim, record.

They run for every notification, so each is SQL text prepared once, taking arrays or one JSON
document rather than a row per parameter, and read back as tuples: the ORM equivalents cost
about six times the CPU per notification (docs/performance.md). Every statement runs inside
its caller's transaction and never commits (docs/architecture.md, "Transactions").

- `insert_pending`: PENDING rows of one enterprise, one statement per 1,000, with the
  Idempotency-Key rules (guarantee 6), marked `intake_checked` (the claim checks only rows
  other services inserted, migration 0013).
- `claim_due`: PENDING → PROCESSING with a lease, for the due rows nobody holds (guarantee 2).
- `record_outcomes`: PROCESSING → SENT / FAILED / PENDING, each fenced by the attempt that
  claimed it (guarantee 3); an attempt Novu throttled is given back; an attempt whose answer
  was lost marks the row's outcome unknown.
- `defer_pending`: due PENDING rows wait longer, unclaimed, for Novu's rate-limit tokens.

Each statement also appends the timeline events of the rows it moved (timeline.py), in the
same statement: a data-modifying CTE over the rows its UPDATE or INSERT returned.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from sqlalchemy import Connection, text
from sqlalchemy.orm import Session

from shared.db.enums import NotificationStatus as S
from shared.db.models import (
    Notification,
    NotificationEvent,
    NotificationWorkflow,
    RegistryGeneration,
)
from shared.db.session import ScopedMessage
from shared.ids import uuid4s
from shared.notifications.timeline import excerpt, worker_identity

TABLE: str = Notification.__table__.fullname  # type: ignore[attr-defined]
_GENERATIONS: str = RegistryGeneration.__table__.fullname  # type: ignore[attr-defined]
_WORKFLOWS: str = NotificationWorkflow.__table__.fullname  # type: ignore[attr-defined]
EVENTS: str = NotificationEvent.__table__.fullname  # type: ignore[attr-defined]

# Rows per INSERT: a bulk request (at most 1,000 events) is one statement per enterprise.
INSERT_CHUNK_ROWS = 1000


def new_transaction_id() -> str:
    """The transactionId sent to Novu on every attempt of one notification (guarantee 4)."""
    [transaction_id] = new_transaction_ids(1)
    return transaction_id


def new_transaction_ids(count: int) -> list[str]:
    """`count` new transactionIds, from one read of the system's random source (shared/ids.py)."""
    return [f"xn-{value}" for value in uuid4s(count)]


def is_due(scheduled_for: dt.datetime | None) -> bool:
    """Whether a notification scheduled for this time may be delivered now."""
    return scheduled_for is None or scheduled_for <= dt.datetime.now(dt.UTC)


def json_text(value: Any) -> str:
    """The JSON text PostgreSQL stores for a value (jsonb normalises spacing and key order).
    NaN and infinities, which jsonb refuses, raise ValueError."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


# -- insert -----------------------------------------------------------------------------------


class Execute(Protocol):
    """Runs one statement (psycopg's `%(name)s` parameters) in the caller's transaction and
    returns its rows, whose columns read as attributes."""

    def __call__(self, sql: str, parameters: dict[str, Any]) -> Sequence[Any]: ...


@dataclass(frozen=True, slots=True)
class NewNotification:
    """One checked trigger to record. `payload`, `overrides` are the caller's JSON values;
    `recipients` the subscriberIds / topicKeys, `recipient_objects` the recipients as given
    when any is an object (None when all are bare ids); `index` is the trigger's position in
    its request, reported back only."""

    index: int
    workflow_key: str
    payload: dict[str, Any]
    recipients: list[str]
    notification_workflow_id: int | None = None
    overrides: dict[str, Any] | None = None
    tags: list[str] | None = None
    scheduled_for: dt.datetime | None = None
    idempotency_key: str | None = None
    request_fingerprint: str | None = None
    recipient_objects: list[Any] | None = None
    batch_id: uuid.UUID | None = None  # the bulk request's batchId


class RecordResult(enum.StrEnum):
    """What recording one trigger did."""

    CREATED = "created"
    REPLAYED = "replayed"  # the key was used before with the same request: the first row
    CONFLICT = "conflict"  # the key was used before with another request


@dataclass(frozen=True, slots=True)
class Recorded:
    """The row one trigger was recorded as (created or the replayed one), or a key conflict."""

    index: int
    result: RecordResult
    notification_id: int
    transaction_id: str
    workflow_key: str
    scheduled_for: dt.datetime | None

    @property
    def publish(self) -> bool:
        """Created and due now: its delivery is published after commit."""
        return self.result is RecordResult.CREATED and is_due(self.scheduled_for)


# The rows travel as one JSON document (an array of positional arrays, see _rows_document):
# one parameter whatever the number of rows, so the statement is prepared once. A created row
# is its own `accepted` timeline event (shared/notifications/timeline.py).
INSERT_SQL = f"""
    INSERT INTO {TABLE} (
        enterprise_id, name, workflow_key, notification_workflow_id, notification_status,
        payload, recipients, overrides, tags, transaction_id, scheduled_for,
        idempotency_key, request_fingerprint, enqueued_at, created_by, recipient_objects,
        batch_id, intake_checked
    )
    SELECT
        %(enterprise_id)s, r.v->>0, r.v->>0, CAST(r.v->>1 AS bigint), 'PENDING',
        r.v->2, ARRAY(SELECT jsonb_array_elements_text(r.v->3)),
        NULLIF(r.v->4, 'null'),
        CASE WHEN jsonb_typeof(r.v->5) = 'array'
             THEN ARRAY(SELECT jsonb_array_elements_text(r.v->5)) END,
        r.v->>6, CAST(r.v->>7 AS timestamptz), r.v->>8, r.v->>9,
        CASE WHEN CAST(r.v->>10 AS boolean) THEN now() END, %(created_by)s,
        NULLIF(r.v->11, 'null'), CAST(r.v->>12 AS uuid), true
    FROM jsonb_array_elements(CAST(%(rows)s AS jsonb)) WITH ORDINALITY AS r(v, ord)
    ORDER BY r.ord
    ON CONFLICT (enterprise_id, idempotency_key) DO NOTHING
    RETURNING id, transaction_id
    """

_EXISTING_BY_KEY = f"""
    SELECT id, idempotency_key, request_fingerprint, transaction_id, workflow_key, scheduled_for
    FROM {TABLE}
    WHERE enterprise_id = %(enterprise_id)s AND idempotency_key = ANY(CAST(%(keys)s AS text[]))
    """


def insert_pending(
    execute: Execute,
    *,
    enterprise_id: uuid.UUID,
    notifications: Sequence[NewNotification],
    created_by: str | None,
) -> list[Recorded]:
    """Insert PENDING rows for one enterprise, one statement per INSERT_CHUNK_ROWS; results in
    the order given. A key seen before with the same request is a replay of the first row, with
    another request a conflict; a second round trip reads the earlier rows only when some key
    was already taken."""
    results: list[Recorded] = []
    for start in range(0, len(notifications), INSERT_CHUNK_ROWS):
        chunk = notifications[start : start + INSERT_CHUNK_ROWS]
        results.extend(_insert_chunk(execute, enterprise_id, chunk, created_by))
    return results


def _insert_chunk(
    execute: Execute,
    enterprise_id: uuid.UUID,
    chunk: Sequence[NewNotification],
    created_by: str | None,
) -> list[Recorded]:
    # Results are kept by position in the chunk. A key repeated inside the chunk: the first
    # trigger is inserted, the later ones are answered like a replay (or a conflict) of it, as
    # they would be one request later.
    first_with_key: dict[str, int] = {}
    to_insert: list[int] = []
    repeats: list[int] = []
    for position, item in enumerate(chunk):
        key = item.idempotency_key
        if key is not None and key in first_with_key:
            repeats.append(position)
            continue
        if key is not None:
            first_with_key[key] = position
        to_insert.append(position)

    transaction_ids = new_transaction_ids(len(to_insert))
    inserted: dict[str, int] = {}
    if to_insert:
        items = [chunk[position] for position in to_insert]
        parameters = _insert_parameters(enterprise_id, created_by, items, transaction_ids)
        inserted = {row.transaction_id: row.id for row in execute(INSERT_SQL, parameters)}

    recorded: dict[int, Recorded] = {}
    taken: list[int] = []
    for position, transaction_id in zip(to_insert, transaction_ids, strict=True):
        if transaction_id in inserted:
            recorded[position] = _created(chunk[position], inserted[transaction_id], transaction_id)
        else:
            taken.append(position)

    if taken or repeats:
        later = [*taken, *repeats]
        existing = _existing_by_key(execute, enterprise_id, [chunk[p] for p in later])
        # A key first used inside this chunk points at the row this chunk created.
        for key, position in first_with_key.items():
            first = recorded.get(position)
            if first is not None:
                existing[key] = (first, chunk[position].request_fingerprint)
        for position in later:
            item = chunk[position]
            assert item.idempotency_key is not None
            row, fingerprint = existing[item.idempotency_key]
            same = fingerprint == item.request_fingerprint
            result = RecordResult.REPLAYED if same else RecordResult.CONFLICT
            recorded[position] = replace(row, index=item.index, result=result)
    return [recorded[position] for position in range(len(chunk))]


def _created(item: NewNotification, row_id: int, transaction_id: str) -> Recorded:
    return Recorded(
        item.index,
        RecordResult.CREATED,
        row_id,
        transaction_id,
        item.workflow_key,
        item.scheduled_for,
    )


def _insert_parameters(
    enterprise_id: uuid.UUID,
    created_by: str | None,
    items: Sequence[NewNotification],
    transaction_ids: Sequence[str],
) -> dict[str, Any]:
    return {
        "enterprise_id": enterprise_id,
        "created_by": created_by,
        "rows": _rows_document(items, transaction_ids),
    }


@dataclass(frozen=True, slots=True)
class KeylessInsert:
    """The INSERTs of notifications none of which carries an idempotency key. Every row is
    created (no key can conflict), so no answer decides what to send next: the recorder
    sends the statements with the transaction's others in one round trip (psycopg's pipeline
    mode) and reads the rows after the commit."""

    notifications: Sequence[NewNotification]
    transaction_ids: Sequence[str]
    statements: list[dict[str, Any]]  # INSERT_SQL's parameters, one per INSERT_CHUNK_ROWS

    def recorded(self, rows: Sequence[Sequence[Any]]) -> list[Recorded]:
        """The Recorded of each notification, in order, from each statement's rows."""
        ids = {row.transaction_id: row.id for chunk in rows for row in chunk}
        if len(ids) != len(self.notifications):
            raise RuntimeError(
                f"{len(self.notifications)} rows inserted without keys, {len(ids)} returned"
            )
        return [
            _created(item, ids[transaction_id], transaction_id)
            for item, transaction_id in zip(self.notifications, self.transaction_ids, strict=True)
        ]


def keyless_insert(
    enterprise_id: uuid.UUID, notifications: Sequence[NewNotification], created_by: str | None
) -> KeylessInsert | None:
    """The KeylessInsert of these notifications, or None when any carries a key (then
    `insert_pending` records them, reading the earlier rows of keys already used)."""
    if any(item.idempotency_key is not None for item in notifications):
        return None
    transaction_ids = new_transaction_ids(len(notifications))
    statements = [
        _insert_parameters(
            enterprise_id,
            created_by,
            notifications[start : start + INSERT_CHUNK_ROWS],
            transaction_ids[start : start + INSERT_CHUNK_ROWS],
        )
        for start in range(0, len(notifications), INSERT_CHUNK_ROWS)
    ]
    return KeylessInsert(notifications, transaction_ids, statements)


def _existing_by_key(
    execute: Execute, enterprise_id: uuid.UUID, items: Sequence[NewNotification]
) -> dict[str, tuple[Recorded, str | None]]:
    keys = sorted({item.idempotency_key for item in items if item.idempotency_key is not None})
    rows = execute(_EXISTING_BY_KEY, {"enterprise_id": enterprise_id, "keys": keys})
    replayed = RecordResult.REPLAYED
    return {
        row.idempotency_key: (
            Recorded(-1, replayed, row.id, row.transaction_id, row.workflow_key, row.scheduled_for),
            row.request_fingerprint,
        )
        for row in rows
    }


def _rows_document(items: Sequence[NewNotification], transaction_ids: Sequence[str]) -> str:
    """The rows to insert as `[[workflow_key, workflow_id, payload, recipients, overrides, tags,
    transaction_id, scheduled_for, idempotency_key, fingerprint, due, recipient_objects,
    batch_id], ...]`;
    a due row is stamped enqueued_at, as its delivery is published right after commit."""
    return json_text(
        [
            [
                item.workflow_key,
                item.notification_workflow_id,
                item.payload,
                item.recipients,
                item.overrides,
                item.tags,
                transaction_id,
                item.scheduled_for.isoformat() if item.scheduled_for is not None else None,
                item.idempotency_key,
                item.request_fingerprint,
                is_due(item.scheduled_for),
                item.recipient_objects,
                str(item.batch_id) if item.batch_id is not None else None,
            ]
            for item, transaction_id in zip(items, transaction_ids, strict=True)
        ]
    )


# -- claim ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClaimedRow:
    """What delivering a claimed notification needs of its row (the attempt it is on);
    `recipient_objects` is None when every recipient is a bare subscriberId."""

    id: int
    enterprise_id: uuid.UUID
    workflow_key: str
    payload: dict[str, Any]
    recipients: list[str]
    overrides: dict[str, Any] | None
    transaction_id: str
    attempts: int
    recipient_objects: list[Any] | None
    # A row another service inserted (not intake_checked): what checking it needs that the
    # row above lacks (DIRECT_ROW_SQL); None for intake's rows, already checked.
    direct: dict[str, Any] | None = None


# What the claim reads of a row another service inserted, for direct_rows.vet: the row's own
# publish status and tags, and the state of the workflow row it names (by id, else by key: the
# enterprise's own, else the shared one) as this enterprise sees it (NULL when there is none,
# or the id is another enterprise's). A CASE, so that intake's rows cost one boolean test.
DIRECT_ROW_SQL = f"""
    CASE WHEN NOT n.intake_checked THEN jsonb_build_object(
        'publishStatus', n.publish_status, 'deactivated', n.deactivated, 'tags', n.tags,
        'workflowId', n.notification_workflow_id,
        'workflow', (SELECT jsonb_build_object('id', w.id, 'key', w.workflow_key,
                                               'publishStatus', w.publish_status,
                                               'deactivated', w.deactivated)
                     FROM {_WORKFLOWS} AS w
                     WHERE w.id = coalesce(n.notification_workflow_id, (
                         SELECT k.id FROM {_WORKFLOWS} AS k
                         WHERE k.workflow_key = n.workflow_key
                           AND (k.enterprise_id = n.enterprise_id OR k.enterprise_id IS NULL)
                         ORDER BY k.enterprise_id NULLS LAST LIMIT 1))
                       AND (w.enterprise_id = n.enterprise_id OR w.enterprise_id IS NULL)))
    END"""


# Each row claimed gets its `attempt.started` timeline event from the same statement.
_CLAIM = text(
    f"""
    WITH claimed AS (
    UPDATE {TABLE} AS n SET
        notification_status = 'PROCESSING',
        attempts = n.attempts + 1,
        locked_until = now() + make_interval(secs => :lease_seconds),
        next_attempt_at = NULL,
        updated_at = now()
    WHERE n.id IN (
        SELECT p.id FROM {TABLE} AS p
        WHERE p.id = ANY(CAST(:ids AS bigint[]))
          AND p.enterprise_id = :enterprise_id
          AND p.notification_status = 'PENDING'
          AND (p.scheduled_for IS NULL OR p.scheduled_for <= now())
          AND (p.next_attempt_at IS NULL OR p.next_attempt_at <= now())
        ORDER BY p.id
        FOR UPDATE SKIP LOCKED
    )
    RETURNING n.id, n.enterprise_id, n.workflow_key, n.payload, n.recipients, n.overrides,
        n.transaction_id, n.attempts, n.recipient_objects, {DIRECT_ROW_SQL} AS direct
    ), started AS (
    INSERT INTO {EVENTS} (enterprise_id, notification_id, kind, attempt, detail)
    SELECT c.enterprise_id, c.id, 'attempt.started', c.attempts, CAST(:worker AS jsonb)
    FROM claimed AS c ORDER BY c.id
    )
    SELECT c.*,
        (SELECT coalesce(max(g.generation), 0) FROM {_GENERATIONS} AS g
         WHERE g.enterprise_id = :enterprise_id)
    FROM claimed AS c
    """
)


def claim_due(
    connection: Connection | Session | ScopedMessage,
    *,
    enterprise_id: uuid.UUID,
    notification_ids: Sequence[int],
    lease_seconds: int,
) -> tuple[list[ClaimedRow], int]:
    """PENDING → PROCESSING (attempt + 1, a lease) for the due rows among `notification_ids`
    that nobody else holds, in one statement; returns them by id, and the enterprise's registry
    generation read by the same statement, so that a reload is noticed before rendering at no
    extra round trip. The same statement appends each claimed row's `attempt.started` event.

    The update is driven by primary key only: the status check lives in the subquery, which
    re-checks it on the row it locks. Repeating it in the outer statement let the planner drive
    the update from the partial index of every PENDING row instead (the claim's cost then grew
    with the backlog)."""
    if not notification_ids:
        return [], 0
    parameters = {
        "ids": list(notification_ids),
        "enterprise_id": enterprise_id,
        "lease_seconds": lease_seconds,
        "worker": json_text({"worker": worker_identity()}),
    }
    rows = connection.execute(_CLAIM, parameters).all()
    claimed = sorted((ClaimedRow(*row[:10]) for row in rows), key=lambda row: row.id)
    return claimed, int(rows[0][10]) if rows else 0


# -- record -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AttemptOutcome:
    """What one attempt of one claimed row ended in."""

    notification_id: int
    attempt: int
    status: S  # SENT, FAILED, or PENDING (retry)
    error: dict[str, Any] | None = None
    render_fallbacks: list[dict[str, Any]] | None = None
    retry_in: float | None = None
    # A retry carried by a countdown message (enqueued_at = when it is due) rather than left
    # for beat to release (enqueued_at cleared).
    by_message: bool = False
    # False when the attempt does not count (Novu throttled it, or did not know the workflow
    # yet): back to PENDING with attempts as before the claim.
    attempt_used: bool = True
    # The call was sent and its answer is not known (no answer, a 5xx): Novu may hold the
    # event, so the row's outcome_unknown_at is set (a cancel must then ask Novu).
    outcome_unknown: bool = False
    # What the attempt's Novu call answered, for the timeline: statusCode, answer (an
    # excerpt), durationMs, replayed (timeline.py); None when no call was made.
    call: dict[str, Any] | None = None


# Each row moved gets the timeline event of its outcome from the same statement: `sent`,
# `failed`, `attempt.failed` (a retry) or `attempt.deferred` (the attempt not used).
_RECORD_OUTCOMES = text(
    f"""
    WITH moved AS (
    UPDATE {TABLE} AS n SET
        notification_status = CAST(v.status AS notify.notification_status),
        attempts = CASE WHEN v.used THEN n.attempts ELSE n.attempts - 1 END,
        processed_at = CASE WHEN v.status = 'PENDING' THEN n.processed_at ELSE now() END,
        locked_until = NULL,
        error_details = v.error,
        render_fallbacks = CASE WHEN v.status = 'SENT' THEN v.fallbacks
                                ELSE n.render_fallbacks END,
        outcome_unknown_at = CASE WHEN v.status = 'SENT' THEN NULL
                                  WHEN v.unknown THEN coalesce(n.outcome_unknown_at, now())
                                  ELSE n.outcome_unknown_at END,
        next_attempt_at = CASE WHEN v.status = 'PENDING'
                               THEN now() + make_interval(secs => v.delay)
                               ELSE n.next_attempt_at END,
        enqueued_at = CASE WHEN v.status <> 'PENDING' THEN n.enqueued_at
                           WHEN v.by_message THEN now() + make_interval(secs => v.delay)
                           END,
        updated_at = now()
    FROM (
        SELECT CAST(r.v->>0 AS bigint) AS id, CAST(r.v->>1 AS integer) AS attempt,
            r.v->>2 AS status, NULLIF(r.v->3, 'null') AS error,
            NULLIF(r.v->4, 'null') AS fallbacks, CAST(r.v->>5 AS float8) AS delay,
            CAST(r.v->>6 AS boolean) AS by_message, CAST(r.v->>7 AS boolean) AS used,
            CAST(r.v->>8 AS boolean) AS unknown, NULLIF(r.v->9, 'null') AS detail
        FROM jsonb_array_elements(CAST(:rows AS jsonb)) AS r(v)
    ) AS v
    -- The ids again, as an array the planner can use: it cannot count the document's rows,
    -- and by guessing a hundred it would read the whole table for a hash join.
    WHERE n.id = ANY(CAST(:ids AS bigint[])) AND n.id = v.id
      AND n.enterprise_id = :enterprise_id
      AND n.notification_status = 'PROCESSING'
      AND n.attempts = v.attempt
    RETURNING n.id, n.enterprise_id, v.attempt, v.status, v.used, v.detail,
        CASE WHEN v.status = 'SENT'
             THEN extract(epoch FROM now() - greatest(n.created_at, n.scheduled_for)) END
             AS since_due
    ), recorded AS (
    INSERT INTO {EVENTS} (enterprise_id, notification_id, kind, attempt, detail)
    SELECT m.enterprise_id, m.id,
        CASE WHEN m.status = 'SENT' THEN 'sent'
             WHEN m.status = 'FAILED' THEN 'failed'
             WHEN m.used THEN 'attempt.failed'
             ELSE 'attempt.deferred' END,
        m.attempt, m.detail
    FROM moved AS m ORDER BY m.id
    )
    SELECT id, since_due FROM moved
    """
)


def record_outcomes(
    connection: Connection | Session | ScopedMessage,
    *,
    enterprise_id: uuid.UUID,
    outcomes: Sequence[AttemptOutcome],
    since_due: dict[int, float] | None = None,
) -> set[int]:
    """PROCESSING → SENT / FAILED / PENDING for every outcome whose attempt still owns its row,
    in one statement; returns the ids that moved (the others lost a race: their lease expired
    and the row moved on). A retry by message gets enqueued_at = when it is due, so the
    reconciler leaves it alone until then; any other retry waits for beat to release it.
    `since_due`, when given, gets each SENT row's seconds from its trigger (or its scheduled
    time, when later) to now, for the trigger→SENT metric (shared/metrics.py)."""
    if not outcomes:
        return set()
    # One JSON document of positional rows, encoded at once: arrays of JSON texts would be
    # quoted element by element (psycopg escapes each with a regex: 6 % of a worker's time).
    rows = [
        [
            o.notification_id,
            o.attempt,
            o.status.value,
            o.error,
            o.render_fallbacks or None,
            o.retry_in or 0.0,
            o.by_message,
            o.attempt_used,
            o.outcome_unknown,
            _outcome_detail(o),
        ]
        for o in outcomes
    ]
    document = json.dumps(rows, separators=(",", ":"), default=str)
    moved = connection.execute(
        _RECORD_OUTCOMES,
        {
            "enterprise_id": enterprise_id,
            "ids": [o.notification_id for o in outcomes],
            "rows": document,
        },
    ).all()
    if since_due is not None:
        since_due.update((row[0], float(row[1])) for row in moved if row[1] is not None)
    return {row[0] for row in moved}


def _outcome_detail(outcome: AttemptOutcome) -> dict[str, Any] | None:
    """The detail of an outcome's timeline event (timeline.py): the error's code and message,
    Novu's status code and an excerpt of its answer, the call's duration, and when a retry
    comes (`retryInSeconds`, or `delaySeconds` for an attempt not used)."""
    detail: dict[str, Any] = {}
    error = outcome.error
    if error is not None:
        detail["code"] = error.get("code")
        detail["message"] = excerpt(error.get("message"))
        if error.get("statusCode") is not None:
            detail["statusCode"] = error["statusCode"]
        if error.get("novu") is not None:
            detail["answer"] = excerpt(error["novu"])
    if outcome.call is not None:
        detail.update(outcome.call)
    if outcome.status is S.PENDING:
        wait = "retryInSeconds" if outcome.attempt_used else "delaySeconds"
        detail[wait] = round(outcome.retry_in or 0.0, 3)
    if outcome.outcome_unknown:
        detail["outcomeUnknown"] = True
    # Within timeline.MAX_DETAIL_CHARS by construction: two excerpts of EXCERPT_CHARS and a
    # few numbers.
    return detail or None


# -- defer ------------------------------------------------------------------------------------

# Each row deferred gets an `attempt.deferred` event (for the attempt it did not make yet)
# from the same statement.
_DEFER = text(
    f"""
    WITH deferred AS (
    UPDATE {TABLE} AS n SET
        next_attempt_at = now() + make_interval(secs => :delay),
        enqueued_at = CASE WHEN :by_message THEN now() + make_interval(secs => :delay) END,
        updated_at = now()
    WHERE n.id = ANY(CAST(:ids AS bigint[]))
      AND n.enterprise_id = :enterprise_id
      AND n.notification_status = 'PENDING'
      AND (n.scheduled_for IS NULL OR n.scheduled_for <= now())
      AND (n.next_attempt_at IS NULL OR n.next_attempt_at <= now())
    RETURNING n.id, n.enterprise_id, n.attempts
    ), waiting AS (
    INSERT INTO {EVENTS} (enterprise_id, notification_id, kind, attempt, detail)
    SELECT d.enterprise_id, d.id, 'attempt.deferred', d.attempts + 1, CAST(:detail AS jsonb)
    FROM deferred AS d ORDER BY d.id
    )
    SELECT id FROM deferred
    """
)


def defer_pending(
    connection: Connection | Session,
    *,
    enterprise_id: uuid.UUID,
    notification_ids: Sequence[int],
    delay: float,
    by_message: bool,
    code: str = "deferred",
    why: str | None = None,
) -> list[int]:
    """Due PENDING rows among the ids wait `delay` seconds more without being claimed (no
    attempt used): Novu's rate-limit budget has no tokens for them sooner. Returns the ids
    deferred; as for a retry, `by_message` says whether a countdown message carries them or
    beat releases them. Each gets an `attempt.deferred` event saying why (`code`, `why`)."""
    if not notification_ids:
        return []
    detail = {"code": code, "message": why, "delaySeconds": round(delay, 3)}
    parameters = {
        "ids": list(notification_ids),
        "enterprise_id": enterprise_id,
        "delay": delay,
        "by_message": by_message,
        "detail": json_text(detail),
    }
    return sorted(row[0] for row in connection.execute(_DEFER, parameters))
