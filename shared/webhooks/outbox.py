"""The outbox's state changes: hand due messages to tasks, record each attempt, retry, give
up, and disable an endpoint that keeps failing (docs/architecture.md, "Status webhooks").

Messages are written by a trigger on the timeline, in the transaction of the state change they
report (migration 0009). Beat's dispatcher claims them per endpoint: each claim (a lease over
at most WEBHOOK_BATCH_SIZE due messages of one endpoint) becomes one task on the webhooks queue,
and an endpoint never has more than WEBHOOK_MAX_IN_FLIGHT_PER_ENDPOINT claims at once, nor an
enterprise more than WEBHOOK_MAX_IN_FLIGHT_PER_ENTERPRISE, so a slow endpoint (or an
enterprise of slow endpoints) holds that many webhook threads at most and every other
enterprise's messages go on. A dead endpoint's messages back off (WEBHOOK_RETRY_SCHEDULE)
and are not due meanwhile.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, text

from shared.webhooks.sender import Answer

# Only one dispatcher claims at a time (two beats during a failover would race the in-flight
# count): the other skips its round.
_DISPATCH_LOCK = 7_246_016_613

_CLAIM = text(
    """
    WITH candidates AS (
        SELECT e.id AS endpoint_id, e.enterprise_id,
               (SELECT min(m.next_attempt_at) FROM notify.webhook_message m
                WHERE m.endpoint_id = e.id AND m.status = 'pending') AS oldest
        FROM notify.webhook_endpoint e
        WHERE e.enabled
          AND EXISTS (
              SELECT 1 FROM notify.webhook_message m
              WHERE m.endpoint_id = e.id AND m.status = 'pending'
                AND m.next_attempt_at <= now()
                AND (m.locked_until IS NULL OR m.locked_until < now()))
          AND (SELECT count(DISTINCT m.claim_id) FROM notify.webhook_message m
               WHERE m.endpoint_id = e.id AND m.claim_id IS NOT NULL
                 AND m.locked_until >= now()) < :max_in_flight
    ),
    ranked AS (
        SELECT c.*,
               row_number() OVER (PARTITION BY c.enterprise_id
                                  ORDER BY c.oldest, c.endpoint_id) AS turn,
               (SELECT count(DISTINCT m.claim_id) FROM notify.webhook_message m
                WHERE m.enterprise_id = c.enterprise_id AND m.claim_id IS NOT NULL
                  AND m.locked_until >= now()) AS busy
        FROM candidates c
    ),
    eligible AS (
        SELECT endpoint_id, enterprise_id, gen_random_uuid() AS claim_id
        FROM ranked
        WHERE turn <= :max_in_flight_enterprise - busy
        ORDER BY oldest
        LIMIT :max_endpoints
    ),
    picked AS (
        SELECT p.id, el.claim_id
        FROM eligible el
        CROSS JOIN LATERAL (
            SELECT m.id FROM notify.webhook_message m
            WHERE m.endpoint_id = el.endpoint_id AND m.status = 'pending'
              AND m.next_attempt_at <= now()
              AND (m.locked_until IS NULL OR m.locked_until < now())
            ORDER BY m.next_attempt_at, m.id
            LIMIT :batch_size
            FOR UPDATE OF m SKIP LOCKED
        ) p
    )
    UPDATE notify.webhook_message m
    SET claim_id = picked.claim_id,
        locked_until = now() + make_interval(secs => :lease_seconds)
    FROM picked
    WHERE m.id = picked.id
    RETURNING m.enterprise_id, m.endpoint_id, m.claim_id
    """
)


@dataclass(frozen=True, slots=True)
class Claim:
    """Due messages of one endpoint that one task delivers."""

    enterprise_id: uuid.UUID
    endpoint_id: int
    claim_id: uuid.UUID

    def as_args(self) -> list[Any]:
        """The task's arguments (JSON)."""
        return [str(self.enterprise_id), self.endpoint_id, str(self.claim_id)]


def claim_due(
    conn: Connection,
    *,
    batch_size: int,
    max_in_flight: int,
    max_in_flight_enterprise: int,
    lease_seconds: float,
    max_endpoints: int = 1000,
) -> list[Claim]:
    """Claim up to one batch per endpoint that has due messages and room in flight, its own
    and its enterprise's, oldest due first (one statement; a system transaction, across
    enterprises)."""
    if not conn.scalar(text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": _DISPATCH_LOCK}):
        return []
    rows = conn.execute(
        _CLAIM,
        {
            "batch_size": batch_size,
            "max_in_flight": max_in_flight,
            "max_in_flight_enterprise": max_in_flight_enterprise,
            "lease_seconds": lease_seconds,
            "max_endpoints": max_endpoints,
        },
    ).all()
    return sorted({Claim(row[0], row[1], row[2]) for row in rows}, key=lambda c: c.endpoint_id)


@dataclass(frozen=True, slots=True)
class Endpoint:
    id: int
    url: str
    secrets: tuple[str, ...]
    enabled: bool


@dataclass(frozen=True, slots=True)
class Message:
    id: int
    msg_id: str
    notification_id: int | None
    event_type: str
    payload: dict[str, Any]
    attempts: int


def load_claim(
    conn: Connection, endpoint_id: int, claim_id: uuid.UUID
) -> tuple[Endpoint | None, list[Message]]:
    """The endpoint (with the secrets that sign now) and the messages the claim still holds."""
    found = conn.execute(
        text(
            "SELECT id, url, secret, previous_secret, enabled,"
            " coalesce(previous_secret_expires_at > now(), false) AS previous_signs"
            " FROM notify.webhook_endpoint WHERE id = :id"
        ),
        {"id": endpoint_id},
    ).first()
    if found is None:
        return None, []
    signing: tuple[str, ...] = (found.secret,)
    if found.previous_secret and found.previous_signs:
        signing = (found.secret, found.previous_secret)
    endpoint = Endpoint(found.id, found.url, signing, found.enabled)
    rows = conn.execute(
        text(
            "SELECT id, msg_id, notification_id, event_type, payload, attempts"
            " FROM notify.webhook_message"
            " WHERE endpoint_id = :endpoint AND claim_id = :claim AND status = 'pending'"
            "   AND locked_until >= now()"
            " ORDER BY next_attempt_at, id"
        ),
        {"endpoint": endpoint_id, "claim": claim_id},
    ).all()
    return endpoint, [Message(*row) for row in rows]


def release(
    conn: Connection, claim_id: uuid.UUID, message_ids: Sequence[int], delay: float
) -> None:
    """Hand messages back unattempted (no attempt used), due again after `delay` seconds."""
    if not message_ids:
        return
    conn.execute(
        text(
            "UPDATE notify.webhook_message SET claim_id = NULL, locked_until = NULL,"
            " next_attempt_at = now() + make_interval(secs => :delay)"
            " WHERE id = ANY(:ids) AND claim_id = :claim"
        ),
        {"ids": list(message_ids), "claim": claim_id, "delay": delay},
    )


@dataclass(frozen=True, slots=True)
class Recorded:
    """What one attempt changed: the message's state and whether the endpoint was disabled."""

    status: str
    attempt: int
    next_attempt_at: dt.datetime | None
    disabled_reason: str | None


@dataclass(frozen=True, slots=True)
class Policy:
    """Retry and disable rules (settings), passed in so tests can use small ones."""

    retry_schedule: Sequence[float]
    disable_after_seconds: float
    disable_after_failed_messages: int


def record_attempt(
    conn: Connection,
    enterprise_id: uuid.UUID,
    endpoint_id: int,
    claim_id: uuid.UUID,
    message: Message,
    answer: Answer,
    policy: Policy,
) -> Recorded:
    """Store the attempt and move the message on: delivered, due again after the schedule's
    next delay, or failed once the schedule is used up. A failure marks the endpoint failing
    (since the first failure after its last success) and a given-up message counts towards
    disabling it; a success clears both."""
    attempt = message.attempts + 1
    succeeded = answer.succeeded
    if succeeded:
        status, delay = "delivered", None
    elif attempt > len(policy.retry_schedule):
        status, delay = "failed", None
    else:
        status, delay = "pending", policy.retry_schedule[attempt - 1]
    next_at = answer.attempted_at + dt.timedelta(seconds=delay) if delay is not None else None
    conn.execute(
        text(
            "INSERT INTO notify.webhook_attempt (enterprise_id, endpoint_id, message_id, attempt,"
            " attempted_at, duration_ms, status_code, response_excerpt, error, succeeded)"
            " VALUES (:enterprise, :endpoint, :message, :attempt, :at, :duration, :status_code,"
            " :excerpt, :error, :succeeded)"
        ),
        {
            "enterprise": enterprise_id,
            "endpoint": endpoint_id,
            "message": message.id,
            "attempt": attempt,
            "at": answer.attempted_at,
            "duration": answer.duration_ms,
            "status_code": answer.status_code,
            "excerpt": _clean(answer.excerpt),
            "error": _clean(answer.error),
            "succeeded": succeeded,
        },
    )
    conn.execute(
        text(
            "UPDATE notify.webhook_message SET attempts = :attempt, status = :status,"
            " next_attempt_at = coalesce(:next_at, next_attempt_at),"
            " finished_at = CASE WHEN :status = 'pending' THEN NULL ELSE now() END,"
            " claim_id = NULL, locked_until = NULL"
            " WHERE id = :id AND claim_id = :claim"
        ),
        {
            "attempt": attempt,
            "status": status,
            "next_at": next_at,
            "id": message.id,
            "claim": claim_id,
        },
    )
    disabled = None
    if succeeded:
        conn.execute(
            text(
                "UPDATE notify.webhook_endpoint SET failing_since = NULL, consecutive_failures = 0"
                " WHERE id = :id AND (failing_since IS NOT NULL OR consecutive_failures <> 0)"
            ),
            {"id": endpoint_id},
        )
    else:
        disabled = _count_failure(
            conn, endpoint_id, answer.attempted_at, given_up=status == "failed", policy=policy
        )
    return Recorded(status, attempt, next_at, disabled)


def _count_failure(
    conn: Connection, endpoint_id: int, at: dt.datetime, *, given_up: bool, policy: Policy
) -> str | None:
    row = conn.execute(
        text(
            "UPDATE notify.webhook_endpoint SET failing_since = coalesce(failing_since, :at),"
            " consecutive_failures = consecutive_failures + :given_up"
            " WHERE id = :id RETURNING failing_since, consecutive_failures, enabled"
        ),
        {"at": at, "given_up": int(given_up), "id": endpoint_id},
    ).first()
    if row is None or not row.enabled:
        return None
    reason = None
    if row.consecutive_failures >= policy.disable_after_failed_messages:
        reason = f"{row.consecutive_failures} messages in a row failed after all their retries"
    elif (at - row.failing_since).total_seconds() >= policy.disable_after_seconds:
        reason = f"every attempt has failed since {row.failing_since.isoformat()}"
    if reason is not None:
        conn.execute(
            text(
                "UPDATE notify.webhook_endpoint SET enabled = false, disabled_reason = :reason,"
                " disabled_at = now(), updated_at = now() WHERE id = :id"
            ),
            {"reason": reason, "id": endpoint_id},
        )
    return reason


def _clean(value: str | None) -> str | None:
    # PostgreSQL text cannot hold NUL, and an endpoint may answer anything.
    return value.replace("\x00", "\ufffd") if value is not None else None
