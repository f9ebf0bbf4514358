"""deliver_batch: one attempt of many notifications of one enterprise, in Novu bulk calls."""

from __future__ import annotations

import os
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

from celery import Task

from shared.batch_delivery import SENDS_IN_FLIGHT, deliver_batch
from shared.novu.client import get_novu_client
from shared.queue import TaskName, publish_deliver_batch
from shared.settings import get_settings
from worker.celery_app import app
from worker.tasks.deliver import DELIVERY_TASK_OPTIONS

_pool: ThreadPoolExecutor | None = None
_pool_pid: int | None = None
_pool_lock = threading.Lock()


def send_pool() -> ThreadPoolExecutor:
    """The threads that carry this process's Novu bulk calls (made after a prefork fork)."""
    global _pool, _pool_pid
    if _pool is None or _pool_pid != os.getpid():
        with _pool_lock:
            if _pool is None or _pool_pid != os.getpid():
                _pool = ThreadPoolExecutor(
                    max_workers=SENDS_IN_FLIGHT, thread_name_prefix="novu-send"
                )
                _pool_pid = os.getpid()
    return _pool


@app.task(
    name=TaskName.DELIVER_BATCH.value,
    # As deliver_notification: a database outage is retried from the message a few times;
    # claimed rows it leaves PROCESSING come back through the reconciler's lease check.
    **DELIVERY_TASK_OPTIONS,
    # Backstop only: every Novu call has its own timeout, and rows are claimed one
    # sub-batch at a time, just before they are sent.
    soft_time_limit=120,
    time_limit=150,
)
def deliver_batch_task(
    self: Task, enterprise_id: str, notification_ids: list[int]
) -> dict[str, int]:
    """Claim, render and hand up to 1,000 notifications to Novu in bulk calls; publish the
    retries of a failed call as one countdown message."""
    enterprise = uuid.UUID(enterprise_id)
    report = deliver_batch(
        enterprise,
        [int(notification_id) for notification_id in notification_ids],
        novu=get_novu_client(),
        settings=get_settings(),
        executor=send_pool(),
    )
    for delay, ids in report.retries:
        # If this publish fails the rows wait in the database; the reconciler republishes them.
        publish_deliver_batch(enterprise, ids, countdown=delay)
    return report.as_dict()
