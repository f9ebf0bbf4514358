"""A worker's pool processes are ready before their first task (worker/warmup.py)."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import psutil
import psycopg
import pytest

from tests.conftest import Stack, Worker, _wait_for
from worker import warmup

pytestmark = pytest.mark.integration


def _application_names(stack: Stack) -> set[str]:
    with psycopg.connect(stack.env["DATABASE_URL"], connect_timeout=5) as conn:
        rows = conn.execute("SELECT application_name FROM pg_stat_activity").fetchall()
    return {name for (name,) in rows}


def test_each_pool_process_opens_its_database_connection_before_any_task(stack: Stack) -> None:
    # A worker of a queue nobody publishes to: whatever its children did, they did at start.
    idle = Worker(stack, "warmup", concurrency=2, queues="xnovu.warmup-test")
    idle.start(with_beat=False)
    try:
        assert idle.proc is not None
        children = psutil.Process(idle.proc.pid).children()
        assert len(children) == 2
        expected = {f"xnovu-{child.pid}" for child in children}
        _wait_for(
            lambda: expected <= _application_names(stack),
            10,
            f"a database connection from each pool process {sorted(expected)}",
        )
    finally:
        idle.stop()


def test_a_step_that_fails_is_logged_and_the_next_steps_still_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ran: list[str] = []

    def broken() -> None:
        raise ConnectionRefusedError("nobody listens")

    with caplog.at_level(logging.WARNING, logger=warmup.__name__):
        warmup._run([("first", lambda: ran.append("first")), ("broken", broken),
                     ("last", lambda: ran.append("last"))])  # fmt: skip
    assert ran == ["first", "last"]
    [record] = caplog.records
    assert "warm-up: broken not ready (nobody listens)" in record.getMessage()


def test_before_fork_imports_the_static_workflows_and_configures_the_mappers(
    stack: Stack,
) -> None:
    # In a process of its own: this one has imported them long ago.
    script = """
import json, sys
from shared.db.models import Base
from worker import warmup
names = lambda: sorted(n for n in sys.modules if n.startswith("shared.workflows.static."))
before = names()
configured_before = not Base.registry._new_mappers
warmup.before_fork()
print(json.dumps([before, names(), configured_before, not Base.registry._new_mappers]))
"""
    done = subprocess.run(
        [sys.executable, "-c", script], env=stack.env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    before, after, configured_before, configured_after = json.loads(done.stdout)
    assert before == []
    assert "shared.workflows.static.user_signup" in after
    assert (configured_before, configured_after) == (False, True)
