"""A FAILED notification, shown in Flower as a failed task (docs/architecture.md, "Flower").

The delivery task is a batch: it succeeds while some of its notifications fail, so Flower would
say "Failed 0" beside FAILED notifications. For each notification a delivery task FAILED, the
worker emits the events of a task `xnovu.notification_failed` (received, then failed with the
notification's error code and message), its id new, its argument the notification's id, its
parent the delivery task. No such task runs: only its events are sent, from the worker that
failed the notification. So nothing is queued, nothing can be retried and no worker process is
taken from delivery; the events of one task go in messages of EVENTS_PER_MESSAGE (Celery's
buffered event groups, which Flower reads as it reads any other event).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from typing import Any

from celery import Task

log = logging.getLogger(__name__)

NOTIFICATION_FAILED = "xnovu.notification_failed"
EVENTS_PER_MESSAGE = 100
# Flower shows the exception as given: the error's code and the start of its message.
REASON_CHARS = 300


def reason(error: dict[str, Any] | None) -> str:
    """The failed task's exception text for a notification's error_details."""
    if not error:
        return "NotificationFailed()"
    text = f"{error.get('code', 'failed')}: {error.get('message', '')}".rstrip(": ")
    return f"NotificationFailed({text[:REASON_CHARS]!r})"


def announce_failures(
    task: Task, enterprise_id: str, failures: Sequence[tuple[int, dict[str, Any] | None]]
) -> None:
    """Emit a failed task's events for each (notification id, error_details) a delivery task
    FAILED; never raises (delivery is recorded already, this is only the monitor's view)."""
    app = task.app
    if not failures or not app.conf.worker_send_task_events:
        return
    parent = task.request.id
    try:
        with app.producer_or_acquire() as producer:
            dispatcher = app.events.Dispatcher(
                producer.connection,
                task.request.hostname,
                channel=producer.channel,
                buffer_while_offline=False,
                buffer_group=("task",),
                buffer_limit=EVENTS_PER_MESSAGE,
            )
            with dispatcher:
                for notification_id, error in failures:
                    task_id = str(uuid.uuid4())
                    dispatcher.send(
                        "task-received",
                        uuid=task_id,
                        name=NOTIFICATION_FAILED,
                        args=repr([notification_id]),
                        kwargs=repr({"enterprise_id": enterprise_id}),
                        root_id=task.request.root_id or parent,
                        parent_id=parent,
                        retries=0,
                        eta=None,
                        expires=None,
                    )
                    dispatcher.send(
                        "task-failed", uuid=task_id, exception=reason(error), traceback=None
                    )
                dispatcher.flush()
    except Exception as exc:  # the broker went away: the notifications are FAILED all the same
        log.warning("could not show %d failed notifications in Flower: %s", len(failures), exc)
