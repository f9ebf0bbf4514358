"""The reconciler republishes stale PENDING rows only while the deliver queue is short: under a
backlog their messages are most likely still queued, and republishing them would only feed the
backlog (the redelivery storm the chaos run found).

Runs on a PostgreSQL and Redis of its own with no worker, so the queue holds exactly what the
API and the reconciler put there.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from shared.queue import QueueName
from tests.chaos.stack import REPO, ChaosStack

pytestmark = pytest.mark.integration

REDELIVER_AFTER_SECONDS = 1
TIMINGS = {
    "REDELIVER_AFTER_SECONDS": str(REDELIVER_AFTER_SECONDS),
    "RATE_LIMIT_PER_SECOND": "0",
    "LOG_LEVEL": "WARNING",
}


@pytest.fixture
def own_stack(tmp_path: Path) -> Iterator[ChaosStack]:
    stack = ChaosStack(tmp_path / "stack", TIMINGS)
    try:
        stack.start_servers()
        stack.start_api()
        yield stack
    finally:
        stack.stop()


def _in_worker(stack: ChaosStack, code: str) -> Any:
    """What `code` prints as JSON, run in a process configured as this stack's worker."""
    done = subprocess.run(
        [sys.executable, "-c", code],
        env=stack.env,
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def _reconcile(stack: ChaosStack) -> dict[str, Any]:
    """One reconcile run, as beat would have the worker run it, against this stack."""
    result: dict[str, Any] = _in_worker(
        stack,
        "import json; from worker.tasks.maintenance import reconcile; "
        "print(json.dumps(reconcile()))",
    )
    return result


def _queued(stack: ChaosStack) -> int:
    import redis

    client = redis.Redis.from_url(stack.env["REDIS_URL"])
    try:
        return int(client.llen(QueueName.DELIVER.value))
    finally:
        client.close()


def _drop_queue(stack: ChaosStack) -> None:
    """The messages are lost, as with a Redis that crashed without its AOF."""
    import redis

    client = redis.Redis.from_url(stack.env["REDIS_URL"])
    try:
        client.delete(QueueName.DELIVER.value)
    finally:
        client.close()


@pytest.mark.timeout(180)
def test_stale_rows_are_republished_only_while_the_deliver_queue_is_short(
    own_stack: ChaosStack,
) -> None:
    stack = own_stack
    key = stack.create_api_key(uuid.uuid4())
    limit = int(
        _in_worker(
            stack,
            "from worker.tasks.maintenance import REDELIVER_BELOW_QUEUE_DEPTH as limit; "
            "print(limit)",
        )
    )
    backlog = limit + 10

    def trigger(index: int) -> None:
        response = http.post(
            "/api/trigger",
            json={
                "workflowId": "user-signup",
                "payload": {"userId": f"u-{index}", "email": f"u-{index}@example.com", "name": "A"},
            },
        )
        assert response.status_code == 202, response.text

    # One at a time, each once the last one's message is queued: triggers that arrive
    # together, or while the recorder holds rows because the queue is long (BACKLOG_MESSAGES),
    # share one deliver_batch message, and the queue's depth counts messages.
    with httpx.Client(
        base_url=stack.api_url, headers={"Authorization": f"Bearer {key}"}, timeout=10
    ) as http:
        for index in range(backlog):
            trigger(index)
            deadline = time.monotonic() + 10
            while _queued(stack) < index + 1 and time.monotonic() < deadline:
                time.sleep(0.005)
    assert _queued(stack) == backlog
    time.sleep(REDELIVER_AFTER_SECONDS + 0.5)  # every row is now "published long ago"

    # A backlog: the rows' messages are still queued, so nothing is added to it.
    assert _reconcile(stack)["republished"] == 0
    assert _queued(stack) == backlog

    # The messages are gone: the rows are republished, a queue's worth per run.
    _drop_queue(stack)
    assert _reconcile(stack)["republished"] == limit
    assert _queued(stack) == limit
    assert _reconcile(stack)["republished"] == 0  # the queue is full again
