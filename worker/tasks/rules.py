"""Beat task: fire the scheduled rules that are due (shared/rules/scheduler.py)."""

from __future__ import annotations

import datetime as dt

from shared import metrics
from shared.queue import TaskName
from shared.rules.scheduler import fire_rules as fire_due_rules
from worker.celery_app import app


# Maintenance sends no task events (see worker/tasks/maintenance.py); what a tick created is in
# its log line, the notifications' timelines and the xnovu_rule_fires counter.
@app.task(name=TaskName.FIRE_RULES.value, acks_late=False, send_events=False)
def fire_rules(now: str | None = None) -> dict[str, int]:
    """Arm new and changed rules and fire the due ones; `now` (ISO 8601) for tests only."""
    moment = dt.datetime.fromisoformat(now) if now is not None else None
    result = fire_due_rules(moment)
    for outcome in ("fired", "failed", "skipped"):
        if count := getattr(result, outcome):
            metrics.RULE_FIRES.labels(outcome).inc(count)
    return {
        "armed": result.armed,
        "fired": result.fired,
        "failed": result.failed,
        "skipped": result.skipped,
    }
