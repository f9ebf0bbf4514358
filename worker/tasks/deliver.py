"""The delivery task: one attempt of 1..N notifications of one enterprise.

Every producer (the API's recorder, the `notificationId` trigger, the retry API, beat's
release and reconcile, the task's own retries) publishes `deliver_batch(enterprise, ids)`;
the task hands the ids to the one delivery engine (shared/notifications/delivery.py), metered
by Novu's rate-limit budget that every worker process shares (shared/novu/budget.py), its slow
renders taking turns in their enterprise's render lane (shared/notifications/fairness.py), and
adds what Novu charged to the usage counters `GET /api/stats` reports, and shows each
notification it FAILED in Flower as a failed task (worker/failure_events.py).
"""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from celery import Task
from sqlalchemy.exc import OperationalError

from shared import logs
from shared.notifications.delivery import SENDS_IN_FLIGHT, deliver
from shared.notifications.fairness import get_render_lanes
from shared.notifications.publisher import publish_enterprise
from shared.novu.budget import get_novu_budget
from shared.novu.client import get_novu_client
from shared.process import PerProcess
from shared.queue import TaskName
from shared.settings import get_settings
from worker.celery_app import app
from worker.failure_events import announce_failures

# The threads that carry this process's Novu bulk calls (made after a prefork fork).
_send_pool = PerProcess(
    lambda: ThreadPoolExecutor(max_workers=SENDS_IN_FLIGHT, thread_name_prefix="novu-send")
)

# Options of the delivery tasks (docs/architecture.md, guarantee 5).
DELIVERY_TASK_OPTIONS: dict[str, Any] = {
    "bind": True,
    "acks_late": True,
    "reject_on_worker_lost": True,
    # A database outage is retried a few times from the message; beyond that the row stays
    # PENDING or PROCESSING and the reconciler brings it back.
    "autoretry_for": (OperationalError,),
    "retry_backoff": True,
    "retry_backoff_max": 30,
    "max_retries": 5,
    # Backstop only: every Novu call has its own timeout, and rows are claimed one sub-batch
    # at a time, just before they are sent. A task killed here leaves its rows PROCESSING, and
    # the reconciler retries them when their lease runs out.
    "soft_time_limit": 120,
    "time_limit": 150,
}


def _deliver(task: Task, enterprise_id: str, notification_ids: list[int]) -> dict[str, int]:
    enterprise = uuid.UUID(enterprise_id)
    logs.bind(enterprise_id=enterprise_id)  # on each notification's lines (delivery.py)
    budget = get_novu_budget()
    report = deliver(
        enterprise,
        [int(notification_id) for notification_id in notification_ids],
        novu=get_novu_client(),
        settings=get_settings(),
        executor=_send_pool.get(),
        budget=budget,
        lanes=get_render_lanes(),
    )
    for delay, ids in report.retries:
        publish_enterprise(enterprise, ids, countdown=delay)
    budget.record_usage(enterprise, tokens=report.novu_tokens, sent=report.sent)
    announce_failures(task, enterprise_id, report.failures)
    return report.as_dict()


@app.task(name=TaskName.DELIVER_BATCH.value, **DELIVERY_TASK_OPTIONS)
def deliver_batch(self: Task, enterprise_id: str, notification_ids: list[int]) -> dict[str, int]:
    """Claim, render and hand up to 1,000 notifications to Novu; publish the retries of a
    failed call as countdown messages."""
    return _deliver(self, enterprise_id, notification_ids)


@app.task(name=TaskName.DELIVER_NOTIFICATION.value, **DELIVERY_TASK_OPTIONS)
def deliver_notification(self: Task, notification_id: int, enterprise_id: str) -> dict[str, int]:
    """The single-notification task of earlier releases: consumes messages still queued from
    before an upgrade, as a deliver_batch of one (docs/architecture.md, "Upgrading")."""
    return _deliver(self, enterprise_id, [notification_id])
