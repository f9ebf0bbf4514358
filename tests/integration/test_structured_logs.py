"""Structured logs (shared/logs.py): with LOG_FORMAT=json every line of the API is one JSON
object; one `grep` of a notification's id finds its lines in the API (with the request's id)
and in the worker (with its transaction and enterprise); payloads are never written; the
periodic maintenance is quiet; and every answer carries its request's id."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import httpx
import pytest

from tests.conftest import Worker, api_process, make_tenant, wait_for_status

pytestmark = pytest.mark.integration


def _lines(path: Path, needle: str) -> list[dict]:
    found = []
    for line in path.read_text(errors="replace").splitlines():
        if needle in line:
            found.append(json.loads(line))  # each line about it is one JSON object
    return found


def test_one_grep_finds_a_notifications_lines_in_the_api_and_the_worker(stack, worker, emulator):
    tenant = make_tenant()
    marker = f"secret-{uuid.uuid4().hex}"
    with api_process(stack, "logs-api", LOG_LEVEL="INFO", LOG_FORMAT="json") as url:
        response = httpx.post(
            f"{url}/api/trigger",
            json={
                "workflowId": "user-signup",
                "payload": {"userId": "u-1", "email": "ada@example.com", "name": marker},
            },
            headers={**tenant.headers, "X-Request-ID": "req-logs-1"},
        )
        assert response.status_code == 202, response.text
        assert response.headers["x-request-id"] == "req-logs-1"
        notification_id = response.json()["notificationId"]
        with httpx.Client(base_url=url) as client:
            wait_for_status(client, tenant, notification_id, {"SENT"})
        generated = httpx.get(f"{url}/healthz", headers={"X-Request-ID": "bad id with spaces"})
        assert len(generated.headers["x-request-id"]) == 32  # replaced, not echoed
    api_log = stack.tmp / "logs-api.log"

    # Every line the API wrote is JSON (uvicorn's own included).
    for line in api_log.read_text().splitlines():
        json.loads(line)
    [accepted] = [
        line
        for line in _lines(api_log, str(notification_id))
        if line["event"] == "notification accepted" and line["notification_id"] == notification_id
    ]
    assert accepted["notification_id"] == notification_id
    assert accepted["request_id"] == "req-logs-1"
    assert accepted["enterprise_id"] == str(tenant.enterprise_id)
    assert accepted["level"] == "info" and accepted["timestamp"]

    deadline = time.monotonic() + 10
    sent: list[dict] = []
    while time.monotonic() < deadline and not sent:
        # The grep finds every line naming the id, and lines whose other numbers contain its
        # digits (the session's worker log holds every test's lines): the id's own are these.
        sent = [
            line
            for line in _json_lines(worker.log, str(notification_id))
            if line.get("event") == "notification sent"
            and line.get("notification_id") == notification_id
        ]
        time.sleep(0.2)
    assert sent, f"no worker line names notification {notification_id}"
    [line] = sent
    assert line["transaction_id"] == accepted["transaction_id"]
    assert line["enterprise_id"] == str(tenant.enterprise_id) and line["task_id"]

    for path in (api_log, worker.log):
        assert marker not in path.read_text(errors="replace")  # payloads are never logged


def test_every_line_of_a_starting_worker_is_json(stack):
    """Celery's banner (printed on stdout, outside logging) is replaced by one JSON line, and
    Python's warnings (Celery's about running as root, say) are JSON lines too."""
    worker = Worker(stack, name="json-start", concurrency=1, queues="xnovu.json-start-test")
    worker.start(with_beat=False)
    try:
        lines = [json.loads(line) for line in worker.log.read_text().splitlines()]
    finally:
        worker.stop()
    [starting] = [line for line in lines if line["event"] == "worker starting"]
    assert starting["hostname"].startswith("json-start-")
    assert starting["concurrency"] == 1 and starting["queues"] == ["xnovu.json-start-test"]
    assert starting["pool"] == "prefork"
    assert any(line["event"].endswith("ready.") for line in lines), lines


def _json_lines(path: Path, needle: str) -> list[dict]:
    """Lines of the worker's log that are JSON (it is shared by the session: a worker that was
    killed mid-test may have left a partial line)."""
    found = []
    for line in path.read_text(errors="replace").splitlines():
        if needle in line and line.startswith("{"):
            found.append(json.loads(line))
    return found


def test_periodic_maintenance_is_quiet(stack, worker):
    time.sleep(3)  # beat sends release_due every second and reconcile every two
    beat_log = Path(str(worker.log).replace(".log", "-beat.log"))
    celery_lines = 0
    for path in (worker.log, beat_log):
        for line in path.read_text(errors="replace").splitlines():
            if not line.startswith("{"):
                continue
            record = json.loads(line)
            if record.get("logger") not in (
                "celery.app.trace",
                "celery.worker.strategy",
                "celery.beat",
            ):
                continue
            celery_lines += 1
            about = json.dumps(record)
            if "xnovu.release_due_notifications" in about or "xnovu.reconcile" in about:
                raise AssertionError(f"maintenance at {record['level']}: {record}")
    assert celery_lines > 0  # Celery's own lines are there, as JSON (the deliveries' ones)


def test_every_answer_carries_its_request_id_once(client, tenant):
    for method, path, body in [
        ("post", "/api/trigger", {"workflowId": "user-signup", "payload": {"userId": "u"}}),
        ("post", "/api/trigger", {"workflowId": "no-such-workflow"}),  # a 404 of the trigger
        ("get", "/api/notifications", None),
        ("get", "/api/notifications/1", None),  # a 404 elsewhere
        ("get", "/healthz", None),
    ]:
        response = client.request(
            method, path, json=body, headers={**tenant.headers, "X-Request-ID": "req-42"}
        )
        ids = [v for k, v in response.headers.multi_items() if k.lower() == "x-request-id"]
        assert ids == ["req-42"], (path, response.status_code, ids)
