"""What the webhook tasks do: beat's dispatch, and a task delivering one claim's messages.

A claim's messages go one after another over one connection, each within
WEBHOOK_TIMEOUT_SECONDS, and each attempt is recorded in its own transaction as soon as it is
made (so a worker that dies repeats at most the message it was sending: at least once, with
the same `webhook-id`). The task stops starting attempts after WEBHOOK_TASK_SECONDS, and when
the endpoint does not answer at all (the rest would most likely wait just as long) it hands
the rest back, due again after the schedule's first delay, with no attempt used.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid

from sqlalchemy import Connection

from shared import metrics
from shared.db.session import connection, enterprise_transaction
from shared.queue import QueueName, publish_webhook_deliveries, queue_depth
from shared.settings import Settings, get_settings
from shared.webhooks import outbox, sender
from shared.webhooks.timeline import record_on_timeline

log = logging.getLogger(__name__)

# Dispatch pauses while this many tasks wait in the webhooks queue: with no webhook worker
# consuming it, each round would add a task per endpoint whose claim ran out, without end.
MAX_QUEUED_TASKS = 1000


def lease_seconds(settings: Settings) -> float:
    """How long a claim is held: the task's budget, its last attempt, and a margin."""
    return settings.webhook_task_seconds + settings.webhook_timeout_seconds + 30.0


def dispatch() -> int:
    """Claim due messages per endpoint and publish a task per claim; returns the claims."""
    settings = get_settings()
    queued = queue_depth(QueueName.WEBHOOKS)
    if queued is None or queued >= MAX_QUEUED_TASKS:
        if queued is not None:
            log.warning("webhook dispatch paused: %d tasks wait in %s", queued, QueueName.WEBHOOKS)
        return 0
    with connection() as conn, conn.begin():
        claims = outbox.claim_due(
            conn,
            batch_size=settings.webhook_batch_size,
            max_in_flight=settings.webhook_max_in_flight_per_endpoint,
            max_in_flight_enterprise=settings.webhook_max_in_flight_per_enterprise,
            lease_seconds=lease_seconds(settings),
        )
    publish_webhook_deliveries([claim.as_args() for claim in claims])
    return len(claims)


def policy(settings: Settings) -> outbox.Policy:
    """The retry and disable rules of the settings."""
    return outbox.Policy(
        retry_schedule=settings.webhook_retry_schedule,
        disable_after_seconds=settings.webhook_disable_after_seconds,
        disable_after_failed_messages=settings.webhook_disable_after_failed_messages,
    )


def deliver_claim(
    enterprise_id: uuid.UUID, endpoint_id: int, claim_id: uuid.UUID
) -> dict[str, int]:
    """Send the claim's messages; returns how many were delivered, retried, failed, handed
    back."""
    with connection() as conn:
        with enterprise_transaction(conn, enterprise_id):
            endpoint, messages = outbox.load_claim(conn, endpoint_id, claim_id)
        if endpoint is None or not messages:
            return {}
        if not endpoint.enabled:
            with enterprise_transaction(conn, enterprise_id):
                outbox.release(conn, claim_id, [m.id for m in messages], 0)
            metrics.STATUS_WEBHOOKS.labels("handed_back").inc(len(messages))
            return {"released": len(messages)}
        counts = asyncio.run(_deliver(conn, enterprise_id, claim_id, endpoint, messages))
    for outcome, key in _OUTCOMES:
        if counts[key]:
            metrics.STATUS_WEBHOOKS.labels(outcome).inc(counts[key])
    return counts


# The metric's outcome of each of _deliver's counts (shared/metrics.py).
_OUTCOMES = (
    ("delivered", "delivered"),
    ("retrying", "pending"),
    ("failed", "failed"),
    ("handed_back", "released"),
)


async def _deliver(
    conn: Connection,
    enterprise_id: uuid.UUID,
    claim_id: uuid.UUID,
    endpoint: outbox.Endpoint,
    messages: list[outbox.Message],
) -> dict[str, int]:
    settings = get_settings()
    rules = policy(settings)
    counts = {"delivered": 0, "pending": 0, "failed": 0, "released": 0}
    stop_at = time.monotonic() + settings.webhook_task_seconds
    async with sender.client(
        settings.webhook_connect_timeout_seconds, settings.webhook_timeout_seconds
    ) as http:
        for index, message in enumerate(messages):
            rest = [m.id for m in messages[index:]]
            if time.monotonic() >= stop_at:
                _hand_back(conn, enterprise_id, claim_id, rest, 0, counts)
                break
            answer = await sender.send(
                http,
                sender.Delivery(message.msg_id, message.payload, endpoint.url, endpoint.secrets),
                allow_private=settings.webhook_allow_private_networks,
                timeout=settings.webhook_timeout_seconds,
            )
            with enterprise_transaction(conn, enterprise_id):
                recorded = outbox.record_attempt(
                    conn, enterprise_id, endpoint.id, claim_id, message, answer, rules
                )
                record_on_timeline(conn, enterprise_id, endpoint.id, message, answer, recorded)
            counts[recorded.status] += 1
            if recorded.disabled_reason is not None:
                log.warning(
                    "webhook endpoint %d disabled: %s", endpoint.id, recorded.disabled_reason
                )
                _hand_back(conn, enterprise_id, claim_id, rest[1:], 0, counts)
                break
            if answer.unreachable:
                delay = rules.retry_schedule[0]
                _hand_back(conn, enterprise_id, claim_id, rest[1:], delay, counts)
                break
    return counts


def _hand_back(
    conn: Connection,
    enterprise_id: uuid.UUID,
    claim_id: uuid.UUID,
    message_ids: list[int],
    delay: float,
    counts: dict[str, int],
) -> None:
    with enterprise_transaction(conn, enterprise_id):
        outbox.release(conn, claim_id, message_ids, delay)
    counts["released"] += len(message_ids)
