"""A worker process ready before its first task.

Everything a delivery uses is made on first use: the static workflows are found by importing
their packages, and each pool process builds its own database pool, Novu client, budget and
render-lane handles, thread pool and registry (shared/process.py, PerProcess). Left to the
first task, that cost a freshly forked child 0.3 to 0.4 s on this project's machines, and
under a steady stream of single triggers the other child's queue grew behind it for the
next second or two (docs/performance.md, "A worker ready before its first task").

So the work moves to the process's start: `before_fork` in the main process at `worker_init`
(what it imports, every child inherits), `in_child` in each pool process at
`worker_process_init`. Celery's prefork pool hands a child no task until that signal's
handlers have returned, and restarts one that is not up within `worker_proc_alive_timeout`
(4 s): the database connection is the one step that waits on another process, bounded by its
connect timeout (2 s, shared/db/session.py). A step that fails is logged and left to the
first task, which meets the same failure and retries as it would have anyway: warming up never
stops a worker from starting.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from sqlalchemy import text
from sqlalchemy.orm import configure_mappers

from shared.db.session import get_engine
from shared.notifications.fairness import get_render_lanes
from shared.novu.budget import get_novu_budget
from shared.novu.client import get_novu_client
from shared.settings import get_settings
from shared.templates.renderer import get_template_renderer
from shared.workflows.discovery import discover_all_static_workflows, static_workflow_dirs
from shared.workflows.registry import get_registry

log = logging.getLogger(__name__)


def _import_static_workflows() -> None:
    discover_all_static_workflows(static_workflow_dirs(get_settings()))


def _open_database_connection() -> None:
    # The pool's first connection, the dialect's first-connect queries included.
    with get_engine().connect() as connection:
        connection.execute(text("SELECT 1"))


def before_fork() -> None:
    """In the worker's main process, once its task modules are imported: import the static
    workflows' packages and configure the ORM's mappers, so that each child finds both done."""
    _run([("static workflows", _import_static_workflows), ("ORM mappers", configure_mappers)])


def in_child() -> None:
    """In a pool process, after its fork: build what its first delivery would build, and open
    its first database connection."""
    _run(
        [
            ("workflow registry", get_registry),
            ("template renderer", get_template_renderer),
            ("Novu client", get_novu_client),
            ("Novu budget", get_novu_budget),
            ("render lanes", get_render_lanes),
            ("database connection", _open_database_connection),
        ]
    )


def _run(steps: list[tuple[str, Callable[[], object]]]) -> None:
    started = time.perf_counter()
    for name, step in steps:
        try:
            step()
        except Exception as exc:  # the first task meets it again, and retries
            log.warning("warm-up: %s not ready (%s); the first task will try again", name, exc)
    log.debug("warmed up", extra={"duration_ms": round((time.perf_counter() - started) * 1000)})
