"""The Novu sync task: what `request_sync` publishes, beat's periodic check, and the worker's
start publish (docs/architecture.md, "Novu").

`xnovu.novu_sync(reason, force=True)` syncs under the lock every process shares
(shared/novu/sync.py). A requested sync that fails is retried with capped, jittered backoff
and records each failure; beat's check (`force` False) syncs only when the discover document
changed since the last successful sync, and is not retried: the next check is its retry.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Task
from celery.exceptions import MaxRetriesExceededError

from shared.novu.retry import backoff_delay
from shared.novu.sync import LOCK_SECONDS, SyncBusy, SyncNotConfigured, sync_exclusively
from shared.queue import TaskName
from worker.celery_app import app

log = logging.getLogger(__name__)

# A failed sync is tried again after up to 1, 2, 4, ... 30 s (full jitter), this many times: 2
# minutes at most in all; then beat's check takes over.
SYNC_MAX_RETRIES = 8
SYNC_RETRY_BASE_SECONDS = 1.0
SYNC_RETRY_CAP_SECONDS = 30.0


# No task events: beat checks every minute, and Flower's task list is for deliveries.
@app.task(
    name=TaskName.NOVU_SYNC.value,
    bind=True,
    acks_late=False,
    max_retries=SYNC_MAX_RETRIES,
    send_events=False,
)
def novu_sync(self: Task, reason: str, force: bool = True) -> dict[str, Any]:
    """Sync Novu with the bridge's discover document (only when it changed, unless `force`)."""
    # A requested sync waits for one running (which may have read the workflows before this
    # request's change); the request mark lets at most one task wait at a time. Beat's check
    # never waits: the next check follows up.
    wait = LOCK_SECONDS if force else 0.0
    try:
        outcome = sync_exclusively(reason=reason, force=force, wait_seconds=wait)
    except SyncNotConfigured as exc:
        log.warning("Novu sync (%s) skipped: %s", reason, exc)
        return {"reason": reason, "error": str(exc), "skipped": True}
    except SyncBusy:
        if force:
            log.warning("Novu sync (%s) skipped: another sync held the lock %.0f s", reason, wait)
        return {"reason": reason, "skipped": True, "busy": True}
    if outcome.ok or not force:
        return outcome.as_dict()
    delay = backoff_delay(
        self.request.retries + 1, base=SYNC_RETRY_BASE_SECONDS, cap=SYNC_RETRY_CAP_SECONDS
    )
    try:
        raise self.retry(countdown=delay)
    except MaxRetriesExceededError:
        log.warning("Novu sync (%s) gave up after %d retries", reason, SYNC_MAX_RETRIES)
        return outcome.as_dict()
