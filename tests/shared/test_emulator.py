"""The Novu emulator answers like Novu's REST API and injects the faults it is told to."""

from __future__ import annotations

import json
import re
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from novu_emulator import RunningEmulator, start_in_thread
from tests.discover_bridge import serve_discover_bridge

SECRET = "test-secret-key"
AUTH = {"Authorization": f"ApiKey {SECRET}"}
TRIGGER = "/v1/events/trigger"
BULK = "/v1/events/trigger/bulk"
SYNC = "/v1/bridge/sync"
MAX_PAYLOAD_BYTES = 524_288


def make_event(**fields: Any) -> dict[str, Any]:
    """A valid trigger body with a fresh transactionId; keyword arguments override fields."""
    event: dict[str, Any] = {
        "name": "welcome",
        "to": "subscriber-1",
        "payload": {"firstName": "Ada"},
        "transactionId": f"tx-{uuid.uuid4()}",
    }
    event.update(fields)
    return event


def compact_size(document: Any) -> int:
    return len(json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode())


@dataclass
class EmulatedNovu:
    """A running emulator and an authenticated keep-alive client for it."""

    running: RunningEmulator
    http: httpx.Client

    def trigger(self, body: Any, **headers: str) -> httpx.Response:
        return self.http.post(TRIGGER, json=body, headers=headers)

    def bulk(self, events: list[Any], **headers: str) -> httpx.Response:
        return self.http.post(BULK, json={"events": events}, headers=headers)

    def cancel(self, transaction_id: str) -> httpx.Response:
        return self.http.delete(f"{TRIGGER}/{transaction_id}")

    def events(self, transaction_id: str | None = None) -> list[dict[str, Any]]:
        params = {"transactionId": transaction_id} if transaction_id else None
        response = self.http.get("/_emulator/events", params=params)
        assert response.status_code == 200
        events: list[dict[str, Any]] = response.json()
        return events

    def stats(self) -> dict[str, Any]:
        response = self.http.get("/_emulator/stats")
        assert response.status_code == 200
        stats: dict[str, Any] = response.json()
        return stats

    def set_faults(self, **config: Any) -> None:
        response = self.http.post("/_emulator/faults", json=config)
        assert response.status_code == 200, response.text

    def clear_faults(self) -> None:
        assert self.http.delete("/_emulator/faults").status_code == 200


@pytest.fixture
def novu() -> Iterator[EmulatedNovu]:
    with (
        start_in_thread(secret_key=SECRET, seed=20240601, workflows={"welcome"}) as running,
        httpx.Client(base_url=running.url, headers=AUTH, timeout=10.0) as http,
    ):
        yield EmulatedNovu(running, http)


# --- authentication -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("authorization", "message"),
    [
        (None, "Missing authorization header"),
        ("ApiKey wrong-key", "API Key not found"),
        ("ApiKey", "Unauthorized"),
        ("Bearer some.jwt.token", "Unauthorized"),
        (f"Token {SECRET}", 'Invalid authentication scheme: "Token"'),
    ],
)
def test_request_without_the_secret_key_is_401(
    novu: EmulatedNovu, authorization: str | None, message: str
) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    with httpx.Client(base_url=novu.running.url, headers=headers) as anonymous:
        response = anonymous.post(TRIGGER, json=make_event())

    assert response.status_code == 401
    body = response.json()
    assert body["statusCode"] == 401
    assert body["message"] == message
    assert body["error"] == "Unauthorized"
    assert body["path"] == TRIGGER
    assert novu.events() == []


# --- trigger --------------------------------------------------------------------------


def test_trigger_is_201_processed_and_recorded(novu: EmulatedNovu) -> None:
    event = make_event(overrides={"email": {"from": "a@b.c"}})

    response = novu.trigger(event)

    assert response.status_code == 201
    assert response.json() == {
        "data": {
            "acknowledged": True,
            "status": "processed",
            "transactionId": event["transactionId"],
        }
    }
    # Novu's Free tier by default: 60 tokens/s, a 5 s window, 10 % burst, a fresh bucket.
    assert response.headers["RateLimit-Limit"] == "300"
    assert response.headers["RateLimit-Remaining"] == "329"
    assert response.headers["RateLimit-Reset"] == "1"
    assert response.headers["RateLimit-Policy"] == (
        '300;w=5;burst=330;comment="token bucket";category="trigger";cost="single";'
        'serviceLevel="free"'
    )
    [recorded] = novu.events()
    assert recorded["transactionId"] == event["transactionId"]
    assert recorded["name"] == "welcome"
    assert recorded["to"] == "subscriber-1"
    assert recorded["payload"] == {"firstName": "Ada"}
    assert recorded["overrides"] == {"email": {"from": "a@b.c"}}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", recorded["receivedAt"])
    assert novu.stats()["accepted"] == 1


def test_trigger_without_transaction_id_gets_a_generated_one(novu: EmulatedNovu) -> None:
    event = make_event()
    del event["transactionId"]

    response = novu.trigger(event)

    assert response.status_code == 201
    transaction_id = response.json()["data"]["transactionId"]
    assert uuid.UUID(transaction_id)
    assert [e["transactionId"] for e in novu.events()] == [transaction_id]


@pytest.mark.parametrize(
    "to",
    [
        "subscriber-1",
        {"subscriberId": "subscriber-1", "email": "ada@example.com", "data": {"tier": 1}},
        {"type": "Topic", "topicKey": "team-a"},
        ["subscriber-1", {"subscriberId": "s-2"}, {"type": "Topic", "topicKey": "team-b"}],
        [f"subscriber-{n}" for n in range(100)],
    ],
)
def test_every_recipient_form_is_accepted(novu: EmulatedNovu, to: Any) -> None:
    response = novu.trigger(make_event(to=to))

    assert response.status_code == 201
    assert novu.events()[0]["to"] == to


def test_repeated_transaction_id_is_acknowledged_but_not_recorded_again(
    novu: EmulatedNovu,
) -> None:
    event = make_event()

    first = novu.trigger(event)
    time.sleep(0.15)  # past the 100 ms deduplication race window
    second = novu.trigger({**event, "payload": {"firstName": "Grace"}})

    assert first.status_code == second.status_code == 201
    assert second.json()["data"] == {
        "acknowledged": True,
        "status": "processed",
        "transactionId": event["transactionId"],
    }
    events = novu.events()
    assert len(events) == 1
    assert events[0]["payload"] == {"firstName": "Ada"}
    stats = novu.stats()
    assert (stats["accepted"], stats["duplicates"], stats["duplicatesRun"]) == (1, 1, 0)


def test_repeated_transaction_id_within_the_race_window_runs_again(novu: EmulatedNovu) -> None:
    novu.set_faults(dedupeRaceWindowMs=5000)
    event = make_event()

    answers = [novu.trigger({**event, "payload": {"n": n}}) for n in range(2)]
    novu.set_faults(dedupeRaceWindowMs=0)
    late = novu.trigger({**event, "payload": {"n": 2}})

    assert [a.json()["data"]["status"] for a in [*answers, late]] == ["processed"] * 3
    assert [e["payload"] for e in novu.events(event["transactionId"])] == [{"n": 0}, {"n": 1}]
    stats = novu.stats()
    assert (stats["accepted"], stats["duplicates"], stats["duplicatesRun"]) == (2, 1, 1)


def test_dedupe_race_window_is_a_startup_option() -> None:
    event = make_event()
    with (
        start_in_thread(
            secret_key=SECRET, workflows={"welcome"}, dedupe_race_window_ms=0
        ) as running,
        httpx.Client(base_url=running.url, headers=AUTH) as http,
    ):
        bulk = http.post(BULK, json={"events": [event, event]})
        stats = http.get("/_emulator/stats").json()

    assert [result["status"] for result in bulk.json()["data"]] == ["processed", "processed"]
    assert (stats["accepted"], stats["duplicates"], stats["duplicatesRun"]) == (1, 1, 0)


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({"to": "subscriber-1"}, "name", "name should not be null or undefined"),
        ({"name": 7, "to": "subscriber-1"}, "name", "name must be a string"),
        ({"name": "welcome"}, "to", "to should not be null or undefined"),
        (
            {"name": "welcome", "to": [f"s-{n}" for n in range(101)]},
            "to",
            "to must contain no more than 100 elements",
        ),
        ({"name": "welcome", "to": [{"email": "no-id@example.com"}]}, "to", "each recipient"),
        ({"name": "welcome", "to": "s", "payload": [1, 2]}, "payload", "payload must be an object"),
        ({"name": "welcome", "to": "s", "transactionId": 5}, "transactionId", "must be a string"),
    ],
)
def test_invalid_trigger_is_422_with_field_errors(
    novu: EmulatedNovu, body: dict[str, Any], field: str, message: str
) -> None:
    response = novu.trigger(body)

    assert response.status_code == 422
    error = response.json()
    assert error["statusCode"] == 422
    assert error["path"] == TRIGGER
    assert any(message in text for text in error["errors"][field]["messages"])
    assert novu.events() == []


def test_payload_of_exactly_512_kb_is_accepted_and_one_byte_more_is_413(
    novu: EmulatedNovu,
) -> None:
    event = make_event(payload={"blob": ""})
    event["payload"]["blob"] = "x" * (MAX_PAYLOAD_BYTES - compact_size(event))
    assert compact_size(event) == MAX_PAYLOAD_BYTES
    too_big = make_event(payload={"blob": event["payload"]["blob"]})
    too_big["transactionId"] = event["transactionId"] + "9"

    accepted = novu.trigger(event)
    rejected = novu.trigger(too_big)

    assert accepted.status_code == 201
    assert rejected.status_code == 413
    assert rejected.json()["message"] == (
        f"Payload size ({MAX_PAYLOAD_BYTES + 1} bytes) exceeds maximum allowed size of "
        "524288 bytes (512KB). Note: Attachments are excluded from this limit."
    )
    assert [e["transactionId"] for e in novu.events()] == [event["transactionId"]]


def test_unknown_workflow_is_422_until_it_is_synced(novu: EmulatedNovu) -> None:
    unknown = novu.trigger(make_event(name="order-shipped"))
    bulk = novu.bulk([make_event(name="order-shipped"), make_event()])
    with serve_discover_bridge(SECRET, {"order-shipped": [("mail", "email")]}) as bridge:
        assert novu.http.post(SYNC, json={"bridgeUrl": bridge.url}).status_code == 201
    synced = novu.trigger(make_event(name="order-shipped"))

    assert unknown.status_code == 422
    assert unknown.json()["message"] == "workflow_not_found"
    assert bulk.status_code == 201
    assert [result["status"] for result in bulk.json()["data"]] == ["error", "processed"]
    assert bulk.json()["data"][0]["error"] == ["workflow_not_found"]
    assert synced.status_code == 201
    assert synced.json()["data"]["status"] == "processed"
    assert [event["name"] for event in novu.events()] == ["welcome", "order-shipped"]


def test_workflow_deleted_by_a_sync_is_422_again(novu: EmulatedNovu) -> None:
    with serve_discover_bridge(SECRET, {"promo": [("mail", "email")]}) as bridge:
        assert novu.http.post(SYNC, json={"bridgeUrl": bridge.url}).status_code == 201
        assert novu.trigger(make_event(name="promo")).status_code == 201
        bridge.workflows = {}
        assert novu.http.post(SYNC, json={"bridgeUrl": bridge.url}).status_code == 201

    gone = novu.trigger(make_event(name="promo"))

    assert gone.status_code == 422
    assert gone.json()["message"] == "workflow_not_found"


def test_inactive_workflow_stepless_one_or_unknown_tenant_is_201_but_not_processed(
    novu: EmulatedNovu,
) -> None:
    novu.http.put("/_emulator/workflows/paused", json={"active": False})
    novu.http.put("/_emulator/workflows/empty", json={"steps": []})
    with serve_discover_bridge(SECRET, {"draft": [("mail", "email")]}) as bridge:
        bridge.inactive = {"draft"}
        assert novu.http.post(SYNC, json={"bridgeUrl": bridge.url}).status_code == 201

    answers = [novu.trigger(make_event(name=name)) for name in ("paused", "empty", "draft")]
    answers.append(novu.trigger(make_event(tenant="acme")))

    assert [answer.status_code for answer in answers] == [201, 201, 201, 201]
    assert [answer.json()["data"] for answer in answers] == [
        {"acknowledged": True, "status": "trigger_not_active"},
        {"acknowledged": True, "status": "no_workflow_steps_defined"},
        {"acknowledged": True, "status": "trigger_not_active"},
        {"acknowledged": True, "status": "no_tenant_found"},
    ]
    assert novu.events() == []


def test_reset_forgets_synced_workflows_but_keeps_the_startup_ones(novu: EmulatedNovu) -> None:
    with serve_discover_bridge(SECRET, {"promo": [("mail", "email")]}) as bridge:
        assert novu.http.post(SYNC, json={"bridgeUrl": bridge.url}).status_code == 201

    assert novu.http.post("/_emulator/reset").status_code == 200

    assert [w["workflowId"] for w in novu.http.get("/_emulator/workflows").json()] == ["welcome"]
    assert novu.trigger(make_event(name="promo")).status_code == 422
    assert novu.trigger(make_event()).status_code == 201


def test_malformed_json_is_400(novu: EmulatedNovu) -> None:
    response = novu.http.post(
        TRIGGER, content=b'{"name": "welcome",', headers={"Content-Type": "application/json"}
    )

    assert response.status_code == 400
    assert response.json()["statusCode"] == 400
    assert novu.stats()["accepted"] == 0


# --- bulk -----------------------------------------------------------------------------


def test_bulk_of_100_events_answers_one_result_per_event_in_order(novu: EmulatedNovu) -> None:
    events = [make_event(to=f"subscriber-{n}") for n in range(100)]

    response = novu.bulk(events)

    assert response.status_code == 201
    results = response.json()["data"]
    assert [r["transactionId"] for r in results] == [e["transactionId"] for e in events]
    assert all(r == {**r, "acknowledged": True, "status": "processed"} for r in results)
    assert len(novu.events()) == 100
    assert response.headers["RateLimit-Policy"].split(";")[5] == 'cost="bulk"'


@pytest.mark.parametrize(
    ("events", "message"),
    [
        ([make_event() for _ in range(101)], "events must contain no more than 100 elements"),
        ([], "events should not be empty"),
        ("not-a-list", "events must be an array"),
    ],
)
def test_bulk_outside_1_to_100_events_is_422(novu: EmulatedNovu, events: Any, message: str) -> None:
    response = novu.http.post(BULK, json={"events": events})

    assert response.status_code == 422
    assert response.json()["errors"]["events"]["messages"] == [message]
    assert novu.events() == []


def test_bulk_reports_invalid_and_repeated_events_one_by_one(novu: EmulatedNovu) -> None:
    first = make_event()
    invalid = {"to": "subscriber-2", "transactionId": "tx-invalid"}
    repeat = {**first, "payload": {"again": True}}

    response = novu.bulk([first, invalid, repeat])

    assert response.status_code == 201
    results = response.json()["data"]
    assert results[0]["status"] == "processed"
    assert results[1]["status"] == "error"
    assert "name should not be null or undefined" in results[1]["error"]
    assert results[2] == {
        "acknowledged": True,
        "status": "processed",
        "transactionId": first["transactionId"],
    }
    # One request: the repeat arrives within Novu's deduplication race window and runs too.
    assert [e["transactionId"] for e in novu.events()] == [first["transactionId"]] * 2
    assert (novu.stats()["duplicates"], novu.stats()["duplicatesRun"]) == (0, 1)


def raw_exchange(url: str, request: bytes) -> bytes:
    """Send raw bytes to the emulator and read its whole answer (it closes the connection)."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_body_over_novus_20_mb_parser_limit_is_express_413_before_authentication(
    novu: EmulatedNovu,
) -> None:
    declared = 20 * 1024 * 1024 + 1
    answer = raw_exchange(
        novu.running.url,
        b"POST /v1/events/trigger/bulk HTTP/1.1\r\nHost: x\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % declared,
    )

    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413 Payload Too Large")
    assert b"content-type: text/html; charset=utf-8" in head.lower()
    assert b"<pre>Payload Too Large</pre>" in body
    assert novu.stats()["requests"] == 0


def test_a_bulk_of_19_mb_passes_the_body_limit(novu: EmulatedNovu) -> None:
    events = [make_event(to=f"s-{n}", payload={"blob": "x" * 190_000}) for n in range(100)]

    response = novu.bulk(events)

    assert response.status_code == 201
    assert len(novu.events()) == 100


def test_other_v1_paths_take_body_parsers_default_100_kb(novu: EmulatedNovu) -> None:
    small = novu.http.post("/v1/subscribers", content=b"{}" + b" " * 1000)
    large = novu.http.post("/v1/subscribers", content=b"{}" + b" " * (100 * 1024))

    assert small.status_code == 404  # not emulated, but read
    assert large.status_code == 413
    assert large.headers["content-type"] == "text/html; charset=utf-8"


def test_bulk_with_one_event_over_512_kb_is_413_and_records_nothing(novu: EmulatedNovu) -> None:
    big = make_event(name="digest", payload={"blob": "x" * MAX_PAYLOAD_BYTES})

    response = novu.bulk([make_event(), big])

    assert response.status_code == 413
    assert response.json()["message"].startswith('Event at index 1 (workflow: "digest")')
    assert novu.events() == []


# --- cancel ---------------------------------------------------------------------------


def test_cancel_of_a_run_held_in_a_delay_step_is_true_once(novu: EmulatedNovu) -> None:
    event = make_event()
    novu.trigger(event)
    recorded = novu.running.server.state.by_transaction[event["transactionId"]]
    # What the bridge runner does while the run waits in a delay step.
    recorded.delayed_until = time.monotonic() + 30

    first = novu.cancel(event["transactionId"])
    second = novu.cancel(event["transactionId"])

    assert first.status_code == 200
    assert first.json() == {"data": True}
    assert second.json() == {"data": False}
    assert novu.stats()["cancelled"] == 1
    assert novu.events()[0]["cancelled"] is True


def test_cancel_of_a_trigger_not_held_in_a_delay_step_is_false(novu: EmulatedNovu) -> None:
    novu.set_faults(holdSeconds=30)  # queued at Novu, but not delayed: not cancellable
    queued = make_event()
    novu.trigger(queued)
    novu.clear_faults()
    delay_over = make_event()
    novu.trigger(delay_over)
    novu.running.server.state.by_transaction[delay_over["transactionId"]].delayed_until = (
        time.monotonic() - 0.1
    )

    assert novu.cancel(queued["transactionId"]).json() == {"data": False}
    assert novu.cancel(delay_over["transactionId"]).json() == {"data": False}
    assert novu.cancel("tx-unknown").json() == {"data": False}
    assert novu.stats()["cancelled"] == 0
    assert [event["cancelled"] for event in novu.events()] == [False, False]


# --- Idempotency-Key ------------------------------------------------------------------


def test_same_idempotency_key_and_body_replays_the_stored_answer(novu: EmulatedNovu) -> None:
    event = make_event()
    del event["transactionId"]  # Only the key can stop this from being recorded twice.

    first = novu.trigger(event, **{"Idempotency-Key": "key-1"})
    replay = novu.trigger(event, **{"Idempotency-Key": "key-1"})

    assert first.status_code == replay.status_code == 201
    assert first.headers["Idempotency-Key"] == "key-1"
    assert "Idempotency-Replay" not in first.headers
    assert replay.headers["Idempotency-Replay"] == "true"
    assert replay.json() == first.json()
    assert len(novu.events()) == 1
    assert novu.stats()["idempotency"]["replayed"] == 1


def test_same_idempotency_key_with_another_body_is_422(novu: EmulatedNovu) -> None:
    novu.trigger(make_event(), **{"Idempotency-Key": "key-2"})

    response = novu.trigger(make_event(), **{"Idempotency-Key": "key-2"})

    assert response.status_code == 422
    assert response.json()["message"] == (
        'Request with key "key-2" is being reused for a different body'
    )
    assert len(novu.events()) == 1


def test_same_idempotency_key_while_the_first_is_in_flight_is_409(novu: EmulatedNovu) -> None:
    novu.set_faults(latencyMs=500)
    event = make_event()
    headers = {**AUTH, "Idempotency-Key": "key-3"}

    def send() -> httpx.Response:
        return httpx.post(novu.running.url + TRIGGER, json=event, headers=headers, timeout=10)

    with ThreadPoolExecutor(max_workers=1) as pool:
        first = pool.submit(send)
        time.sleep(0.15)
        conflict = send()
        original = first.result()
    novu.clear_faults()
    later = send()

    assert original.status_code == 201
    assert conflict.status_code == 409
    assert conflict.headers["Retry-After"] == "1"
    assert conflict.json()["message"] == (
        'Request with key "key-3" is currently being processed. Please retry after 1 second'
    )
    assert later.status_code == 201
    assert later.headers["Idempotency-Replay"] == "true"
    assert novu.stats()["idempotency"]["inFlightConflicts"] == 1
    assert len(novu.events()) == 1


def test_idempotency_key_over_255_characters_is_400(novu: EmulatedNovu) -> None:
    response = novu.trigger(make_event(), **{"Idempotency-Key": "k" * 256})
    accepted = novu.trigger(make_event(), **{"Idempotency-Key": "k" * 255})

    assert response.status_code == 400
    assert "maximum allowed length of 255 characters" in response.json()["message"]
    assert accepted.status_code == 201


def test_a_novu_validation_error_is_replayed_for_its_idempotency_key(novu: EmulatedNovu) -> None:
    body = {"to": "subscriber-1"}

    first = novu.trigger(body, **{"Idempotency-Key": "key-4"})
    again = novu.trigger(body, **{"Idempotency-Key": "key-4"})

    assert first.status_code == again.status_code == 422
    assert again.headers["Idempotency-Replay"] == "true"


# --- faults ---------------------------------------------------------------------------


def test_status_fault_answers_the_status_and_records_nothing(novu: EmulatedNovu) -> None:
    novu.set_faults(status=500, rate=1.0)

    response = novu.trigger(make_event())

    assert response.status_code == 500
    body = response.json()
    assert body["statusCode"] == 500
    assert uuid.UUID(body["errorId"])
    assert "Retry-After" not in response.headers
    assert novu.events() == []
    assert novu.stats()["faults"]["status:500"] == 1


def test_429_fault_carries_retry_after(novu: EmulatedNovu) -> None:
    novu.set_faults(status=429)
    default = novu.trigger(make_event())
    novu.set_faults(status=503, retryAfter=7)
    unavailable = novu.bulk([make_event()])

    assert default.status_code == 429
    assert default.headers["Retry-After"] == "1"
    assert default.json()["message"] == "API rate limit exceeded"
    assert unavailable.status_code == 503
    assert unavailable.headers["Retry-After"] == "7"
    faults = novu.stats()["faults"]
    assert (faults["status:429"], faults["status:503"]) == (1, 1)


def test_several_status_rules_are_active_at_once(novu: EmulatedNovu) -> None:
    novu.set_faults(
        rules=[
            {"status": 500, "rate": 0.5},
            {"status": 429, "rate": 0.3},
            {"status": 400, "rate": 0.2},
        ]
    )

    statuses = [novu.trigger(make_event()).status_code for _ in range(60)]

    faults = novu.stats()["faults"]
    assert set(statuses) == {500, 429, 400}
    assert faults["status:500"] + faults["status:429"] + faults["status:400"] == 60
    assert faults["status:500"] == statuses.count(500)
    assert novu.events() == []


def test_cancel_is_not_hit_by_status_faults(novu: EmulatedNovu) -> None:
    novu.set_faults(status=500)

    assert novu.cancel("tx-unknown").json() == {"data": False}


def test_plain_status_fault_is_not_remembered_for_the_idempotency_key(novu: EmulatedNovu) -> None:
    event = make_event()
    novu.set_faults(status=500)
    failed = novu.trigger(event, **{"Idempotency-Key": "key-5"})
    novu.clear_faults()

    retried = novu.trigger(event, **{"Idempotency-Key": "key-5"})

    assert failed.status_code == 500
    assert retried.status_code == 201
    assert "Idempotency-Replay" not in retried.headers
    assert len(novu.events()) == 1


def test_sticky_status_fault_is_replayed_for_the_idempotency_key(novu: EmulatedNovu) -> None:
    event = make_event()
    novu.set_faults(status=500, sticky=True)
    failed = novu.trigger(event, **{"Idempotency-Key": "key-6"})
    novu.clear_faults()

    replayed = novu.trigger(event, **{"Idempotency-Key": "key-6"})
    fresh_key = novu.trigger(event, **{"Idempotency-Key": "key-7"})

    assert failed.status_code == replayed.status_code == 500
    assert replayed.headers["Idempotency-Replay"] == "true"
    assert fresh_key.status_code == 201
    assert novu.stats()["faults"]["status:500"] == 1


def test_latency_fault_delays_every_answer(novu: EmulatedNovu) -> None:
    novu.set_faults(latencyMs=300)

    started = time.monotonic()
    response = novu.cancel("tx-unknown")
    elapsed = time.monotonic() - started

    assert response.status_code == 200
    assert elapsed >= 0.3
    assert novu.stats()["faults"]["latency"] == 1


def test_drop_fault_closes_the_connection_without_recording(novu: EmulatedNovu) -> None:
    novu.set_faults(dropRate=1.0)

    with pytest.raises(httpx.TransportError):
        novu.trigger(make_event())

    novu.clear_faults()
    stats = novu.stats()
    assert stats["faults"]["drop"] == 1
    assert stats["accepted"] == 0
    assert novu.trigger(make_event()).status_code == 201  # The client recovers.


def test_drop_after_accept_records_the_trigger_then_closes_the_connection(
    novu: EmulatedNovu,
) -> None:
    event = make_event()
    novu.set_faults(dropAfterAcceptRate=1.0)

    with pytest.raises(httpx.TransportError):
        novu.trigger(event, **{"Idempotency-Key": "key-8"})

    assert [e["transactionId"] for e in novu.events()] == [event["transactionId"]]
    novu.clear_faults()
    time.sleep(0.15)  # a retry past the deduplication race window is dropped
    same_key = novu.trigger(event, **{"Idempotency-Key": "key-8"})
    no_key = novu.trigger(event)
    assert same_key.status_code == 201
    assert same_key.headers["Idempotency-Replay"] == "true"
    assert no_key.status_code == 201
    stats = novu.stats()
    assert stats["faults"]["dropAfterAccept"] == 1
    assert (stats["accepted"], stats["duplicates"]) == (1, 1)


def test_drop_after_accept_of_a_bulk_records_all_its_events(novu: EmulatedNovu) -> None:
    events = [make_event() for _ in range(3)]
    novu.set_faults(dropAfterAcceptRate=1.0)

    with pytest.raises(httpx.TransportError):
        novu.bulk(events)

    assert len(novu.events()) == 3


def test_rate_limit_fault_overrides_the_tier(novu: EmulatedNovu) -> None:
    novu.set_faults(rateLimitPerSecond=1)  # 5 tokens per 5 s window, burst floor(5.5) = 5.

    statuses = [novu.trigger(make_event()).status_code for _ in range(6)]
    throttled = novu.trigger(make_event())

    assert statuses == [201] * 5 + [429]
    assert throttled.json()["message"] == "API rate limit exceeded"
    assert throttled.headers["RateLimit-Remaining"] == "0"
    assert throttled.headers["RateLimit-Limit"] == "5"
    assert 1 <= int(throttled.headers["Retry-After"]) <= 5
    assert novu.stats()["faults"]["rateLimited"] == 2
    assert len(novu.events()) == 5


def test_free_tier_bucket_is_enforced_by_default(novu: EmulatedNovu) -> None:
    def bulk_of(size: int) -> list[dict[str, Any]]:
        return [make_event(to=f"s-{n}") for n in range(size)]

    bulks = [novu.bulk(bulk_of(2)) for _ in range(4)]  # 100 tokens each out of 330
    single = novu.trigger(make_event())  # 1 token still fits

    assert [response.status_code for response in bulks] == [201, 201, 201, 429]
    refused = bulks[3]
    assert refused.json()["message"] == "API rate limit exceeded"
    assert "error" not in refused.json()
    assert refused.headers["RateLimit-Remaining"] == "0"
    assert refused.headers["Retry-After"] == refused.headers["RateLimit-Reset"]
    assert 1 <= int(refused.headers["Retry-After"]) <= 2  # 70 tokens at 60/s
    assert 'cost="bulk"' in refused.headers["RateLimit-Policy"]
    assert single.status_code == 201
    assert single.headers["RateLimit-Remaining"] == "29"
    tokens = novu.stats()["tokens"]
    assert tokens["spent"] == 301
    assert tokens["refused"] == 100
    assert tokens["refusedRequests"] == 1
    assert tokens["eventsRps"] == 60
    assert tokens["byEndpoint"] == {
        "bulk-trigger": {"spent": 300, "refused": 100},
        "trigger": {"spent": 1, "refused": 0},
    }
    assert len(novu.events()) == 7


def test_cancel_costs_a_trigger_token_and_sync_a_global_one(novu: EmulatedNovu) -> None:
    cancel = novu.cancel("tx-unknown")
    with serve_discover_bridge(SECRET, {"welcome": [("mail", "email")]}) as bridge:
        sync = novu.http.post(SYNC, json={"bridgeUrl": bridge.url})

    assert cancel.headers["RateLimit-Remaining"] == "329"
    assert 'category="trigger";cost="single"' in cancel.headers["RateLimit-Policy"]
    # The global category is half the Events rate in every Novu tier: 30/s on Free.
    assert sync.headers["RateLimit-Limit"] == "150"
    assert sync.headers["RateLimit-Remaining"] == "164"
    assert sync.headers["RateLimit-Policy"].startswith('150;w=5;burst=165;comment="token bucket";')
    assert 'category="global"' in sync.headers["RateLimit-Policy"]
    assert novu.stats()["tokens"]["byEndpoint"] == {
        "cancel": {"spent": 1, "refused": 0},
        "sync": {"spent": 1, "refused": 0},
    }


def test_events_rps_sets_the_tier() -> None:
    with (
        start_in_thread(secret_key=SECRET, workflows={"welcome"}, events_rps=600) as running,
        httpx.Client(base_url=running.url, headers=AUTH) as http,
    ):
        response = http.post(TRIGGER, json=make_event())

    assert response.headers["RateLimit-Limit"] == "3000"
    assert response.headers["RateLimit-Remaining"] == "3299"
    assert 'serviceLevel="business"' in response.headers["RateLimit-Policy"]


@pytest.mark.parametrize(
    "config",
    [
        {"rules": [{"status": 500, "rate": 0.7}, {"status": 429, "rate": 0.4}]},
        {"status": 200},
        {"rate": 0.5},
        {"status": 500, "rules": []},
        {"dropRate": 1.5},
        {"latencyMs": -1},
        {"surprise": True},
    ],
)
def test_invalid_fault_configuration_is_400(novu: EmulatedNovu, config: dict[str, Any]) -> None:
    response = novu.http.post("/_emulator/faults", json=config)

    assert response.status_code == 400
    assert response.json()["errors"]
    assert novu.http.get("/_emulator/faults").json()["rules"] == []


def test_fault_configuration_is_shown_and_cleared(novu: EmulatedNovu) -> None:
    novu.set_faults(status=500, rate=0.25, latencyMs=10, holdSeconds=3)

    shown = novu.http.get("/_emulator/faults").json()
    novu.clear_faults()
    cleared = novu.http.get("/_emulator/faults").json()

    assert shown["rules"] == [
        {"status": 500, "rate": 0.25, "retryAfter": None, "sticky": False, "message": None}
    ]
    assert (shown["latencyMs"], shown["holdSeconds"]) == (10, 3)
    assert cleared["rules"] == []
    assert cleared["latencyMs"] == 0


# --- inspection, reset, routing -------------------------------------------------------


def test_events_can_be_filtered_by_transaction_id(novu: EmulatedNovu) -> None:
    events = [make_event() for _ in range(3)]
    for event in events:
        novu.trigger(event)

    [found] = novu.events(events[1]["transactionId"])

    assert found["transactionId"] == events[1]["transactionId"]
    assert novu.events("tx-missing") == []


def test_reset_forgets_triggers_counters_faults_and_keys(novu: EmulatedNovu) -> None:
    novu.trigger(make_event(), **{"Idempotency-Key": "key-9"})
    novu.set_faults(latencyMs=5)

    response = novu.http.post("/_emulator/reset")

    assert response.status_code == 200
    assert novu.events() == []
    stats = novu.stats()
    assert (stats["accepted"], stats["requests"], stats["faults"]["latency"]) == (0, 0, 0)
    assert novu.http.get("/_emulator/faults").json()["latencyMs"] == 0
    reused = novu.trigger(make_event(), **{"Idempotency-Key": "key-9"})
    assert reused.status_code == 201
    assert "Idempotency-Replay" not in reused.headers


def test_requests_counts_every_v1_request(novu: EmulatedNovu) -> None:
    novu.trigger(make_event())
    novu.trigger({"name": "welcome"})
    novu.cancel("tx-unknown")
    novu.events()

    assert novu.stats()["requests"] == 3


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/v1/subscribers", 404),
        ("GET", "/", 404),
        ("GET", TRIGGER, 405),
        ("PUT", f"{TRIGGER}/tx-1", 405),
        ("GET", "/_emulator/nothing", 404),
        ("POST", "/_emulator/stats", 405),
    ],
)
def test_unknown_path_is_404_and_wrong_method_is_405(
    novu: EmulatedNovu, method: str, path: str, status: int
) -> None:
    response = novu.http.request(method, path)

    assert response.status_code == status
    assert response.json()["statusCode"] == status
    if status == 405:
        assert response.headers["Allow"]


def test_error_bodies_match_novus_own_sdk_models(novu: EmulatedNovu) -> None:
    models = pytest.importorskip("novu_py.models")
    unauthorized = httpx.post(novu.running.url + TRIGGER, json=make_event())
    invalid = novu.trigger({"name": "welcome"})
    accepted = novu.trigger(make_event())

    models.ErrorDtoData.model_validate(unauthorized.json())
    validation = models.ValidationErrorDtoData.model_validate(invalid.json())
    result = models.TriggerEventResponseDto.model_validate(accepted.json()["data"])

    assert validation.errors["to"].messages == ["to should not be null or undefined"]
    assert result.status == "processed"


# --- connections and lifecycle --------------------------------------------------------


def test_keep_alive_serves_many_requests_on_one_connection(novu: EmulatedNovu) -> None:
    local_addresses = set()
    for _ in range(5):
        response = novu.trigger(make_event())
        assert response.status_code == 201
        stream = response.extensions["network_stream"]
        local_addresses.add(stream.get_extra_info("client_addr"))

    assert len(local_addresses) == 1


def test_concurrent_connections_are_answered_in_parallel(novu: EmulatedNovu) -> None:
    novu.set_faults(latencyMs=400)

    def send(_: int) -> int:
        url = novu.running.url + TRIGGER
        return httpx.post(url, json=make_event(), headers=AUTH, timeout=10).status_code

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=10) as pool:
        statuses = list(pool.map(send, range(10)))
    elapsed = time.monotonic() - started

    assert statuses == [201] * 10
    assert elapsed < 2.0  # One after another would take at least 4 s.
    assert novu.stats()["accepted"] == 10


def test_stop_closes_open_connections_and_frees_the_port() -> None:
    running = start_in_thread(secret_key=SECRET, workflows={"welcome"})
    port = running.port
    client = httpx.Client(base_url=running.url, headers=AUTH)
    assert client.post(TRIGGER, json=make_event()).status_code == 201  # Leaves a pooled connection.

    started = time.monotonic()
    running.stop()
    running.stop()  # Harmless the second time.

    assert time.monotonic() - started < 1.5
    assert not any(
        thread.name == "novu-emulator" and thread.is_alive() for thread in threading.enumerate()
    )
    with pytest.raises(httpx.TransportError):
        client.post(TRIGGER, json=make_event())
    client.close()
    with socket.socket() as probe:
        # Closed connections linger in TIME_WAIT; the listening socket itself must be gone.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", port))


def test_start_in_thread_on_a_busy_port_raises() -> None:
    with start_in_thread(secret_key=SECRET) as running, pytest.raises(OSError):
        start_in_thread(port=running.port, secret_key=SECRET)


# --- sync and known workflows ---------------------------------------------------------


def test_sync_discovers_the_bridge_and_remembers_its_workflows(novu: EmulatedNovu) -> None:
    declared = {"welcome": [("email", "email"), ("wait", "delay")], "digest": [("feed", "in_app")]}
    with serve_discover_bridge(SECRET, declared) as bridge:
        response = novu.http.post(SYNC, params={"source": "xnovu"}, json={"bridgeUrl": bridge.url})

    assert response.status_code == 201, response.text
    answered = response.json()["data"]
    assert [entry["triggers"][0]["identifier"] for entry in answered] == ["welcome", "digest"]
    assert [step["stepId"] for step in answered[0]["steps"]] == ["email", "wait"]
    assert bridge.discovers == 1
    known = {entry["workflowId"]: entry for entry in novu.http.get("/_emulator/workflows").json()}
    assert set(known) == {"welcome", "digest"}
    assert known["welcome"]["steps"] == [
        {"stepId": "email", "type": "email"},
        {"stepId": "wait", "type": "delay"},
    ]
    assert known["welcome"]["bridgeUrl"] == bridge.url
    assert known["welcome"]["source"] == "xnovu"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", known["welcome"]["syncedAt"])
    # As Novu does, the synced URL becomes the environment's bridge.
    assert novu.http.get("/_emulator/config").json()["bridgeUrl"] == bridge.url
    assert novu.stats()["syncs"] == 1


def test_sync_deletes_synced_workflows_the_bridge_no_longer_lists(novu: EmulatedNovu) -> None:
    assert novu.http.put("/_emulator/workflows/dashboard-made", json={}).status_code == 200
    with serve_discover_bridge(SECRET, {"old": [("a", "email")], "kept": [("b", "sms")]}) as bridge:
        assert novu.http.post(SYNC, json={"bridgeUrl": bridge.url}).status_code == 201
        bridge.workflows = {"kept": [("b", "sms"), ("c", "push")]}
        assert novu.http.post(SYNC, json={"bridgeUrl": bridge.url}).status_code == 201

    known = {entry["workflowId"]: entry for entry in novu.http.get("/_emulator/workflows").json()}
    assert set(known) == {"welcome", "dashboard-made", "kept"}
    assert [step["stepId"] for step in known["kept"]["steps"]] == ["b", "c"]
    assert known["dashboard-made"]["bridgeUrl"] is None


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({}, 400, ["bridgeUrl must be a string", "bridgeUrl should not be null or undefined"]),
        ({"bridgeUrl": 42}, 422, ["bridgeUrl must be a string"]),
        ({"bridgeUrl": "not a url"}, 400, "Invalid bridge URL: not a url"),
    ],
)
def test_sync_with_a_bad_body_is_refused(
    novu: EmulatedNovu, body: dict[str, Any], status: int, message: Any
) -> None:
    response = novu.http.post(SYNC, json=body)

    assert response.status_code == status
    assert response.json()["message"] == message
    assert [w["workflowId"] for w in novu.http.get("/_emulator/workflows").json()] == ["welcome"]


def test_sync_of_an_unreachable_bridge_is_400_and_keeps_what_was_known(
    novu: EmulatedNovu,
) -> None:
    with serve_discover_bridge(SECRET, {"welcome": [("email", "email")]}) as bridge:
        assert novu.http.post(SYNC, json={"bridgeUrl": bridge.url}).status_code == 201
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{probe.getsockname()[1]}/api/novu"

    response = novu.http.post(SYNC, json={"bridgeUrl": dead})

    assert response.status_code == 400
    assert response.json()["message"] == (
        f"Unable to reach Bridge Endpoint at `{dead}?action=discover`. Run npx novu@latest dev "
        "in Local mode, or ensure your Bridge app deployment is available."
    )
    assert [w["workflowId"] for w in novu.http.get("/_emulator/workflows").json()] == ["welcome"]


def test_sync_passes_on_the_bridges_framework_error(novu: EmulatedNovu) -> None:
    with serve_discover_bridge("another-secret", {"welcome": [("email", "email")]}) as bridge:
        response = novu.http.post(SYNC, json={"bridgeUrl": bridge.url})

    assert response.status_code == 400
    assert "signature" in response.json()["message"].lower()
    assert [w["workflowId"] for w in novu.http.get("/_emulator/workflows").json()] == ["welcome"]


def test_sync_of_a_bridge_failing_otherwise_is_novus_500(novu: EmulatedNovu) -> None:
    with serve_discover_bridge(SECRET, {}) as bridge:
        bridge.answer_with = (503, {"oops": True})
        response = novu.http.post(SYNC, json={"bridgeUrl": bridge.url})

    assert response.status_code == 500
    assert "errorId" in response.json()


def test_sync_needs_the_secret_key(novu: EmulatedNovu) -> None:
    with httpx.Client(base_url=novu.running.url) as anonymous:
        response = anonymous.post(SYNC, json={"bridgeUrl": "http://127.0.0.1:9/api/novu"})

    assert response.status_code == 401


def test_workflow_registered_by_hand_is_listed_and_can_be_forgotten(novu: EmulatedNovu) -> None:
    registered = novu.http.put(
        "/_emulator/workflows/made-in-dashboard",
        json={"steps": [{"stepId": "mail", "type": "email"}], "active": False},
    )
    default = novu.http.put("/_emulator/workflows/plain", json={})
    invalid = novu.http.put("/_emulator/workflows/bad", json={"steps": [{"type": "email"}]})

    assert registered.status_code == 200
    assert registered.json()["steps"] == [{"stepId": "mail", "type": "email"}]
    assert registered.json()["active"] is False
    assert default.json()["steps"] == [{"stepId": "in-app", "type": "in_app"}]
    assert invalid.status_code == 400
    assert novu.http.delete("/_emulator/workflows/plain").status_code == 200
    assert novu.http.delete("/_emulator/workflows/plain").status_code == 404
    listed = novu.http.get("/_emulator/workflows").json()
    assert [entry["workflowId"] for entry in listed] == ["welcome", "made-in-dashboard"]


def test_cancel_stops_a_bridge_run_in_its_delay_step(novu: EmulatedNovu) -> None:
    steps = [("hello", "in_app"), ("wait", "delay"), ("mail", "email")]
    with serve_discover_bridge(SECRET, {"drip": steps}) as bridge:
        bridge.delay_seconds = 1.0
        assert novu.http.post(SYNC, json={"bridgeUrl": bridge.url}).status_code == 201
        cancelled, finished = make_event(name="drip"), make_event(name="drip", to="s-2")
        assert novu.trigger(cancelled).status_code == 201
        recorded = novu.running.server.state.by_transaction[cancelled["transactionId"]]
        deadline = time.monotonic() + 5
        while recorded.delayed_until is None and time.monotonic() < deadline:
            time.sleep(0.02)
        answer = novu.cancel(cancelled["transactionId"])
        assert novu.trigger(finished).status_code == 201
        time.sleep(2.5)  # both delays are over

        assert answer.json() == {"data": True}
        assert novu.cancel(finished["transactionId"]).json() == {"data": False}
        ran = [step for _, step in bridge.executed]
        assert ran.count("wait") == 2
        assert ran.count("mail") == 1  # only the run that was not cancelled
