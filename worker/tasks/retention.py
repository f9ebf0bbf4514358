"""The beat task that removes finished notifications past RETENTION_DAYS
(shared/notifications/retention.py)."""

from __future__ import annotations

from typing import Any

from shared.notifications.retention import purge
from shared.queue import TaskName
from shared.settings import get_settings
from worker.celery_app import app


# Maintenance: kept out of Flower's task list (no task events), as the other periodic tasks.
@app.task(name=TaskName.PURGE_FINISHED.value, acks_late=False, send_events=False)
def purge_finished() -> dict[str, Any]:
    """Remove one run's worth of finished notifications past their retention."""
    settings = get_settings()
    done = purge(settings.retention_days, settings.retention_batch_size)
    return {"removed": done.notifications, "batches": done.batches, "more": done.more}
