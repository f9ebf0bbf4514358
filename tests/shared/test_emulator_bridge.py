"""The emulator's side of the Framework bridge: it executes accepted triggers on a bridge as
Novu does (discover or synced steps, signed execute per step and subscriber on a bounded pool
of step workers, retries, skip, delay, failed steps, messages)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from api.bridge.errors import BridgeError
from api.bridge.signature import verify_signature
from devtools.devstack import free_port
from novu_emulator import start_in_thread
from novu_emulator.bridge import delay_seconds
from tests.conftest import REPO

SECRET = "bridge-test-secret"
AUTH = {"Authorization": f"ApiKey {SECRET}"}
FAST = {"retryBaseMs": 10, "timeoutMs": 1000}
# Workflows Novu knows from the start (as if made in its dashboard): run on the configured bridge.
KNOWN = ("welcome", "later", "undeclared", "slow")


@dataclass
class Received:
    method: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


@dataclass
class FakeBridge:
    """A bridge that checks signatures with XNovu's own verifier and answers as scripted."""

    workflows: dict[str, list[str]] = field(default_factory=dict)
    received: list[Received] = field(default_factory=list)
    # stepId -> (status, body) answers used up in turn; then the step succeeds.
    script: dict[str, list[tuple[int, Any]]] = field(default_factory=dict)
    delay: float = 0.0
    # What a `delay` step answers as its outputs.
    delay_outputs: dict[str, Any] = field(
        default_factory=lambda: {"type": "regular", "amount": 1, "unit": "seconds"}
    )
    url: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)
    in_flight: int = 0
    most_in_flight: int = 0
    # HTTP/1.1 keep-alive; and closing each connection after its answer without saying so, as
    # a server does with a connection idle past its keep-alive timeout.
    keep_alive: bool = False
    drop_after_answer: bool = False
    connections: int = 0
    # (monotonic time, stepId, subscriberId) of each execute answered.
    answered: list[tuple[float, str, str]] = field(default_factory=list)

    def answer(self, request: Received) -> tuple[int, Any]:
        header = request.headers.get("novu-signature")
        signed = request.body if request.method == "POST" else b"{}"
        try:
            verify_signature(header, signed, SECRET)
        except BridgeError as exc:
            return exc.status_code, exc.body()
        if request.query.get("action") == "discover":
            return 200, {
                "workflows": [
                    {"workflowId": w, "steps": [{"stepId": s, "type": s} for s in steps]}
                    for w, steps in self.workflows.items()
                ]
            }
        step = request.query.get("stepId", "")
        with self.lock:
            queue = self.script.get(step)
            if queue:
                return queue.pop(0)
        subscriber = request.json["subscriber"]["subscriberId"]
        with self.lock:
            self.answered.append((time.monotonic(), step, subscriber))
        outputs = self.delay_outputs if step == "delay" else {"body": f"{step} for {subscriber}"}
        return 200, {
            "outputs": outputs,
            "providers": {},
            "options": {"skip": False},
            "metadata": {"status": "success", "error": False, "duration": 1},
        }

    def executes(self) -> list[Received]:
        return [r for r in self.received if r.query.get("action") == "execute"]

    def discovers(self) -> list[Received]:
        return [r for r in self.received if r.query.get("action") == "discover"]


def skip_answer() -> dict[str, Any]:
    return {
        "outputs": {},
        "providers": {},
        "options": {"skip": True},
        "metadata": {"status": "success", "error": False, "duration": 1},
    }


@pytest.fixture()
def bridge() -> Iterator[FakeBridge]:
    fake = FakeBridge(workflows={"welcome": ["email", "in_app"]})

    class Handler(BaseHTTPRequestHandler):
        def setup(self) -> None:
            super().setup()
            if fake.keep_alive:
                self.protocol_version = "HTTP/1.1"
            with fake.lock:
                fake.connections += 1

        def _serve(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            parts = urlsplit(self.path)
            request = Received(
                method=self.command,
                query={k: v[0] for k, v in parse_qs(parts.query).items()},
                headers={k.lower(): v for k, v in self.headers.items()},
                body=self.rfile.read(length) if length else b"",
            )
            with fake.lock:
                fake.received.append(request)
                fake.in_flight += 1
                fake.most_in_flight = max(fake.most_in_flight, fake.in_flight)
            try:
                if fake.delay:
                    time.sleep(fake.delay)
                status, body = fake.answer(request)
            finally:
                with fake.lock:
                    fake.in_flight -= 1
            raw = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)
            if fake.drop_after_answer:
                self.close_connection = True

        do_GET = do_POST = _serve

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    fake.url = f"http://127.0.0.1:{server.server_address[1]}/api/novu"
    yield fake
    server.shutdown()
    server.server_close()


@pytest.fixture()
def novu() -> Iterator[httpx.Client]:
    with (
        start_in_thread(secret_key=SECRET, workflows=KNOWN) as running,
        httpx.Client(base_url=running.url, headers=AUTH, timeout=10.0) as http,
    ):
        yield http


def configure(novu: httpx.Client, bridge: FakeBridge, **extra: Any) -> dict[str, Any]:
    response = novu.post("/_emulator/config", json={"bridgeUrl": bridge.url, **FAST, **extra})
    assert response.status_code == 200, response.text
    return dict(response.json())


def trigger(novu: httpx.Client, **fields: Any) -> str:
    body = {
        "name": "welcome",
        "to": "sub-1",
        "payload": {"firstName": "Ada"},
        "transactionId": f"tx-{uuid.uuid4()}",
        **fields,
    }
    response = novu.post("/v1/events/trigger", json=body)
    assert response.status_code == 201, response.text
    return str(body["transactionId"])


def trigger_each(novu: httpx.Client, prefix: str, count: int) -> None:
    """One trigger for each of `count` subscribers `<prefix>-<n>`."""
    for n in range(count):
        trigger(novu, to=f"{prefix}-{n}")


def messages(novu: httpx.Client, **params: str) -> list[dict[str, Any]]:
    response = novu.get("/_emulator/messages", params=params)
    assert response.status_code == 200
    return list(response.json())


def bridge_stats(novu: httpx.Client) -> dict[str, Any]:
    return dict(novu.get("/_emulator/stats").json()["bridge"])


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError("timed out")


def settled(novu: httpx.Client, expected_executions: int) -> Callable[[], bool]:
    def check() -> bool:
        stats = bridge_stats(novu)
        return bool(stats["executed"] + stats["errors"] >= expected_executions)

    return check


# --- configuration -----------------------------------------------------------------------


def test_without_a_bridge_url_nothing_is_called(novu, bridge):
    assert novu.get("/_emulator/config").json()["bridgeUrl"] is None
    trigger(novu)
    time.sleep(0.2)
    assert bridge.received == []
    assert bridge_stats(novu)["calls"] == 0
    assert messages(novu) == []


def test_config_is_shown_replaced_validated_and_restored(novu, bridge):
    shown = configure(novu, bridge, attempts=2)
    assert shown == {
        "bridgeUrl": bridge.url,
        "timeoutMs": 1000,
        "attempts": 2,
        "retryBaseMs": 10,
        "discoverTtlSeconds": 5.0,
        "stepConcurrency": 50,
    }
    assert novu.get("/_emulator/config").json() == shown
    bad = novu.post("/_emulator/config", json={"bridgeUrl": "ftp://x"})
    assert bad.status_code == 400
    assert novu.post("/_emulator/config", json={"attempts": 0}).status_code == 400
    assert novu.post("/_emulator/config", json={"nope": 1}).status_code == 400
    assert novu.post("/_emulator/config", json={"stepConcurrency": 0}).status_code == 400
    restored = novu.delete("/_emulator/config").json()
    assert restored["bridgeUrl"] is None and restored["attempts"] == 4


def test_bridge_url_given_at_start_is_the_default_and_survives_reset(bridge):
    with (
        start_in_thread(secret_key=SECRET, bridge_url=bridge.url) as running,
        httpx.Client(base_url=running.url, headers=AUTH) as http,
    ):
        assert http.get("/_emulator/config").json()["bridgeUrl"] == bridge.url
        http.post("/_emulator/config", json={"bridgeUrl": None})
        http.post("/_emulator/reset")
        assert http.get("/_emulator/config").json()["bridgeUrl"] == bridge.url


# --- execution ---------------------------------------------------------------------------


def test_each_step_is_executed_signed_and_recorded_per_subscriber(novu, bridge):
    configure(novu, bridge)
    transaction_id = trigger(
        novu, to=["sub-1", {"subscriberId": "sub-2", "email": "b@example.com"}]
    )
    wait_until(settled(novu, 4))

    assert len(bridge.discovers()) == 1
    discover = bridge.discovers()[0]
    assert discover.method == "GET"
    assert discover.headers["novu-signature"] == discover.headers["x-novu-signature"]
    # Subscribers run side by side; each one's steps in order.
    executes = sorted(bridge.executes(), key=lambda r: r.json["subscriber"]["subscriberId"])
    assert [(r.json["subscriber"]["subscriberId"], r.query["stepId"]) for r in executes] == [
        ("sub-1", "email"),
        ("sub-1", "in_app"),
        ("sub-2", "email"),
        ("sub-2", "in_app"),
    ]
    first, second = executes[0], executes[1]
    job_id = first.query.pop("jobId")
    assert len(job_id) == 24 and job_id != second.query["jobId"]
    assert first.query == {"action": "execute", "workflowId": "welcome", "stepId": "email"}
    assert first.headers["content-type"] == "application/json"
    # Novu's worker names the workflow and step in the query only (execute-bridge-job).
    assert set(first.json) == {"payload", "controls", "state", "subscriber", "context"}
    assert first.json["payload"] == {"firstName": "Ada"}
    assert first.json["context"] == {}
    assert first.json["state"] == []
    # Compact JSON, as JavaScript's JSON.stringify writes it, and signed over those bytes.
    assert first.body == json.dumps(first.json, separators=(",", ":")).encode()
    timestamp = int(first.headers["novu-signature"].split(",")[0][2:])
    assert abs(timestamp - time.time() * 1000) < 60_000
    assert second.json["state"] == [
        {"stepId": "email", "outputs": {}, "state": {"status": "completed"}}
    ]
    assert executes[2].json["subscriber"] == {"subscriberId": "sub-2", "email": "b@example.com"}

    delivered = messages(novu, transactionId=transaction_id)
    assert len(delivered) == 4
    # Subscribers run side by side: which one's email was recorded first is not fixed.
    [message] = [m for m in delivered if (m["subscriberId"], m["stepId"]) == ("sub-1", "email")]
    assert set(message) == {
        "transactionId",
        "workflowId",
        "stepId",
        "channel",
        "subscriberId",
        "status",
        "outputs",
        "deliveredAt",
    }
    assert message["status"] == "sent"
    assert message["transactionId"] == transaction_id
    assert (message["workflowId"], message["stepId"], message["channel"]) == (
        "welcome",
        "email",
        "email",
    )
    assert message["outputs"] == {"body": "email for sub-1"}
    assert [m["stepId"] for m in messages(novu, subscriberId="sub-2")] == ["email", "in_app"]
    stats = bridge_stats(novu)
    assert (stats["calls"], stats["discovers"], stats["delivered"]) == (5, 1, 4)
    assert (stats["failures"], stats["errors"], stats["retries"]) == (0, 0, 0)
    assert stats["failedSteps"] == 0


def test_in_app_state_reports_seen_and_read_to_the_next_step(novu, bridge):
    bridge.workflows["welcome"] = ["in_app", "sms"]
    configure(novu, bridge)
    trigger(novu)
    wait_until(settled(novu, 2))
    assert bridge.executes()[1].json["state"] == [
        {
            "stepId": "in_app",
            "outputs": {"seen": False, "read": False, "lastSeenDate": None, "lastReadDate": None},
            "state": {"status": "completed"},
        }
    ]


def test_skipped_step_delivers_nothing_and_reports_its_type_s_outputs(novu, bridge):
    bridge.script["in_app"] = [(200, skip_answer())]
    bridge.workflows["welcome"] = ["in_app", "email"]
    configure(novu, bridge)
    transaction_id = trigger(novu)
    wait_until(settled(novu, 2))
    assert [m["stepId"] for m in messages(novu, transactionId=transaction_id)] == ["email"]
    # Novu maps a prior job's outputs by its type whatever its status: a skipped in-app step
    # has no message, so Novu sends the in-app fallback.
    assert bridge.executes()[1].json["state"] == [
        {
            "stepId": "in_app",
            "outputs": {"seen": False, "read": False, "lastSeenDate": None, "lastReadDate": None},
            "state": {"status": "skipped"},
        }
    ]
    stats = bridge_stats(novu)
    assert (stats["executed"], stats["skipped"], stats["delivered"]) == (2, 1, 1)


def test_trigger_is_answered_before_the_bridge_runs(novu, bridge):
    bridge.delay = 0.5
    configure(novu, bridge)
    started = time.monotonic()
    transaction_id = trigger(novu)
    assert time.monotonic() - started < 0.4
    assert messages(novu, transactionId=transaction_id) == []
    wait_until(lambda: len(messages(novu, transactionId=transaction_id)) == 2)


@pytest.mark.parametrize("status", [408, 429, 500, 503, 504])
def test_retryable_answers_are_retried(novu, bridge, status):
    bridge.script["email"] = [(status, {"message": "later"}), (status, {"message": "later"})]
    configure(novu, bridge)
    transaction_id = trigger(novu)
    wait_until(settled(novu, 2))
    assert [m["stepId"] for m in messages(novu, transactionId=transaction_id)] == [
        "email",
        "in_app",
    ]
    email_calls = [r for r in bridge.executes() if r.query["stepId"] == "email"]
    assert len(email_calls) == 3
    stats = bridge_stats(novu)
    assert (stats["retries"], stats["failures"], stats["errors"]) == (2, 2, 0)
    assert stats["calls"] == 1 + 3 + 1


def test_retries_stop_after_four_attempts_and_end_the_subscribers_run(novu, bridge):
    bridge.script["email"] = [(503, {"message": "down"})] * 5
    configure(novu, bridge)
    transaction_id = trigger(novu)
    wait_until(lambda: bridge_stats(novu)["errors"] == 1)
    time.sleep(0.1)
    assert len(bridge.executes()) == 4  # Novu's 3 retries; in_app is never run
    [failed] = messages(novu, transactionId=transaction_id)
    assert (failed["status"], failed["stepId"], failed["channel"]) == ("failed", "email", "email")
    assert failed["error"]["statusCode"] == 503 and failed["error"]["message"] == "down"
    assert "deliveredAt" not in failed and failed["failedAt"]
    stats = bridge_stats(novu)
    assert (stats["failedSteps"], stats["retries"], stats["delivered"]) == (1, 3, 0)
    last = stats["lastError"]
    assert last["statusCode"] == 503 and last["stepId"] == "email"


def test_permanent_error_is_not_retried(novu, bridge):
    error = {"message": "bad payload", "code": "ExecutionEventPayloadInvalidError", "data": []}
    bridge.script["email"] = [(400, error)]
    configure(novu, bridge)
    trigger(novu)
    wait_until(lambda: bridge_stats(novu)["errors"] == 1)
    assert len(bridge.executes()) == 1
    stats = bridge_stats(novu)
    assert stats["retries"] == 0
    assert stats["lastError"]["code"] == "ExecutionEventPayloadInvalidError"


def test_a_slow_bridge_times_out_and_is_retried(novu, bridge):
    bridge.delay = 0.4
    configure(novu, bridge, timeoutMs=100, attempts=2)
    trigger(novu)
    wait_until(lambda: bridge_stats(novu)["errors"] == 1)
    stats = bridge_stats(novu)
    assert (stats["calls"], stats["failures"], stats["retries"]) == (2, 2, 1)
    assert "Timeout" in stats["lastError"]["message"]


def test_unreachable_bridge_is_counted(novu):
    novu.post("/_emulator/config", json={"bridgeUrl": f"http://127.0.0.1:{free_port()}/x", **FAST})
    trigger(novu)
    wait_until(lambda: bridge_stats(novu)["errors"] == 1)
    assert bridge_stats(novu)["calls"] == 4


def test_bridge_url_in_the_trigger_body_is_honoured(novu, bridge):
    transaction_id = trigger(novu, bridgeUrl=bridge.url)
    wait_until(lambda: len(messages(novu, transactionId=transaction_id)) == 2)
    assert novu.get("/_emulator/config").json()["bridgeUrl"] is None


def test_discovery_is_cached_and_refreshed_for_an_unknown_workflow(novu, bridge):
    configure(novu, bridge)
    trigger(novu)
    trigger(novu)
    wait_until(settled(novu, 4))
    assert len(bridge.discovers()) == 1
    bridge.workflows["later"] = ["sms"]
    transaction_id = trigger(novu, name="later")
    wait_until(lambda: len(messages(novu, transactionId=transaction_id)) == 1)
    assert len(bridge.discovers()) == 2


def test_workflow_the_bridge_does_not_declare_is_an_error(novu, bridge):
    configure(novu, bridge)
    trigger(novu, name="undeclared")
    wait_until(lambda: bridge_stats(novu)["errors"] == 1)
    assert bridge.executes() == []
    assert bridge_stats(novu)["lastError"]["message"] == "workflow not discovered"
    # Not a step: nothing to list as failed.
    assert bridge_stats(novu)["failedSteps"] == 0 and messages(novu) == []


def test_a_queued_trigger_without_a_delay_cannot_be_cancelled(novu, bridge):
    # Novu cancels only jobs held in a delay (or digest): channel steps are not.
    configure(novu, bridge)
    novu.post("/_emulator/faults", json={"holdSeconds": 0.3})
    transaction_id = trigger(novu)
    assert novu.delete(f"/v1/events/trigger/{transaction_id}").json() == {"data": False}
    wait_until(lambda: len(messages(novu, transactionId=transaction_id)) == 2)


def test_held_trigger_runs_when_its_hold_ends(novu, bridge):
    configure(novu, bridge)
    novu.post("/_emulator/faults", json={"holdSeconds": 0.3})
    transaction_id = trigger(novu)
    time.sleep(0.1)
    assert bridge.executes() == []
    wait_until(lambda: len(messages(novu, transactionId=transaction_id)) == 2)


def test_duplicate_transaction_is_executed_once(novu, bridge):
    configure(novu, bridge)
    # No deduplication race: the second trigger is dropped however soon it comes.
    novu.post("/_emulator/faults", json={"dedupeRaceWindowMs": 0})
    transaction_id = trigger(novu)
    trigger(novu, transactionId=transaction_id)
    wait_until(settled(novu, 2))
    time.sleep(0.2)
    assert len(bridge.executes()) == 2


def test_bulk_triggers_are_executed_too(novu, bridge):
    configure(novu, bridge)
    events = [{"name": "welcome", "to": f"s-{n}", "payload": {}} for n in range(3)]
    assert novu.post("/v1/events/trigger/bulk", json={"events": events}).status_code == 201
    wait_until(settled(novu, 6))
    assert {m["subscriberId"] for m in messages(novu)} == {"s-0", "s-1", "s-2"}


def test_reset_forgets_messages_and_bridge_counters(novu, bridge):
    configure(novu, bridge)
    trigger(novu)
    wait_until(settled(novu, 2))
    novu.post("/_emulator/reset")
    assert messages(novu) == []
    assert bridge_stats(novu)["calls"] == 0
    assert novu.get("/_emulator/config").json()["bridgeUrl"] is None


# --- step workers ------------------------------------------------------------------------


def test_failed_steps_are_listed_and_filtered_by_status(novu, bridge):
    error = {"message": "bad payload", "code": "ExecutionEventPayloadInvalidError", "data": []}
    bridge.script["in_app"] = [(400, error)]
    configure(novu, bridge)
    transaction_id = trigger(novu, to=["sub-1", "sub-2"])
    wait_until(lambda: bridge_stats(novu)["executed"] + bridge_stats(novu)["failedSteps"] == 4)
    [failed] = messages(novu, status="failed")
    assert failed["transactionId"] == transaction_id and failed["stepId"] == "in_app"
    assert failed["error"]["code"] == "ExecutionEventPayloadInvalidError"
    assert failed["error"]["statusCode"] == 400
    sent = {(m["subscriberId"], m["stepId"]) for m in messages(novu, status="sent")}
    everything = {(who, step) for who in ("sub-1", "sub-2") for step in ("email", "in_app")}
    assert sent == everything - {(failed["subscriberId"], "in_app")}
    stats = bridge_stats(novu)
    assert (stats["failedSteps"], stats["delivered"], stats["errors"]) == (1, 3, 1)


def test_steps_run_on_a_bounded_pool_of_workers(novu, bridge):
    bridge.delay = 0.05
    configure(novu, bridge, stepConcurrency=4)
    trigger_each(novu, "s", 12)
    wait_until(settled(novu, 24))
    # Different notifications ran side by side, never more than the pool's size at once.
    assert bridge.most_in_flight == 4
    for n in range(12):
        steps = [
            (s, r.json["state"])
            for r in bridge.executes()
            if (s := r.query["stepId"]) and r.json["subscriber"]["subscriberId"] == f"s-{n}"
        ]
        assert [s for s, _ in steps] == ["email", "in_app"]
        assert [entry["stepId"] for entry in steps[1][1]] == ["email"]


def test_waiting_for_a_worker_is_not_part_of_the_request_timeout(novu, bridge):
    # 30 steps of 0.1 s on 2 workers take 1.5 s; each request alone is well inside 0.4 s.
    bridge.delay = 0.1
    configure(novu, bridge, stepConcurrency=2, timeoutMs=400, attempts=1)
    trigger_each(novu, "s", 15)
    wait_until(settled(novu, 30))
    stats = bridge_stats(novu)
    assert (stats["executed"], stats["failures"], stats["errors"]) == (30, 0, 0)
    assert bridge.most_in_flight == 2


def test_a_smaller_pool_takes_effect_for_later_steps(novu, bridge):
    bridge.delay = 0.05
    configure(novu, bridge, stepConcurrency=8)
    trigger_each(novu, "a", 8)
    wait_until(settled(novu, 16))
    assert bridge.most_in_flight > 1
    configure(novu, bridge, stepConcurrency=1)
    bridge.most_in_flight = 0
    trigger_each(novu, "b", 6)
    wait_until(settled(novu, 28))
    assert bridge.most_in_flight == 1


def test_a_worker_keeps_its_connection_to_the_bridge_alive(novu, bridge):
    bridge.keep_alive = True
    configure(novu, bridge, stepConcurrency=1)
    trigger_each(novu, "s", 3)
    wait_until(settled(novu, 6))
    assert len(bridge.received) == 7 and bridge.connections == 1


def test_a_connection_the_bridge_closed_is_replaced_without_a_failure(novu, bridge):
    bridge.keep_alive = bridge.drop_after_answer = True
    configure(novu, bridge, stepConcurrency=1)
    trigger_each(novu, "s", 3)
    wait_until(settled(novu, 6))
    stats = bridge_stats(novu)
    assert (stats["calls"], stats["failures"], stats["retries"], stats["errors"]) == (7, 0, 0, 0)
    assert len(bridge.received) == 7 and bridge.connections == 7


# --- delay steps ---------------------------------------------------------------------------


def answered_at(bridge: FakeBridge, step: str, subscriber: str = "sub-1") -> float:
    [at] = [at for at, s, who in bridge.answered if (s, who) == (step, subscriber)]
    return at


def test_a_delay_step_holds_the_run_then_goes_on(novu, bridge):
    bridge.workflows["welcome"] = ["email", "delay", "in_app"]
    bridge.delay_outputs = {"type": "regular", "amount": 0.6, "unit": "seconds"}
    configure(novu, bridge)
    transaction_id = trigger(novu)
    wait_until(lambda: len(messages(novu, transactionId=transaction_id)) == 2)
    held = answered_at(bridge, "in_app") - answered_at(bridge, "delay")
    assert 0.55 <= held < 2.0
    delay_call, in_app_call = bridge.executes()[1:]
    assert delay_call.query["stepId"] == "delay"
    assert delay_call.json["state"] == [
        {"stepId": "email", "outputs": {}, "state": {"status": "completed"}}
    ]
    # A completed delay reports how long since Novu created the jobs, as Novu's worker does.
    latest, earliest = in_app_call.json["state"]
    assert latest["stepId"] == "delay" and latest["state"] == {"status": "completed"}
    assert set(latest["outputs"]) == {"duration"} and latest["outputs"]["duration"] >= 550
    assert earliest == {"stepId": "email", "outputs": {}, "state": {"status": "completed"}}
    # A delay is not a message.
    delivered = messages(novu, transactionId=transaction_id)
    assert [m["stepId"] for m in delivered] == ["email", "in_app"]
    stats = bridge_stats(novu)
    assert (stats["executed"], stats["delivered"]) == (3, 2)


def test_a_trigger_can_be_cancelled_while_its_delay_holds_it(novu, bridge):
    bridge.workflows["welcome"] = ["email", "delay", "in_app"]
    bridge.delay_outputs = {"type": "regular", "amount": 0.5, "unit": "seconds"}
    configure(novu, bridge)
    transaction_id = trigger(novu)
    wait_until(lambda: any(r.query["stepId"] == "delay" for r in bridge.executes()))
    time.sleep(0.05)
    assert novu.delete(f"/v1/events/trigger/{transaction_id}").json() == {"data": True}
    time.sleep(0.8)
    assert [r.query["stepId"] for r in bridge.executes()] == ["email", "delay"]
    assert [m["stepId"] for m in messages(novu, transactionId=transaction_id)] == ["email"]


def test_a_trigger_whose_delay_ended_cannot_be_cancelled(novu, bridge):
    bridge.workflows["welcome"] = ["delay", "email"]
    bridge.delay_outputs = {"type": "regular", "amount": 0.1, "unit": "seconds"}
    configure(novu, bridge)
    # The bridge answers each step after 0.5 s: the cancel below reaches the emulator while
    # the delay step is still being executed, before it holds the run (a job Novu has not
    # delayed yet is not cancellable), rather than racing the step's answer.
    bridge.delay = 0.5
    transaction_id = trigger(novu)
    assert novu.delete(f"/v1/events/trigger/{transaction_id}").json() == {"data": False}
    wait_until(lambda: len(messages(novu, transactionId=transaction_id)) == 1)
    assert novu.delete(f"/v1/events/trigger/{transaction_id}").json() == {"data": False}


def test_a_held_run_occupies_no_worker(novu, bridge):
    bridge.workflows["slow"] = ["delay", "email"]
    bridge.delay_outputs = {"type": "regular", "amount": 1, "unit": "seconds"}
    configure(novu, bridge, stepConcurrency=1)
    held = trigger(novu, name="slow")
    wait_until(lambda: any(r.query["stepId"] == "delay" for r in bridge.executes()))
    quick = trigger(novu)
    wait_until(lambda: len(messages(novu, transactionId=quick)) == 2, timeout=0.8)
    assert messages(novu, transactionId=held) == []
    wait_until(lambda: len(messages(novu, transactionId=held)) == 1)


@pytest.mark.parametrize(
    "outputs",
    [
        {"type": "regular", "amount": 1, "unit": "fortnights"},
        {"type": "regular", "unit": "seconds"},
        {"type": "timed", "cron": "0 9 * * *"},
    ],
)
def test_a_delay_novu_cannot_run_fails_the_step(novu, bridge, outputs):
    bridge.workflows["welcome"] = ["delay", "email"]
    bridge.delay_outputs = outputs
    configure(novu, bridge)
    transaction_id = trigger(novu)
    wait_until(lambda: bridge_stats(novu)["failedSteps"] == 1)
    [failed] = messages(novu, transactionId=transaction_id)
    assert (failed["status"], failed["stepId"]) == ("failed", "delay")
    time.sleep(0.1)
    assert [r.query["stepId"] for r in bridge.executes()] == ["delay"]


@pytest.mark.parametrize(
    ("amount", "unit", "seconds"),
    [(90, "seconds", 90), (2, "minutes", 120), (1.5, "hours", 5400), (1, "weeks", 604_800)],
)
def test_delay_units(amount, unit, seconds):
    assert delay_seconds({"type": "regular", "amount": amount, "unit": unit}) == seconds


def test_a_month_is_thirty_days_as_novu_counts_it():
    assert delay_seconds({"amount": 1, "unit": "months"}) == 30 * 86400
    assert delay_seconds({"amount": 0.5, "unit": "months"}) == 15 * 86400


# --- synced workflows ----------------------------------------------------------------------


def test_a_synced_workflow_runs_its_stored_steps_without_discovering(novu, bridge):
    bridge.workflows["welcome"] = ["email", "sms"]
    synced = novu.post("/v1/bridge/sync", params={"source": "test"}, json={"bridgeUrl": bridge.url})
    assert synced.status_code == 201, synced.text
    novu.post("/_emulator/config", json={**novu.get("/_emulator/config").json(), **FAST})
    calls_at_sync = len(bridge.discovers())
    # The bridge now declares other steps: Novu runs what it stored at sync time.
    bridge.workflows["welcome"] = ["in_app"]
    transaction_id = trigger(novu)
    wait_until(lambda: len(messages(novu, transactionId=transaction_id)) == 2)
    assert [m["stepId"] for m in messages(novu, transactionId=transaction_id)] == ["email", "sms"]
    assert len(bridge.discovers()) == calls_at_sync
    assert bridge_stats(novu)["discovers"] == 0


# --- the command line --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "env_url"),
    [
        (
            ["-m", "shared.cli", "novu-emulator", "--bridge-url", "http://127.0.0.1:9/api/novu"],
            None,
        ),
        (["-m", "novu_emulator"], "http://127.0.0.1:9/api/novu"),
    ],
)
def test_bridge_url_from_the_command_line_or_the_environment(command, env_url):
    port = free_port()
    env = {**os.environ, "NOVU_EMULATOR_PORT": str(port)}
    env.pop("NOVU_BRIDGE_URL", None)
    if env_url:
        env["NOVU_BRIDGE_URL"] = env_url
    proc = subprocess.Popen(
        [sys.executable, *command, "--port", str(port)],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}/_emulator/config"
        deadline = time.monotonic() + 20
        while True:
            try:
                config = httpx.get(url).json()
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the emulator did not start"
                time.sleep(0.1)
        assert config["bridgeUrl"] == "http://127.0.0.1:9/api/novu"
    finally:
        proc.terminate()
        proc.wait(10)
