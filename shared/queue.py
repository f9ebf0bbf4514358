"""Task and queue names, the Celery configuration both sides share, and publishing by name.

The API publishes `deliver_notification` by name only: it never imports worker internals.
"""

from __future__ import annotations

import enum
import logging
import uuid
from collections.abc import Iterable, Sequence
from functools import lru_cache
from typing import Any

from celery import Celery

from shared.settings import Settings, get_settings

log = logging.getLogger(__name__)


class TaskName(enum.StrEnum):
    DELIVER_NOTIFICATION = "xnovu.deliver_notification"
    DELIVER_BATCH = "xnovu.deliver_batch"
    RECONCILE = "xnovu.reconcile"
    RELEASE_DUE = "xnovu.release_due_notifications"


class QueueName(enum.StrEnum):
    DELIVER = "xnovu.deliver"
    MAINTENANCE = "xnovu.maintenance"


TASK_QUEUES: dict[TaskName, QueueName] = {
    TaskName.DELIVER_NOTIFICATION: QueueName.DELIVER,
    TaskName.DELIVER_BATCH: QueueName.DELIVER,
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
        # When the broker connection drops, tasks already running finish and record their
        # outcome in PostgreSQL (Celery 6 would cancel them, leaving rows PROCESSING until their
        # lease runs out). Their ack may be lost with the connection; the message then comes
        # back and its claim finds nothing to do.
        "worker_cancel_long_running_tasks_on_connection_loss": False,
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


# How long one publish may wait for Redis (connect, or an answer) before the API gives up on it.
PUBLISH_TIMEOUT_SECONDS = 0.5


@lru_cache(maxsize=1)
def producer() -> Celery:
    """A Celery app used only to publish messages by task name."""
    app = Celery("xnovu-producer")
    config = celery_config(get_settings())
    # A publish never waits for Redis: without max_retries=0 kombu retries the connection for
    # broker_connection_timeout (2 s) on every publish while Redis is down, and a trigger's 202
    # would take that long; the short socket timeouts bound a publish to a Redis that hangs
    # (stopped, or a partition dropping packets) to 0.5 s. A publish that fails or times out
    # leaves the row for beat, and one that timed out but landed is a harmless duplicate.
    config["broker_connection_timeout"] = PUBLISH_TIMEOUT_SECONDS
    config["broker_transport_options"] = {
        **config["broker_transport_options"],
        "max_retries": 0,
        "socket_connect_timeout": PUBLISH_TIMEOUT_SECONDS,
        "socket_timeout": PUBLISH_TIMEOUT_SECONDS,
    }
    app.conf.update(config)
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


def queue_depth(queue: QueueName) -> int | None:
    """Messages waiting in `queue` (not those workers already hold); None when the broker
    cannot be reached."""
    try:
        with producer().connection_or_acquire() as conn:
            try:
                declared = conn.default_channel.queue_declare(queue=queue.value, passive=True)
            except conn.channel_errors:
                return 0  # never declared, or Redis dropped the empty list: nothing waits
            return int(declared.message_count)
    except Exception as exc:
        log.warning("cannot read the length of queue %s: %s", queue.value, exc)
        return None


# -- batched delivery (bulk triggers) -----------------------------------------------------------

# Ids one deliver_batch message carries: the task sends them to Novu in bulk calls of at most
# 100 events, several calls in flight at once (see shared.batch_delivery).
MAX_BATCH_MESSAGE_IDS = 1000


def publish_deliver_batch(
    enterprise_id: uuid.UUID, notification_ids: Sequence[int], *, countdown: float | None = None
) -> list[int]:
    """Publish deliver_batch(enterprise, ids) messages of at most MAX_BATCH_MESSAGE_IDS ids, one
    enterprise per message; returns the ids that could not be published."""
    app = producer()
    ids = list(notification_ids)
    for start in range(0, len(ids), MAX_BATCH_MESSAGE_IDS):
        chunk = ids[start : start + MAX_BATCH_MESSAGE_IDS]
        try:
            app.send_task(
                TaskName.DELIVER_BATCH.value,
                args=[str(enterprise_id), chunk],
                queue=QueueName.DELIVER.value,
                countdown=countdown,
                retry=False,
            )
        except Exception as exc:  # broker down: the reconciler will publish these later
            log.warning("publish failed for a batch of %d notifications: %s", len(chunk), exc)
            return ids[start:]
    return []
