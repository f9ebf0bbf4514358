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
from collections.abc import Iterable

from sqlalchemy.exc import SQLAlchemyError

from shared.db.session import transaction
from shared.notifications.transitions import Target, by_enterprise, clear_enqueued
from shared.queue import publish_deliver_batch

log = logging.getLogger(__name__)


def publish_deliveries(
    targets: Iterable[Target], *, countdown: float | None = None, ids_per_message: int | None = None
) -> int:
    """Publish deliver_batch messages for committed rows, one enterprise per message (at most
    `ids_per_message` ids each, default the broker's limit); rows whose publish failed are left
    for beat. Returns how many rows were published."""
    published = 0
    for enterprise_id, ids in by_enterprise(targets).items():
        failed = publish_deliver_batch(
            enterprise_id, ids, countdown=countdown, ids_per_message=ids_per_message
        )
        if failed:
            _leave_for_beat(enterprise_id, failed)
        published += len(ids) - len(failed)
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
