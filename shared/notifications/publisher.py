"""Publishing the deliveries of committed rows: the one place that talks to the broker.

Every publish follows docs/architecture.md, guarantee 1: a row is committed PENDING (with
`enqueued_at` stamped) before its delivery is published, so a message never names a row that
does not exist, and a publish that fails loses nothing. When Redis refuses a publish, the
rows' `enqueued_at` is cleared so that beat's `release_due_notifications` publishes them within
a second of Redis coming back; if even that write fails, the reconciler republishes them once
`enqueued_at` is older than REDELIVER_AFTER_SECONDS. Callers commit first, then call this.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence

from sqlalchemy.exc import SQLAlchemyError

from shared.db.session import transaction
from shared.notifications.transitions import Target, by_enterprise, clear_enqueued
from shared.queue import send_deliver_batches

log = logging.getLogger(__name__)


def publish_deliveries(
    targets: Iterable[Target], *, countdown: float | None = None, ids_per_message: int | None = None
) -> int:
    """Publish deliver_batch messages for committed rows, one enterprise per message (at most
    `ids_per_message` ids each, default the broker's limit); rows whose publish failed are left
    for beat. Returns how many rows were published."""
    return start_publishing(
        by_enterprise(targets), countdown=countdown, ids_per_message=ids_per_message
    )()


def start_publishing(
    batches: Mapping[uuid.UUID, Sequence[int]],
    *,
    countdown: float | None = None,
    ids_per_message: int | None = None,
) -> Callable[[], int]:
    """publish_deliveries() in two halves: the messages of every enterprise's rows are sent
    now, and the function returned waits for the broker's answer, leaves for beat the rows
    whose publish failed, and returns how many rows were published."""
    answers = send_deliver_batches(batches, countdown=countdown, ids_per_message=ids_per_message)

    def published() -> int:
        failed = answers()
        for enterprise_id, ids in failed.items():
            _leave_for_beat(enterprise_id, ids)
        return sum(map(len, batches.values())) - sum(map(len, failed.values()))

    return published


def publish_enterprise(
    enterprise_id: uuid.UUID, notification_ids: Iterable[int], *, countdown: float | None = None
) -> int:
    """publish_deliveries() for rows of one enterprise."""
    return publish_deliveries(
        ((notification_id, enterprise_id) for notification_id in notification_ids),
        countdown=countdown,
    )


def _leave_for_beat(enterprise_id: uuid.UUID, notification_ids: list[int]) -> None:
    try:
        with transaction(enterprise_id) as session:
            clear_enqueued(session, notification_ids=notification_ids)
    except SQLAlchemyError as exc:
        log.warning("could not mark %d unpublished rows: %s", len(notification_ids), exc)
