"""Recording many notifications of one enterprise in one statement (the bulk trigger).

One multi-row `INSERT … SELECT … FROM jsonb_array_elements(:rows) ON CONFLICT DO NOTHING
RETURNING` per chunk: the statement has the same three parameters whatever the number of rows,
so PostgreSQL and psycopg prepare it once and reuse it, and the rows cross as one JSON document
(one json.dumps, one parse) rather than as an array per column. Idempotency keys behave as for
a single trigger: a key seen before with the same request is a replay of the first
notification, with another request a conflict. A second round trip reads the earlier rows only
when some key was already taken.

Like every service this runs inside the caller's transaction and never commits. It takes the
function that runs a statement rather than a session, so that the API's trigger recorder can
run it on a plain psycopg connection (api/ingest.py) and the bulk endpoint on its session.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy.orm import Session

from shared.db.models import Notification
from shared.notifications.service import new_transaction_id

TABLE = Notification.__table__.fullname  # type: ignore[attr-defined]

# Rows per INSERT: a bulk request (at most 1,000 events) is one statement per enterprise.
INSERT_CHUNK_ROWS = 1000

# The rows travel as one JSON document (an array of positional arrays, see _rows_document):
# one parameter, encoded by one json.dumps call and parsed once by PostgreSQL.
_INSERT = f"""
    INSERT INTO {TABLE} (
        enterprise_id, name, workflow_key, notification_workflow_id, notification_status,
        payload, recipients, overrides, tags, transaction_id, scheduled_for,
        idempotency_key, request_fingerprint, enqueued_at, created_by
    )
    SELECT
        %(enterprise_id)s, r.v->>0, r.v->>0, CAST(r.v->>1 AS bigint), 'PENDING',
        r.v->2, ARRAY(SELECT jsonb_array_elements_text(r.v->3)),
        NULLIF(r.v->4, 'null'),
        CASE WHEN jsonb_typeof(r.v->5) = 'array'
             THEN ARRAY(SELECT jsonb_array_elements_text(r.v->5)) END,
        r.v->>6, CAST(r.v->>7 AS timestamptz), r.v->>8, r.v->>9,
        CASE WHEN CAST(r.v->>10 AS boolean) THEN now() END, %(created_by)s
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


class Execute(Protocol):
    """Runs one statement of this module (psycopg's `%(name)s` parameters) in the caller's
    transaction and returns its rows, whose columns read as attributes."""

    def __call__(self, sql: str, parameters: dict[str, Any]) -> Sequence[Any]: ...


def session_executor(session: Session) -> Execute:
    """Execute through an ORM session's transaction (the driver's own parameter style)."""

    def execute(sql: str, parameters: dict[str, Any]) -> Sequence[Any]:
        return session.connection().exec_driver_sql(sql, parameters).all()

    return execute


@dataclass(frozen=True, slots=True)
class BulkNotification:
    """One validated event to record. `payload`, `overrides` are the caller's JSON values."""

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


class BulkOutcome(enum.StrEnum):
    CREATED = "created"
    REPLAYED = "replayed"  # the key was used before with the same request: the first row
    CONFLICT = "conflict"  # the key was used before with another request


@dataclass(frozen=True, slots=True)
class BulkRecorded:
    """What became of one event: its row (created or the replayed one) or a key conflict."""

    index: int
    outcome: BulkOutcome
    notification_id: int
    transaction_id: str
    workflow_key: str
    scheduled_for: dt.datetime | None

    @property
    def publish(self) -> bool:
        """Created and due now: its delivery is published after commit."""
        return self.outcome is BulkOutcome.CREATED and not _in_future(self.scheduled_for)


def record_notifications(
    execute: Execute,
    *,
    enterprise_id: uuid.UUID,
    notifications: Sequence[BulkNotification],
    created_by: str | None,
) -> list[BulkRecorded]:
    """Insert PENDING rows for one enterprise, one statement per INSERT_CHUNK_ROWS; results
    in the order given."""
    results: list[BulkRecorded] = []
    for start in range(0, len(notifications), INSERT_CHUNK_ROWS):
        chunk = notifications[start : start + INSERT_CHUNK_ROWS]
        results.extend(_record_chunk(execute, enterprise_id, chunk, created_by))
    return results


def _record_chunk(
    execute: Execute,
    enterprise_id: uuid.UUID,
    chunk: Sequence[BulkNotification],
    created_by: str | None,
) -> list[BulkRecorded]:
    # Results are kept by position in the chunk (an item's `index` is only reported back). A
    # key repeated inside the request: the first event is inserted, the later ones are
    # answered like a replay (or a conflict) of it, as they would be one request later.
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

    transaction_ids = [new_transaction_id() for _ in to_insert]
    inserted: dict[str, int] = {}
    if to_insert:
        items = [chunk[position] for position in to_insert]
        rows = execute(
            _INSERT, _insert_parameters(enterprise_id, items, transaction_ids, created_by)
        )
        inserted = {row.transaction_id: row.id for row in rows}

    recorded: dict[int, BulkRecorded] = {}
    taken: list[int] = []
    for position, transaction_id in zip(to_insert, transaction_ids, strict=True):
        item = chunk[position]
        if transaction_id in inserted:
            recorded[position] = BulkRecorded(
                index=item.index,
                outcome=BulkOutcome.CREATED,
                notification_id=inserted[transaction_id],
                transaction_id=transaction_id,
                workflow_key=item.workflow_key,
                scheduled_for=item.scheduled_for,
            )
        else:
            taken.append(position)

    if taken or repeats:
        later = [*taken, *repeats]
        existing = _existing_by_key(execute, enterprise_id, [chunk[p] for p in later])
        # A key first used inside this request points at the row this request created.
        for key, position in first_with_key.items():
            first = recorded.get(position)
            if first is not None:
                existing[key] = (first, chunk[position].request_fingerprint)
        for position in later:
            item = chunk[position]
            assert item.idempotency_key is not None
            row, fingerprint = existing[item.idempotency_key]
            same = fingerprint == item.request_fingerprint
            recorded[position] = BulkRecorded(
                index=item.index,
                outcome=BulkOutcome.REPLAYED if same else BulkOutcome.CONFLICT,
                notification_id=row.notification_id,
                transaction_id=row.transaction_id,
                workflow_key=row.workflow_key,
                scheduled_for=row.scheduled_for,
            )
    return [recorded[position] for position in range(len(chunk))]


def _existing_by_key(
    execute: Execute, enterprise_id: uuid.UUID, items: Sequence[BulkNotification]
) -> dict[str, tuple[BulkRecorded, str | None]]:
    keys = sorted({item.idempotency_key for item in items if item.idempotency_key is not None})
    rows = execute(_EXISTING_BY_KEY, {"enterprise_id": enterprise_id, "keys": keys})
    return {
        row.idempotency_key: (
            BulkRecorded(
                index=-1,
                outcome=BulkOutcome.REPLAYED,
                notification_id=row.id,
                transaction_id=row.transaction_id,
                workflow_key=row.workflow_key,
                scheduled_for=row.scheduled_for,
            ),
            row.request_fingerprint,
        )
        for row in rows
    }


def _insert_parameters(
    enterprise_id: uuid.UUID,
    items: Sequence[BulkNotification],
    transaction_ids: Sequence[str],
    created_by: str | None,
) -> dict[str, Any]:
    return {
        "enterprise_id": enterprise_id,
        "created_by": created_by,
        "rows": _rows_document(items, transaction_ids),
    }


def _rows_document(items: Sequence[BulkNotification], transaction_ids: Sequence[str]) -> str:
    """The rows to insert as `[[workflow_key, workflow_id, payload, recipients, overrides, tags,
    transaction_id, scheduled_for, idempotency_key, fingerprint, due], ...]`."""
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
                not _in_future(item.scheduled_for),
            ]
            for item, transaction_id in zip(items, transaction_ids, strict=True)
        ]
    )


def json_text(value: Any) -> str:
    """The JSON text PostgreSQL stores for a value (jsonb normalises spacing and key order).
    NaN and infinities, which jsonb refuses, raise ValueError."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _in_future(when: dt.datetime | None) -> bool:
    return when is not None and when > dt.datetime.now(dt.UTC)
