"""The notification timeline's record of status webhook attempts (kinds `webhook.*`).

`webhook.delivered` (the endpoint answered 2xx), `webhook.retrying` (an attempt failed and
another is scheduled), `webhook.failed` (the message ran out of retries). Written in the
transaction that records the attempt; the outbox's trigger ignores these kinds.
"""

from __future__ import annotations

import uuid

from sqlalchemy import Connection

from shared.notifications.timeline import NewEvent, append_events
from shared.webhooks.outbox import Message, Recorded
from shared.webhooks.sender import Answer

KIND_OF_STATUS = {
    "delivered": "webhook.delivered",
    "pending": "webhook.retrying",
    "failed": "webhook.failed",
}


def record_on_timeline(
    conn: Connection,
    enterprise_id: uuid.UUID,
    endpoint_id: int,
    message: Message,
    answer: Answer,
    recorded: Recorded,
) -> None:
    """Append the attempt's event to its notification's timeline (messages about a
    notification only)."""
    if message.notification_id is None:
        return
    detail = {
        "endpointId": endpoint_id,
        "webhookId": message.msg_id,
        "eventType": message.event_type,
        "webhookAttempt": recorded.attempt,
        "statusCode": answer.status_code,
        "durationMs": answer.duration_ms,
        "error": answer.error,
        "nextAttemptAt": recorded.next_attempt_at.isoformat() if recorded.next_attempt_at else None,
        "endpointDisabled": recorded.disabled_reason,
    }
    append_events(
        conn,
        enterprise_id,
        [
            NewEvent(
                message.notification_id,
                KIND_OF_STATUS[recorded.status],
                detail={key: value for key, value in detail.items() if value is not None},
            )
        ],
    )
