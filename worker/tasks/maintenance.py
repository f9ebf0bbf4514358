"""Beat tasks: release due rows and reconcile lost messages and dead workers' leases.

Both are safe to run twice at once (SKIP LOCKED and conditional updates), so an overlap
during a beat failover is harmless.
"""

from __future__ import annotations

import logging

from celery import Task

from shared import metrics
from shared.db.session import transaction
from shared.notifications import transitions
from shared.notifications.publisher import publish_deliveries
from shared.queue import QueueName, TaskName, queue_depth
from shared.settings import get_settings
from worker.celery_app import app
from worker.failure_events import announce_failures

log = logging.getLogger(__name__)

# Rows published long ago and still PENDING are republished only while fewer messages than this
# wait in the deliver queue. Under a backlog, such a row is most likely still in the queue, and
# republishing every row older than REDELIVER_AFTER_SECONDS would add more duplicates each
# round than the workers can drain (seen in the chaos run: 8 skipped messages for every one
# sent). Lost messages are still found: the backlog drains, then they are republished.
REDELIVER_BELOW_QUEUE_DEPTH = 50


# Maintenance sends no task events: it ran every second and pushed the deliveries off
# Flower's task list (what it did is in its log lines when it did something).
@app.task(name=TaskName.RELEASE_DUE.value, acks_late=False, send_events=False)
def release_due_notifications() -> int:
    """Publish PENDING rows that became due and were never published (scheduled, long retries)."""
    settings = get_settings()
    with transaction() as session:
        rows = transitions.mark_enqueued(
            session, stale_after_seconds=None, limit=settings.reconcile_batch_size
        )
    if rows:
        metrics.RECONCILER.labels("released").inc(len(rows))
    return publish_deliveries(rows)


@app.task(name=TaskName.RECONCILE.value, bind=True, acks_late=False, send_events=False)
def reconcile(self: Task) -> dict[str, int]:
    """Requeue PROCESSING rows whose lease ran out and republish PENDING rows nobody consumed."""
    settings = get_settings()
    with transaction() as session:
        requeued, failed = transitions.expire_leases(
            session,
            max_attempts=settings.delivery_max_attempts,
            limit=settings.reconcile_batch_size,
        )
    depth = queue_depth(QueueName.DELIVER)
    room = 0 if depth is None else REDELIVER_BELOW_QUEUE_DEPTH - depth
    stale: list[transitions.Target] = []
    if room > 0:
        with transaction() as session:
            stale = transitions.mark_enqueued(
                session,
                stale_after_seconds=settings.redeliver_after_seconds,
                limit=min(room, settings.reconcile_batch_size),
            )
    # Stale rows go one per message: the throttle above counts messages.
    published = publish_deliveries(requeued) + publish_deliveries(stale, ids_per_message=1)
    if requeued or stale or failed:
        for action, count in (
            ("lease_expired", len(requeued)),
            ("lease_failed", len(failed)),
            ("republished", len(stale)),
        ):
            metrics.RECONCILER.labels(action).inc(count)
        metrics.RETRIES.labels("lease_expired").inc(len(requeued))
        log.info(
            "reconcile: %d leases expired, %d failed, %d republished",
            len(requeued),
            len(failed),
            len(stale),
        )
    if failed:
        # Shown in Flower as failed tasks, like the ones a delivery task fails.
        for enterprise_id, ids in transitions.by_enterprise(failed).items():
            announce_failures(self, str(enterprise_id), [(i, LEASE_LOST) for i in ids])
    return {"leases_expired": len(requeued), "failed": len(failed), "republished": published}


# The error_details of a row the reconciler FAILED (transitions.expire_leases).
LEASE_LOST = {"code": "attempts_exhausted", "message": transitions.LEASE_LOST_ON_LAST_ATTEMPT}
