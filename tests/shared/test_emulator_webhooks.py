"""The emulator sends Novu's message webhooks as Svix delivers them for Novu: `message.sent` per
executed channel step, `message.failed` for an injected provider failure, signed per Standard
Webhooks with svix-* headers, retried with the same svix-id, off the trigger's path."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from standardwebhooks.webhooks import Webhook

from novu_emulator import start_in_thread
from shared.settings import new_webhook_secret
from tests.shared.test_emulator_bridge import (
    AUTH,
    KNOWN,
    SECRET,
    FakeBridge,
    bridge,  # noqa: F401  (fake_bridge's fixture)
    configure,
    messages,
    skip_answer,
    trigger,
    wait_until,
)

WEBHOOK_SECRET = new_webhook_secret()


@dataclass
class Receiver:
    """An endpoint for Novu's webhooks: answers each request with the next scripted status
    (then 200) and keeps what came."""

    statuses: list[int] = field(default_factory=list)
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""

    def events(self) -> list[dict[str, Any]]:
        """The verified bodies that were answered 2xx, in order."""
        with self.lock:
            return [json.loads(body) for headers, body in self.received if headers["ok"] == "1"]


@pytest.fixture()
def receiver() -> Iterator[Receiver]:
    endpoint = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            headers = {k.lower(): v for k, v in self.headers.items()}
            with endpoint.lock:
                status = endpoint.statuses.pop(0) if endpoint.statuses else 200
                headers["ok"] = "1" if status < 300 else "0"
                endpoint.received.append((headers, body))
            self.send_response(status)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    endpoint.url = f"http://127.0.0.1:{server.server_address[1]}/api/novu/webhooks"
    yield endpoint
    server.shutdown()
    server.server_close()


@pytest.fixture()
def fake_bridge(request: pytest.FixtureRequest) -> FakeBridge:
    """The bridge tests' scripted bridge (tests/shared/test_emulator_bridge.py)."""
    found: FakeBridge = request.getfixturevalue("bridge")
    return found


@pytest.fixture()
def novu(receiver: Receiver) -> Iterator[httpx.Client]:
    with (
        start_in_thread(
            secret_key=SECRET,
            workflows=KNOWN,
            webhook_url=receiver.url,
            webhook_secret=WEBHOOK_SECRET,
            webhook_retry_delays=(0.2, 0.2),
        ) as running,
        httpx.Client(base_url=running.url, headers=AUTH, timeout=10.0) as http,
    ):
        yield http


def verified(headers: dict[str, str], body: bytes) -> dict[str, Any]:
    """The body, after standardwebhooks checked its Svix signature (svix-* as webhook-*)."""
    standard = {
        "webhook-id": headers["svix-id"],
        "webhook-timestamp": headers["svix-timestamp"],
        "webhook-signature": headers["svix-signature"],
    }
    document: dict[str, Any] = Webhook(WEBHOOK_SECRET).verify(body, standard)
    return document


def webhooks(novu: httpx.Client, **params: str) -> list[dict[str, Any]]:
    response = novu.get("/_emulator/webhooks", params=params)
    assert response.status_code == 200
    return list(response.json())


def test_each_executed_channel_step_sends_a_signed_message_sent(
    novu: httpx.Client, fake_bridge: FakeBridge, receiver: Receiver
) -> None:
    configure(novu, fake_bridge)
    transaction_id = trigger(novu, to=["sub-1", {"subscriberId": "sub-2"}])
    wait_until(lambda: len(receiver.events()) == 4)
    documents = [verified(headers, body) for headers, body in receiver.received]
    seen = set()
    for document in documents:
        assert document["type"] == "message.sent"
        assert document["object"] == "message"
        assert document["id"].startswith("evt_")
        message = document["data"]["object"]
        assert message["transactionId"] == transaction_id
        assert message["workflowId"] == message["templateIdentifier"] == "welcome"
        assert message["stepId"] == message["channel"]
        assert message["status"] == "sent"
        assert len(message["_id"]) == 24
        seen.add((message["subscriberId"], message["channel"]))
    assert seen == {
        ("sub-1", "email"),
        ("sub-1", "in_app"),
        ("sub-2", "email"),
        ("sub-2", "in_app"),
    }
    ids = {headers["svix-id"] for headers, _ in receiver.received}
    assert len(ids) == 4 and all(i.startswith("msg_") for i in ids)
    listed = webhooks(novu, transactionId=transaction_id)
    assert [entry["status"] for entry in listed] == ["delivered"] * 4
    stats = novu.get("/_emulator/stats").json()["webhooks"]
    assert stats == {"sent": 4, "attempts": 4, "delivered": 4, "failed": 0}


def test_an_injected_provider_failure_sends_message_failed(
    novu: httpx.Client, fake_bridge: FakeBridge, receiver: Receiver
) -> None:
    configure(novu, fake_bridge)
    faults = novu.post(
        "/_emulator/faults",
        json={"providerFailures": [{"channel": "email", "message": "mailbox full"}]},
    )
    assert faults.status_code == 200, faults.text
    transaction_id = trigger(novu)
    wait_until(lambda: len(receiver.events()) == 2)
    by_type = {d["type"]: d for d in (verified(h, b) for h, b in receiver.received)}
    failed = by_type["message.failed"]["data"]
    assert failed["object"]["channel"] == "email"
    assert failed["object"]["status"] == "error"
    assert failed["object"]["errorId"] == "provider_failure"
    assert failed["object"]["errorText"] == "mailbox full"
    assert failed["error"] == {"message": "mailbox full"}
    # The run goes on after the provider's refusal: the in-app step is still sent.
    assert by_type["message.sent"]["data"]["object"]["channel"] == "in_app"
    statuses = {m["channel"]: m["status"] for m in messages(novu, transactionId=transaction_id)}
    assert statuses == {"email": "failed", "in_app": "sent"}
    stats = novu.get("/_emulator/stats").json()
    assert stats["bridge"]["providerFailures"] == 1
    assert stats["faults"]["providerFailure:email"] == 1


def test_a_provider_failure_fault_names_a_channel(novu: httpx.Client) -> None:
    for bad in ({"channel": "fax"}, {"channel": "email", "rate": 2}, {}):
        response = novu.post("/_emulator/faults", json={"providerFailures": [bad]})
        assert response.status_code == 400, response.text


def test_a_refused_webhook_is_retried_with_the_same_id_and_a_new_signature(
    novu: httpx.Client, fake_bridge: FakeBridge, receiver: Receiver
) -> None:
    fake_bridge.workflows = {"welcome": ["email"]}
    configure(novu, fake_bridge)
    receiver.statuses = [503, 500]
    transaction_id = trigger(novu)
    wait_until(lambda: len(receiver.events()) == 1)
    assert len(receiver.received) == 3
    assert len({headers["svix-id"] for headers, _ in receiver.received}) == 1
    assert len({body for _, body in receiver.received}) == 1
    for headers, body in receiver.received:
        verified(headers, body)
    # The emulator records the try once the receiver's answer is back: after the receiver saw it.
    wait_until(
        lambda: [e["status"] for e in webhooks(novu, transactionId=transaction_id)] == ["delivered"]
    )
    [entry] = webhooks(novu, transactionId=transaction_id)
    assert (entry["status"], entry["attempts"], entry["lastStatusCode"]) == ("delivered", 3, 200)


def test_a_webhook_is_given_up_after_its_last_try(
    novu: httpx.Client, fake_bridge: FakeBridge, receiver: Receiver
) -> None:
    fake_bridge.workflows = {"welcome": ["email"]}
    configure(novu, fake_bridge)
    receiver.statuses = [500, 500, 500, 500]
    transaction_id = trigger(novu)
    wait_until(
        lambda: [e["status"] for e in webhooks(novu, transactionId=transaction_id)] == ["failed"]
    )
    # At once, then after each of the two retry delays: three tries, no more.
    assert len(receiver.received) == 3
    assert novu.get("/_emulator/stats").json()["webhooks"]["failed"] == 1


def test_skipped_and_failed_bridge_steps_send_no_webhook(
    novu: httpx.Client, fake_bridge: FakeBridge, receiver: Receiver
) -> None:
    configure(novu, fake_bridge, attempts=1)
    fake_bridge.script["in_app"] = [(200, skip_answer())]
    skipped = trigger(novu)
    wait_until(lambda: novu.get("/_emulator/stats").json()["bridge"]["skipped"] == 1)
    assert [entry["channel"] for entry in webhooks(novu, transactionId=skipped)] == ["email"]
    # A step whose bridge call fails: Novu has no message to report.
    fake_bridge.script["email"] = [(400, {"message": "bad step", "code": "StepError"})]
    failed = trigger(novu)
    wait_until(lambda: novu.get("/_emulator/stats").json()["bridge"]["failedSteps"] == 1)
    assert webhooks(novu, transactionId=failed) == []
    wait_until(lambda: len(receiver.events()) == 1)
    assert len(receiver.received) == 1


def test_without_a_webhook_url_nothing_is_sent(fake_bridge: FakeBridge) -> None:
    with (
        start_in_thread(secret_key=SECRET, workflows=KNOWN) as running,
        httpx.Client(base_url=running.url, headers=AUTH, timeout=10.0) as http,
    ):
        configure(http, fake_bridge)
        transaction_id = trigger(http)
        wait_until(lambda: len(messages(http, transactionId=transaction_id)) == 2)
        assert webhooks(http) == []
        assert http.get("/_emulator/stats").json()["webhooks"]["sent"] == 0
