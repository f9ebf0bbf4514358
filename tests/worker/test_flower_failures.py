"""A FAILED notification shows in Flower as a failed task (worker/failure_events.py): the batch
task that failed it succeeded, so Flower would otherwise say "Failed 0". Read from a real
Flower's API, fed by the real worker's events."""

from __future__ import annotations

import ast
import datetime as dt
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from devtools.cli import flower_hears_a_worker
from devtools.devstack import free_port
from shared.db.enums import NotificationStatus
from shared.db.models import Notification
from shared.db.session import transaction
from shared.queue import QueueName
from shared.settings import get_settings
from tests.conftest import REPO, Stack, _wait_for, retract_leftover_rows, wait_for_status
from tests.factories import trigger_signup
from worker.failure_events import NOTIFICATION_FAILED, reason

pytestmark = pytest.mark.integration


@pytest.fixture()
def flower(stack: Stack, tmp_path: Path) -> Iterator[str]:
    port = free_port()
    env = {**stack.env, "FLOWER_UNAUTHENTICATED_API": "true"}
    env.pop("FLOWER_BASIC_AUTH", None)
    log = tmp_path / "flower.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "worker.celery_app", "flower",
         "--address=127.0.0.1", f"--port={port}"],
        env=env, cwd=REPO, stdout=log.open("wb"), stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        # Flower answers its API before its event receiver has bound to the broker, and events
        # sent before then are lost to it: wait until it has heard a worker's heartbeat.
        _wait_for(lambda: flower_hears_a_worker(url), 60, f"Flower hearing the worker (log: {log})")
        yield url
    finally:
        proc.terminate()
        proc.wait(15)


def _tasks(url: str) -> dict[str, Any] | None:
    try:
        return dict(httpx.get(f"{url}/api/tasks", timeout=5).json())
    except (httpx.HTTPError, ValueError):
        return None


def _named(url: str, name: str, notification_id: int) -> list[dict[str, Any]]:
    """Flower's tasks called `name` whose arguments name the notification."""
    found = []
    for task in (_tasks(url) or {}).values():
        if task.get("name") != name:
            continue
        args = ast.literal_eval(task.get("args") or "[]")
        if notification_id in args or (len(args) > 1 and notification_id in args[1]):
            found.append(task)
    return found


def test_a_failed_notification_is_a_failed_task_in_flower(client, tenant, worker, emulator, flower):
    retract_leftover_rows("tests/worker/test_flower_failures.py")
    # Flower hears the worker: a notification sent shows as its delivery task, and no failure.
    sent = trigger_signup(client, tenant)
    wait_for_status(client, tenant, sent["notificationId"], {"SENT"})
    _wait_for(
        lambda: _named(flower, "xnovu.deliver_batch", sent["notificationId"]), 30, "the delivery"
    )
    assert not _named(flower, NOTIFICATION_FAILED, sent["notificationId"])

    emulator.post("/_emulator/faults", json={"status": 400, "rate": 1.0})
    failed = trigger_signup(client, tenant)
    row = wait_for_status(client, tenant, failed["notificationId"], {"SENT", "FAILED"})
    emulator.delete("/_emulator/faults")
    assert row["notification_status"] == "FAILED"

    _wait_for(
        lambda: _named(flower, NOTIFICATION_FAILED, failed["notificationId"]),
        30,
        "the failed notification's task in Flower",
    )
    [task] = _named(flower, NOTIFICATION_FAILED, failed["notificationId"])
    assert task["state"] == "FAILURE"
    assert task["exception"] == reason(row["error_details"])
    assert "novu_rejected" in task["exception"]
    assert task["worker"]  # the worker that failed it
    # Its parent: the delivery task that ran the attempt (which itself succeeded). The worker
    # publishes its own task events up to 0.1 s late (worker/consumer.py), so Flower may hear
    # of the failed notification before it hears of that task's end.
    _wait_for(
        lambda: any(
            t["state"] == "SUCCESS"
            for t in _named(flower, "xnovu.deliver_batch", failed["notificationId"])
        ),
        30,
        "the delivery task's success in Flower",
    )
    [batch] = _named(flower, "xnovu.deliver_batch", failed["notificationId"])
    assert task["parent_id"] == batch["uuid"] and batch["state"] == "SUCCESS"
    # The worker's count of failed tasks, as the dashboard shows it, is no longer 0.
    dashboard = httpx.get(f"{flower}/workers", params={"json": 1}, timeout=5).json()
    assert any(w.get("task-failed", 0) >= 1 for w in dashboard["data"]), dashboard


def test_a_notification_the_reconciler_failed_is_a_failed_task_too(client, tenant, worker, flower):
    """A worker that died holding a notification on its last attempt: the reconciler FAILs it
    when the lease runs out, and shows it in Flower as a delivery would."""
    later = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).isoformat()
    accepted = trigger_signup(client, tenant, scheduledFor=later)  # never claimed meanwhile
    with transaction() as session:  # as if claimed for the last time by a worker that died
        session.execute(
            update(Notification)
            .where(Notification.id == accepted["notificationId"])
            .values(
                notification_status=NotificationStatus.PROCESSING,
                attempts=get_settings().delivery_max_attempts,
                locked_until=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1),
            )
        )
    row = wait_for_status(client, tenant, accepted["notificationId"], {"FAILED"}, timeout=30)
    _wait_for(
        lambda: _named(flower, NOTIFICATION_FAILED, accepted["notificationId"]),
        30,
        "the reconciler's failed notification in Flower",
    )
    [task] = _named(flower, NOTIFICATION_FAILED, accepted["notificationId"])
    assert task["state"] == "FAILURE" and "attempts_exhausted" in task["exception"]
    assert row["error_details"]["code"] == "attempts_exhausted"


def test_flowers_broker_page_lists_every_queue_with_its_length(worker, webhook_worker, flower):
    """The Broker page and its API read the queues the workers consume through the broker's
    URL: the worker's transport (worker/broker.py) must keep its `redis://` scheme (with a
    `module:Class` one, Flower answered 404 "broker is not supported")."""
    every = {queue.value for queue in QueueName}

    def lengths() -> dict[str, Any]:
        answer = httpx.get(f"{flower}/api/queues/length", timeout=10)
        assert answer.status_code == 200, answer.text[:500]
        return {queue["name"]: queue["messages"] for queue in answer.json()["active_queues"]}

    # Flower learns which queues the workers consume when it next inspects them.
    _wait_for(lambda: set(lengths()) == every, 30, "Flower to list every queue")
    assert all(isinstance(count, int) and count >= 0 for count in lengths().values())
    page = httpx.get(f"{flower}/broker", timeout=10)
    assert page.status_code == 200, page.text[:500]
    assert all(queue in page.text for queue in every)
