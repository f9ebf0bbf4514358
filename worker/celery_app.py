"""The Celery application of the worker and beat processes."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from celery import Celery
from celery.signals import (
    beat_init,
    celeryd_init,
    setup_logging,
    task_prerun,
    worker_init,
    worker_process_init,
    worker_process_shutdown,
    worker_ready,
    worker_shutdown,
)

from shared import logs, metrics
from shared.db.session import reset_engine
from shared.novu.sync import PERIODIC_CHECK, request_sync
from shared.process import freeze_startup_objects
from shared.queue import QueueName, TaskName, celery_config
from shared.settings import get_settings
from worker import warmup
from worker.broker import serve_redis_schemes

settings = get_settings()
_log = logging.getLogger(__name__)

# kombu's Redis transports, kept from exiting the worker after a Redis crash (worker/broker.py),
# for redis://, rediss:// and sentinel:// brokers alike.
serve_redis_schemes()
app = Celery(
    "xnovu",
    include=[
        "worker.tasks.deliver",
        "worker.tasks.maintenance",
        "worker.tasks.retention",
        "worker.tasks.rules",
        "worker.tasks.sync",
        "worker.tasks.webhooks",
    ],
)
app.conf.update(celery_config(settings))
# Task events for Flower go out in batches, at most a tenth of a second late (worker/consumer.py).
app.conf.worker_consumer = "worker.consumer:Consumer"
# Beat's own scheduler, with a heartbeat /readyz and `xnovu health beat` read (worker/beat.py).
app.conf.beat_scheduler = "worker.beat:HeartbeatScheduler"
app.conf.beat_schedule = {
    "reconcile": {
        "task": TaskName.RECONCILE.value,
        "schedule": settings.reconcile_interval_seconds,
        # A tick that could not run in time is dropped: the next one does the same work.
        "options": {"expires": settings.reconcile_interval_seconds * 5},
    },
    "release-due-notifications": {
        "task": TaskName.RELEASE_DUE.value,
        "schedule": 1.0,
        "options": {"expires": 5.0},
    },
    # Syncs Novu when the discover document changed since the last successful sync: a deploy
    # that changed static workflows, a sync whose retries ran out (docs/architecture.md, "Novu").
    "novu-sync-check": {
        "task": TaskName.NOVU_SYNC.value,
        "schedule": settings.novu_sync_check_seconds,
        "args": (PERIODIC_CHECK, False),
        "options": {"expires": settings.novu_sync_check_seconds},
    },
    # Removes finished notifications past RETENTION_DAYS, in batches (docs/architecture.md,
    # "Retention").
    "purge-finished": {
        "task": TaskName.PURGE_FINISHED.value,
        "schedule": settings.retention_interval_seconds,
        "options": {"expires": settings.retention_interval_seconds},
    },
    # Hands due status webhooks to the webhook workers (docs/architecture.md, "Status
    # webhooks").
    "dispatch-webhooks": {
        "task": TaskName.DISPATCH_WEBHOOKS.value,
        "schedule": settings.webhook_dispatch_interval_seconds,
        "options": {"expires": max(5.0, settings.webhook_dispatch_interval_seconds * 5)},
    },
    # Arms and fires the scheduled rules (docs/architecture.md, "Rules"); a dropped tick's fires
    # are the next one's, late by a tick, never lost.
    "fire-rules": {
        "task": TaskName.FIRE_RULES.value,
        "schedule": settings.rules_tick_seconds,
        "options": {"expires": max(5.0, settings.rules_tick_seconds * 5)},
    },
}


@setup_logging.connect
def _logging(loglevel: Any = None, **_: Any) -> None:
    # Connected, this replaces Celery's own logging set-up (its format, its hijacking of the
    # root logger) with ours, in the worker, beat and Flower alike (shared/logs.py).
    level = logging.getLevelName(loglevel) if isinstance(loglevel, int) else loglevel
    logs.configure(level or settings.log_level, settings.log_format)


@celeryd_init.connect
def _no_banner_in_json(
    sender: Any = None, instance: Any = None, options: Any = None, **_: Any
) -> None:
    # Celery's banner is ASCII art printed on stdout, outside logging: with JSON logs it would
    # be the only lines a log pipeline cannot parse. Its facts go on one line instead, and
    # logging is set up now rather than at `setup_logging`, so that the warning Celery gives
    # next (running as root) is a JSON line too. (Beat prints its banner before any signal:
    # `celery --quiet ... beat` where its lines must all be JSON, as docker-compose.yml runs
    # it. Celery's shutdown notices are printed in its signal handler, outside logging.)
    if settings.log_format != "json" or instance is None:
        return
    instance.quiet = True
    options = options or {}
    _logging(options.get("loglevel"))
    pool = options.get("pool")
    _log.info(
        "worker starting",
        extra={
            "hostname": str(sender),
            # The pool's class, by the name of its module (prefork, threads, solo, ...).
            "pool": pool.__module__.rsplit(".", 1)[-1] if isinstance(pool, type) else pool,
            "concurrency": options.get("concurrency"),
            "queues": options.get("queues"),
        },
    )


@task_prerun.connect
def _task_context(task_id: str | None = None, task: Any = None, **_: Any) -> None:
    # Each task's lines carry its id and name, and nothing of the task before it.
    logs.clear()
    logs.bind(task_id=task_id, task=getattr(task, "name", None))


@worker_process_init.connect
def _fresh_connections(**_: Any) -> None:
    # A forked pool process must not share the parent's database sockets.
    reset_engine()
    warmup.in_child()
    # What it made since its parent froze (shared/process.py) is frozen too.
    freeze_startup_objects()


@worker_ready.connect
def _sync_novu(sender: Any = None, **_: Any) -> None:
    # Novu may be new, or have lost our workflows: whatever it knows, tell it again. Only a
    # worker of the delivery queues asks (not the status webhooks' workers).
    consumed = getattr(getattr(sender, "app", None), "amqp", None)
    queues = set(consumed.queues.consume_from) if consumed is not None else set()
    if queues and QueueName.DELIVER.value not in queues:
        return
    request_sync("worker start")


@worker_process_shutdown.connect
def _close_connections(pid: int | None = None, **_: Any) -> None:
    reset_engine()
    metrics.child_exited(pid or os.getpid())


# Metrics of the worker and beat on ports of their own (shared/metrics.py): the worker's main
# process switches to multiprocess mode before it forks its children, and serves their sum. A
# port that cannot be served is logged and the process goes on: metrics never stop delivery.
_metrics_dir: list[Path] = []


@worker_init.connect
def _freeze_before_forking(**_: Any) -> None:
    # Modules and tasks are imported; the pool is not forked yet: the main process and the
    # children it forks leave all of it out of the collector's full passes.
    warmup.before_fork()
    freeze_startup_objects()


@worker_init.connect
def _serve_worker_metrics(**_: Any) -> None:
    port = settings.worker_metrics_port
    if port is None:
        return
    made = "PROMETHEUS_MULTIPROC_DIR" not in os.environ
    try:
        directory = metrics.serve_worker_metrics(settings.metrics_host, port)
    except OSError as exc:
        _log.error("worker metrics not served on %s:%d: %s", settings.metrics_host, port, exc)
        return
    if made:
        _metrics_dir.append(directory)


@worker_shutdown.connect
def _remove_metrics_dir(**_: Any) -> None:
    for directory in _metrics_dir:
        metrics.remove_directory(directory)


@beat_init.connect
def _freeze_beat(**_: Any) -> None:
    freeze_startup_objects()


@beat_init.connect
def _serve_beat_metrics(**_: Any) -> None:
    port = settings.beat_metrics_port
    if port is None:
        return
    try:
        metrics.serve_beat_metrics(settings.metrics_host, port)
    except OSError as exc:
        _log.error("beat metrics not served on %s:%d: %s", settings.metrics_host, port, exc)


logging.getLogger("httpx").setLevel(logging.WARNING)
