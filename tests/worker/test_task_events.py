"""Flower's task list shows deliveries, not maintenance: the periodic tasks (release_due every
second, reconcile every two) send no task events, so they cannot push `deliver_batch` off
Flower's first page. Read here as Flower reads them: Celery's event stream from the worker
(`-E`), while beat runs."""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

import pytest
from celery.events.receiver import EventReceiver

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


def test_task_events_travel_in_batches(client, worker, emulator, tenant):
    """Single deliveries a few milliseconds apart: every task event of each reaches the event
    stream, several to a message (worker/consumer.py flushes them on a timer), where Celery's own
    consumer would publish each on the loop turn it happened in, one message apiece."""
    app = producer()
    messages: list[list[dict]] = []  # each message's events
    stop = threading.Event()

    class Counting(EventReceiver):
        def _receive(self, body: Any, message: Any) -> None:
            messages.append(body if isinstance(body, list) else [body])
            super()._receive(body, message)

    def listen() -> None:
        with app.connection_for_read() as conn:
            receiver = Counting(conn, handlers={}, app=app)
            while not stop.is_set():
                try:
                    receiver.capture(limit=None, timeout=0.5, wakeup=False)
                except (TimeoutError, OSError):
                    continue

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    time.sleep(1.0)  # the receiver's queue is bound before anything is triggered
    ids = []
    for _ in range(8):
        response = client.post(
            "/api/trigger",
            json={"workflowId": "user-signup", "payload": signup_payload()},
            headers=tenant.headers,
        )
        assert response.status_code == 202, response.text
        ids.append(response.json()["notificationId"])
        time.sleep(0.03)
    for notification_id in ids:
        wait_for_status(client, tenant, notification_id, {"SENT"})
    time.sleep(1.0)  # the last events' flush
    stop.set()
    listener.join(timeout=5)

    deliveries = {
        event["uuid"]
        for batch in messages
        for event in batch
        if event["type"] == "task-received" and event["name"] == TaskName.DELIVER_BATCH.value
    }
    carrying = [[event for event in batch if event.get("uuid") in deliveries] for batch in messages]
    carrying = [events for events in carrying if events]
    kinds = Counter(event["type"] for events in carrying for event in events)
    assert deliveries, messages
    # Nothing is lost to the batching: each delivery task was received, started and succeeded.
    for kind in ("task-received", "task-started", "task-succeeded"):
        assert kinds[kind] == len(deliveries), (kind, kinds, len(deliveries))
    events = sum(kinds.values())
    assert len(carrying) * 2 <= events, (len(carrying), events, [len(e) for e in carrying])
