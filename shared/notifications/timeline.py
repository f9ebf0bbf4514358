"""The timeline: an append-only history of what happened to each notification.

Every event is written in the transaction of the transition it records (docs/architecture.md,
"Timeline"; `accepted` is the notification's row itself): the delivery path's batch statements
insert theirs in the same SQL statement (a data-modifying CTE over the rows they moved,
repository.py), the single-row transitions and the API's cancel and retry through
`append_events`, in their own transaction. Rows are never updated or deleted
(migration 0007 grants enterprises SELECT and INSERT only).

Kinds (stable: other modules and the status webhooks' trigger match on them); "n" is the
event's `attempt`, and "the answer" is an attempt's `code` and `message` (failures),
`statusCode` (Novu's HTTP status; absent when no answer came), `answer` (an excerpt of Novu's
answer, at most EXCERPT_CHARS characters), `durationMs` (the Novu call) and `replayed` (Novu
answered from its idempotency store):

- `accepted`: the trigger was recorded PENDING. Detail: `scheduledFor` when scheduled. Not a
  row of its own: the notification's row is this event (list_events reads it as the first
  event, ACCEPTED_EVENT_ID), so rows written by the trigger routes, by rules and by other
  services all have it, at no cost to the intake.
- `attempt.started` (n): a worker claimed it, PENDING → PROCESSING. Detail: `worker`
  {host, pid}.
- `attempt.failed` (n): the attempt failed and a retry is scheduled (→ PENDING). Detail: the
  answer, `retryInSeconds`, `outcomeUnknown` (Novu may hold the event).
- `attempt.deferred` (n): attempt n did not count, put back before its claim (Novu's
  rate-limit tokens, the enterprise's render lane) or after it (Novu's 429, a workflow Novu
  does not know yet, the render lane). Detail: `code`, `message`, `delaySeconds`.
- `sent` (n): Novu accepted the trigger, → SENT. Detail: the answer.
- `failed` (n): → FAILED: a permanent error, the last attempt failed, or the last attempt's
  lease ran out. Detail: the answer, or `code` and `message`.
- `lease.expired` (n): attempt n's worker went away (its lease ran out; or a cancel's hold on
  the row, which takes attempt n, ran out): back to PENDING, its outcome unknown.
- `cancel.requested`: a cancel was asked for. Detail: `reason`.
- `retracted`: → RETRACTED. Detail: `reason`.
- `cancel.refused`: the cancel did not retract it. Detail: `code` (`already_delivered`,
  `delivery_unknown`, `invalid_state`, `novu_unavailable`) and `status`.
- `retried`: FAILED → PENDING by the retry API, with a fresh attempt budget.
- `delivery.<event>`: Novu reported a message event, e.g. `delivery.message.sent`
  (shared/novu/webhooks.py).
- `webhook.delivered`, `webhook.retrying`, `webhook.failed`: a status webhook attempt to the
  enterprise was answered 2xx, failed with a retry scheduled, or failed with none left
  (shared/webhooks/timeline.py).
"""

from __future__ import annotations

import datetime as dt
import enum
import json
import os
import socket
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from sqlalchemy import (
    BigInteger,
    Connection,
    Select,
    case,
    func,
    literal,
    null,
    select,
    text,
    union_all,
)
from sqlalchemy.orm import Session

from shared.db.models import Notification, NotificationEvent

TABLE: str = NotificationEvent.__table__.fullname  # type: ignore[attr-defined]

# An excerpt of Novu's answer kept on an attempt's event, in characters of its JSON text.
EXCERPT_CHARS = 1024
# An event's detail as stored, in characters of its JSON text; a larger one is cut to an
# excerpt (appenders should keep theirs well under).
MAX_DETAIL_CHARS = 8192


class Kind(enum.StrEnum):
    """The kinds this module's writers record (see the module's table)."""

    ACCEPTED = "accepted"
    ATTEMPT_STARTED = "attempt.started"
    ATTEMPT_FAILED = "attempt.failed"
    ATTEMPT_DEFERRED = "attempt.deferred"
    SENT = "sent"
    FAILED = "failed"
    LEASE_EXPIRED = "lease.expired"
    CANCEL_REQUESTED = "cancel.requested"
    RETRACTED = "retracted"
    CANCEL_REFUSED = "cancel.refused"
    RETRIED = "retried"


@dataclass(frozen=True, slots=True)
class NewEvent:
    """One event to append: `kind` is one of Kind or another module's (`delivery.<event>`,
    `webhook.<outcome>`): lowercase words joined by dots, at most 64 characters."""

    notification_id: int
    kind: str
    attempt: int | None = None
    detail: dict[str, Any] | None = None


_APPEND = text(
    f"""
    INSERT INTO {TABLE} (enterprise_id, notification_id, kind, attempt, detail)
    SELECT e.enterprise_id, e.notification_id, e.kind, e.attempt, e.detail
    FROM unnest(
        CAST(:enterprises AS uuid[]), CAST(:ids AS bigint[]), CAST(:kinds AS text[]),
        CAST(:attempts AS integer[]), CAST(:details AS jsonb[])
    ) WITH ORDINALITY AS e(enterprise_id, notification_id, kind, attempt, detail, ord)
    ORDER BY e.ord
    """
)


def append_events(
    connection: Connection | Session, enterprise_id: uuid.UUID, events: Sequence[NewEvent]
) -> None:
    """Append events of one enterprise's notifications, in order, in one statement, inside the
    caller's transaction (never commits). Details larger than MAX_DETAIL_CHARS are cut."""
    append_events_across(connection, [(enterprise_id, event) for event in events])


def append_events_across(
    connection: Connection | Session, events: Sequence[tuple[uuid.UUID, NewEvent]]
) -> None:
    """`append_events` for the notifications of several enterprises at once, each event with
    its enterprise: for system transactions (the reconciler), which see every enterprise."""
    if not events:
        return
    parameters = {
        "enterprises": [enterprise_id for enterprise_id, _ in events],
        "ids": [e.notification_id for _, e in events],
        "kinds": [str(e.kind) for _, e in events],
        "attempts": [e.attempt for _, e in events],
        "details": [detail_json(e.detail) for _, e in events],
    }
    connection.execute(_APPEND, parameters)


def detail_json(detail: dict[str, Any] | None) -> str | None:
    """An event's detail as the JSON text stored: None stays NULL, and a detail whose text is
    longer than MAX_DETAIL_CHARS becomes `{"truncated": true, "excerpt": …}`."""
    if detail is None:
        return None
    encoded = json.dumps(detail, separators=(",", ":"), ensure_ascii=False, default=str)
    if len(encoded) <= MAX_DETAIL_CHARS:
        return encoded
    cut = {"truncated": True, "excerpt": encoded[: MAX_DETAIL_CHARS - 64]}
    return json.dumps(cut, separators=(",", ":"), ensure_ascii=False)


def excerpt(value: Any, limit: int = EXCERPT_CHARS) -> str | None:
    """An answer as text of at most `limit` characters (JSON for anything but a string), cut
    with a trailing "…" when longer; None stays None."""
    if value is None:
        return None
    raw = (
        value
        if isinstance(value, str)
        else json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)
    )
    return raw if len(raw) <= limit else raw[: limit - 1] + "…"


@lru_cache(maxsize=1)
def _host() -> str:
    return socket.gethostname()


def worker_identity() -> dict[str, Any]:
    """Who is making an attempt: this host and process (a forked child has its own pid)."""
    return {"host": _host(), "pid": os.getpid()}


@dataclass(frozen=True, slots=True)
class TimelineEvent:
    """One event as read back: a stored row, or the `accepted` event, which is the
    notification's own row (ACCEPTED_EVENT_ID)."""

    id: int
    enterprise_id: uuid.UUID
    notification_id: int
    created_at: dt.datetime
    kind: str
    attempt: int | None
    detail: dict[str, Any] | None


# The `accepted` event's id: stored events are numbered from 1, so it sorts first and a
# cursor past it (any stored id) skips it.
ACCEPTED_EVENT_ID = 0


def _accepted_event() -> Select[Any]:
    """The notification's row read as its `accepted` event: the row is written by the very
    statement that accepts the trigger (or by another service's INSERT), so the event needs no
    row of its own, and the intake's statements write one row less per notification."""
    n = Notification.__table__.c
    scheduled = case(
        (n.scheduled_for.is_not(None), func.jsonb_build_object("scheduledFor", n.scheduled_for))
    )
    return select(
        literal(ACCEPTED_EVENT_ID, BigInteger).label("id"),
        n.enterprise_id,
        n.id.label("notification_id"),
        n.created_at,
        literal(Kind.ACCEPTED.value).label("kind"),
        null().label("attempt"),
        scheduled.label("detail"),
    )


def list_events(
    session: Session,
    enterprise_id: uuid.UUID,
    notification_id: int,
    *,
    after_id: int | None = None,
    limit: int = 100,
) -> list[TimelineEvent]:
    """A keyset page of one notification's events, oldest first: those with id above
    `after_id`. The first page starts with `accepted` (read from the notification's row; none
    when the notification is not the enterprise's)."""
    e = NotificationEvent.__table__.c
    stored = select(
        e.id, e.enterprise_id, e.notification_id, e.created_at, e.kind, e.attempt, e.detail
    ).where(
        e.enterprise_id == enterprise_id,
        e.notification_id == notification_id,
        # Earlier builds stored `accepted` as a row; the notification's row says it now.
        e.kind != Kind.ACCEPTED.value,
    )
    if after_id is not None:
        parts = stored.where(e.id > after_id)
    else:
        n = Notification.__table__.c
        accepted = _accepted_event().where(
            n.enterprise_id == enterprise_id, n.id == notification_id
        )
        parts = union_all(accepted, stored)  # type: ignore[assignment]
    page = parts.order_by("id").limit(limit)
    return [TimelineEvent(**row._mapping) for row in session.execute(page)]
