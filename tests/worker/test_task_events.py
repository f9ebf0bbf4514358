"""Flower's task list shows deliveries, not maintenance: the periodic tasks (release_due every
second, reconcile every two) send no task events, so they cannot push `deliver_batch` off
Flower's first page. Read here as Flower reads them: Celery's event stream from the worker
(`-E`), while beat runs."""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest

from shared.queue import TaskName, producer
from tests.conftest import signup_payload, wait_for_status

pytestmark = pytest.mark.integration

MAINTENANCE = {
    task.value
    for task in (
        TaskName.RELEASE_DUE,
        TaskName.RECONCILE,
        TaskName.NOVU_SYNC,
        TaskName.DISPATCH_WEBHOOKS,
        TaskName.PURGE_FINISHED,
    )
}


def test_only_deliveries_reach_the_event_stream(client, worker, emulator, tenant):
    app = producer()
    seen: Counter[str] = Counter()
    names: dict[str, str] = {}
    stop = threading.Event()

    def on_event(event: dict) -> None:
        if event["type"] == "task-received":
            names[event["uuid"]] = event["name"]
        name = names.get(event.get("uuid", ""))
        if name is not None:
            seen[f"{name}:{event['type']}"] += 1

    def listen() -> None:
        with app.connection_for_read() as conn:
            receiver = app.events.Receiver(conn, handlers={"*": on_event})
            while not stop.is_set():
                try:
                    receiver.capture(limit=None, timeout=0.5, wakeup=False)
                except TimeoutError:
                    continue
                except OSError:
                    continue

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    time.sleep(1.0)  # the receiver's queue is bound before anything is triggered
    response = client.post(
        "/api/trigger",
        json={"workflowId": "user-signup", "payload": signup_payload()},
        headers=tenant.headers,
    )
    assert response.status_code == 202, response.text
    wait_for_status(client, tenant, response.json()["notificationId"], {"SENT"})
    time.sleep(4.0)  # release_due ran about four times, reconcile twice
    stop.set()
    listener.join(timeout=5)

    assert seen[f"{TaskName.DELIVER_BATCH.value}:task-succeeded"] >= 1, seen
    assert not [key for key in seen if key.partition(":")[0] in MAINTENANCE], seen
