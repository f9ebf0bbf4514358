"""The emulator's faults for chaos runs: latency spikes, per-transaction permanent faults and the
fault log that tells which transactionIds a fault hit."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from novu_emulator import start_in_thread

SECRET = "test-secret-key"
AUTH = {"Authorization": f"ApiKey {SECRET}"}
TRIGGER = "/v1/events/trigger"


def event(transaction_id: str | None = None) -> dict[str, Any]:
    return {
        "name": "welcome",
        "to": "subscriber-1",
        "payload": {},
        "transactionId": transaction_id or f"tx-{uuid.uuid4()}",
    }


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with (
        start_in_thread(secret_key=SECRET, seed=7, workflows={"welcome"}) as running,
        httpx.Client(base_url=running.url, headers=AUTH, timeout=10.0) as client,
    ):
        yield client


def set_faults(http: httpx.Client, **config: Any) -> None:
    response = http.post("/_emulator/faults", json=config)
    assert response.status_code == 200, response.text


def trigger(http: httpx.Client, body: dict[str, Any], key: str | None = None) -> httpx.Response:
    headers = {"Idempotency-Key": key} if key else {}
    return http.post(TRIGGER, json=body, headers=headers)


def test_transaction_scoped_fault_answers_every_attempt_of_that_transaction(
    http: httpx.Client,
) -> None:
    set_faults(http, rules=[{"status": 400, "rate": 1.0, "scope": "transaction"}])
    body = event()
    statuses = [trigger(http, body, key=f"k-{attempt}").status_code for attempt in range(3)]
    assert statuses == [400, 400, 400]
    stats = http.get("/_emulator/stats").json()
    assert (stats["accepted"], stats["faults"]["status:400"]) == (0, 3)


def test_transaction_scoped_fault_is_decided_once_per_transaction(http: httpx.Client) -> None:
    set_faults(http, rules=[{"status": 400, "rate": 0.5, "scope": "transaction"}])
    answers: dict[str, set[int]] = {}
    for _ in range(60):
        body = event()
        answers[body["transactionId"]] = {
            trigger(http, body, key=str(uuid.uuid4())).status_code for _ in range(3)
        }
    assert all(len(statuses) == 1 for statuses in answers.values())
    rejected = {tx for tx, statuses in answers.items() if statuses == {400}}
    assert 0 < len(rejected) < 60
    accepted = {item["transactionId"] for item in http.get("/_emulator/events").json()}
    assert accepted == set(answers) - rejected


def test_in_a_bulk_call_a_transaction_scoped_4xx_refuses_that_event_only(
    http: httpx.Client,
) -> None:
    set_faults(http, rules=[{"status": 400, "rate": 0.5, "scope": "transaction"}])
    events = [event() for _ in range(40)]
    answers = []
    for attempt in range(2):  # the same transactionIds again: the same verdicts
        response = http.post(
            "/v1/events/trigger/bulk",
            json={"events": events},
            headers={"Idempotency-Key": str(attempt)},
        )
        assert response.status_code == 201, response.text
        answers.append([result["status"] for result in response.json()["data"]])
    assert answers[0] == answers[1]
    refused = {
        e["transactionId"]
        for e, status in zip(events, answers[0], strict=True)
        if status == "error"
    }
    assert 0 < len(refused) < 40
    assert set(answers[0]) == {"error", "processed"}
    accepted = {item["transactionId"] for item in http.get("/_emulator/events").json()}
    assert accepted == {e["transactionId"] for e in events} - refused
    assert http.get("/_emulator/stats").json()["faults"]["status:400"] == 2 * len(refused)


def test_request_scoped_rule_wins_over_a_transaction_scoped_one(http: httpx.Client) -> None:
    set_faults(
        http,
        rules=[
            {"status": 500, "rate": 1.0},
            {"status": 400, "rate": 1.0, "scope": "transaction"},
        ],
    )
    assert trigger(http, event()).status_code == 500


def test_transaction_scoped_rates_are_checked_apart_from_request_scoped_ones(
    http: httpx.Client,
) -> None:
    too_much = [
        {"status": 400, "rate": 0.6, "scope": "transaction"},
        {"status": 422, "rate": 0.6, "scope": "transaction"},
    ]
    assert http.post("/_emulator/faults", json={"rules": too_much}).status_code == 400
    both = [{"status": 500, "rate": 0.9}, {"status": 400, "rate": 0.9, "scope": "transaction"}]
    assert http.post("/_emulator/faults", json={"rules": both}).status_code == 200


def test_latency_spike_delays_only_the_requests_it_picks(http: httpx.Client) -> None:
    set_faults(http, latencySpikeRate=1.0, latencySpikeMs=300)
    started = time.monotonic()
    assert trigger(http, event()).status_code == 201
    assert time.monotonic() - started >= 0.3
    set_faults(http, latencySpikeRate=0.0, latencySpikeMs=3000)
    started = time.monotonic()
    assert trigger(http, event()).status_code == 201
    assert time.monotonic() - started < 1.0
    faults = http.get("/_emulator/stats").json()["faults"]
    assert (faults["latencySpike"], faults["latency"]) == (1, 0)


def test_fault_log_names_the_transactions_each_fault_hit(http: httpx.Client) -> None:
    dropped, failed, accepted = event(), event(), event()
    set_faults(http, dropRate=1.0)
    with pytest.raises(httpx.TransportError):
        trigger(http, dropped)
    set_faults(http, status=500)
    assert trigger(http, failed).status_code == 500
    set_faults(http, dropAfterAcceptRate=1.0)
    with pytest.raises(httpx.TransportError):
        trigger(http, accepted)

    log = http.get("/_emulator/faults/log").json()
    assert [(entry["kind"], entry["transactionIds"]) for entry in log] == [
        ("drop", [dropped["transactionId"]]),
        ("status:500", [failed["transactionId"]]),
        ("dropAfterAccept", [accepted["transactionId"]]),
    ]
    assert log[1]["status"] == 500
    only_500 = http.get("/_emulator/faults/log", params={"kind": "status:500"}).json()
    assert [entry["kind"] for entry in only_500] == ["status:500"]
    by_tx = http.get(
        "/_emulator/faults/log", params={"transactionId": accepted["transactionId"]}
    ).json()
    assert [entry["kind"] for entry in by_tx] == ["dropAfterAccept"]
    assert http.post("/_emulator/reset").status_code == 200
    assert http.get("/_emulator/faults/log").json() == []
