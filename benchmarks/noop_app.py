"""The baseline of benchmark (b): a Celery no-op task on XNovu's broker and configuration.

Same broker, serializer, acks_late, prefetch and events as the XNovu worker, and the same
kombu transport (worker/broker.py, whose channels publish Flower's events through one client);
the task does nothing, so its drain rate is what Celery itself costs per message.
"""

from __future__ import annotations

from celery import Celery

from shared.queue import celery_config
from shared.settings import get_settings
from worker.broker import serve_redis_schemes

serve_redis_schemes()

NOOP_TASK = "bench.noop"
NOOP_QUEUE = "bench.noop"

app = Celery("xnovu-bench-noop")
app.conf.update(celery_config(get_settings()))
app.conf.task_routes = {NOOP_TASK: {"queue": NOOP_QUEUE}}


@app.task(name=NOOP_TASK, acks_late=True, reject_on_worker_lost=True)  # type: ignore[untyped-decorator]
def noop() -> None:
    """Nothing at all."""
