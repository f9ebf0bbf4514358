"""Task and queue names, the Celery configuration both sides share, and publishing by name.

The API publishes `deliver_notification` by name only: it never imports worker internals.
"""

from __future__ import annotations

import enum
import logging
import uuid
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

from celery import Celery

from shared.settings import Settings, get_settings

log = logging.getLogger(__name__)


class TaskName(enum.StrEnum):
    DELIVER_NOTIFICATION = "xnovu.deliver_notification"
    RECONCILE = "xnovu.reconcile"
    RELEASE_DUE = "xnovu.release_due_notifications"


class QueueName(enum.StrEnum):
    DELIVER = "xnovu.deliver"
    MAINTENANCE = "xnovu.maintenance"


TASK_QUEUES: dict[TaskName, QueueName] = {
    TaskName.DELIVER_NOTIFICATION: QueueName.DELIVER,
    TaskName.RECONCILE: QueueName.MAINTENANCE,
    TaskName.RELEASE_DUE: QueueName.MAINTENANCE,
}


def celery_config(settings: Settings) -> dict[str, Any]:
    """Celery settings that make a message's loss or repetition harmless (DESIGN rule 4)."""
    broker = settings.require_redis_url()
    return {
        "broker_url": broker,
        "result_backend": None,
        "task_ignore_result": True,
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_acks_on_failure_or_timeout": True,
        "worker_prefetch_multiplier": settings.worker_prefetch_multiplier,
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "task_routes": {name.value: {"queue": queue.value} for name, queue in TASK_QUEUES.items()},
        "task_default_queue": QueueName.DELIVER.value,
        "broker_connection_retry_on_startup": True,
        "broker_connection_timeout": 2,
        "broker_transport_options": {
            "visibility_timeout": settings.broker_visibility_timeout,
            "socket_connect_timeout": 2,
            "socket_timeout": 5,
            "retry_on_timeout": False,
        },
        # A publish that cannot reach Redis fails fast: the row in PostgreSQL is the record and
        # the reconciler publishes it later.
        "task_publish_retry": False,
        "timezone": "UTC",
        "enable_utc": True,
    }


@lru_cache(maxsize=1)
def producer() -> Celery:
    """A Celery app used only to publish messages by task name."""
    app = Celery("xnovu-producer")
    app.conf.update(celery_config(get_settings()))
    return app


def publish_deliver(
    items: Iterable[tuple[int, uuid.UUID]], *, countdown: float | None = None
) -> list[int]:
    """Publish deliver(id, enterprise) messages; returns the ids that could not be published."""
    app = producer()
    failed: list[int] = []
    items = list(items)
    for index, (notification_id, enterprise_id) in enumerate(items):
        try:
            app.send_task(
                TaskName.DELIVER_NOTIFICATION.value,
                args=[notification_id, str(enterprise_id)],
                queue=QueueName.DELIVER.value,
                countdown=countdown,
                retry=False,
            )
        except Exception as exc:  # broker down: the reconciler will publish these later
            log.warning("publish failed for notification %s: %s", notification_id, exc)
            failed.extend(nid for nid, _ in items[index:])
            break
    return failed
