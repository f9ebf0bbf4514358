"""deliver_notification: one attempt of one notification, by id."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from celery import Task
from sqlalchemy.exc import OperationalError

from shared.db.session import transaction
from shared.delivery import Outcome, deliver
from shared.notifications.transitions import clear_enqueued
from shared.novu.client import get_novu_client
from shared.queue import TaskName, publish_deliver
from shared.settings import get_settings
from worker.celery_app import app

log = logging.getLogger(__name__)

# Options of every delivery task (single and batch).
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
}


@app.task(
    name=TaskName.DELIVER_NOTIFICATION.value,
    **DELIVERY_TASK_OPTIONS,
    # Backstop only: Novu calls and rendering have their own, shorter limits. A task killed here
    # leaves its row PROCESSING, and the reconciler retries it when the lease runs out.
    soft_time_limit=45,
    time_limit=60,
)
def deliver_notification(self: Task, notification_id: int, enterprise_id: str) -> str:
    """Claim, render and hand one notification to Novu; schedule its retry if Novu failed."""
    settings = get_settings()
    enterprise = uuid.UUID(enterprise_id)
    result = deliver(notification_id, enterprise, novu=get_novu_client(), settings=settings)
    by_message = result.outcome is Outcome.RETRY and result.message_published
    if by_message and result.retry_in is not None:
        unpublished = publish_deliver([(notification_id, enterprise)], countdown=result.retry_in)
        if unpublished:
            # Redis is down: beat releases the row when it is due, instead of the reconciler
            # finding it REDELIVER_AFTER_SECONDS later.
            with transaction(enterprise) as session:
                clear_enqueued(session, notification_ids=unpublished)
    return result.outcome.value
