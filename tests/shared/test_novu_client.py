"""The Novu REST client: requests it sends, and how it sorts Novu's answers."""

from __future__ import annotations

import json
import pickle
import random
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest
import respx

from shared.novu import (
    NovuClient,
    NovuPermanentError,
    NovuRetryableError,
    TriggerEvent,
    backoff_delay,
    parse_retry_after,
    result_error,
)
from shared.novu.client import USER_AGENT, bulk_idempotency_key, trigger_idempotency_key
from shared.settings import Settings

BASE_URL = "https://novu.test"
SECRET = "sk_test_secret"
TRIGGER = "/v1/events/trigger"
BULK = "/v1/events/trigger/bulk"


def make_event(transaction_id: str = "txn-1", **fields: Any) -> TriggerEvent:
    """A valid trigger event; keyword arguments replace its fields."""
    values: dict[str, Any] = {
        "name": "welcome-email",
        "to": {"subscriberId": "user-1", "email": "user@example.com"},
        "payload": {"firstName": "Ada", "orderId": 42},
        "transaction_id": transaction_id,
    }
    values.update(fields)
    return TriggerEvent.model_validate(values)


def result_json(transaction_id: str, status: str = "processed", **extra: Any) -> dict[str, Any]:
    return {"acknowledged": True, "status": status, "transactionId": transaction_id, **extra}


def processed(transaction_id: str) -> httpx.Response:
    return httpx.Response(201, json={"data": result_json(transaction_id)})


@pytest.fixture
def novu() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=BASE_URL, assert_all_called=False) as router:
        yield router


@pytest.fixture
def client() -> Iterator[NovuClient]:
    with NovuClient(BASE_URL, SECRET) as novu_client:
        yield novu_client


# --- trigger: the request -----------------------------------------------------------------


def test_trigger_posts_the_event_with_api_key_auth(
    novu: respx.MockRouter, client: NovuClient
) -> None:
    route = novu.post(TRIGGER).mock(return_value=processed("txn-1"))
    event = make_event(overrides={"email": {"from": "ops@example.com"}})

    client.trigger(event)

    request = route.calls.last.request
    assert request.method == "POST"
    assert request.url == f"{BASE_URL}{TRIGGER}"
    assert request.headers["Authorization"] == f"ApiKey {SECRET}"
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["User-Agent"] == USER_AGENT
    assert USER_AGENT.startswith("xnovu/")
    assert json.loads(request.content) == {
        "name": "welcome-email",
        "to": {"subscriberId": "user-1", "email": "user@example.com"},
        "payload": {"firstName": "Ada", "orderId": 42},
        "overrides": {"email": {"from": "ops@example.com"}},
        "transactionId": "txn-1",
    }


def test_retries_of_one_transaction_send_the_same_key_and_bytes(
    novu: respx.MockRouter, client: NovuClient
) -> None:
    route = novu.post(TRIGGER).mock(return_value=processed("txn-1"))

    # Same data built in a different key order: Novu hashes the body per Idempotency-Key.
    client.trigger(make_event(payload={"a": 1, "b": {"y": 2, "x": 1}}))
    client.trigger(make_event(payload={"b": {"x": 1, "y": 2}, "a": 1}))

    first, second = (call.request for call in route.calls)
    assert first.headers["Idempotency-Key"] == "xnovu-txn-1"
    assert second.headers["Idempotency-Key"] == first.headers["Idempotency-Key"]
    assert second.content == first.content


def test_different_transactions_send_different_keys(
    novu: respx.MockRouter, client: NovuClient
) -> None:
    route = novu.post(TRIGGER).mock(side_effect=lambda request: processed(_tid(request)))

    client.trigger(make_event("txn-1"))
    client.trigger(make_event("txn-2"))

    keys = [call.request.headers["Idempotency-Key"] for call in route.calls]
    assert keys == ["xnovu-txn-1", "xnovu-txn-2"]


def test_explicit_idempotency_key_replaces_the_derived_one(
    novu: respx.MockRouter, client: NovuClient
) -> None:
    route = novu.post(TRIGGER).mock(return_value=processed("txn-1"))

    client.trigger(make_event(), idempotency_key="xnovu-txn-1-2")

    assert route.calls.last.request.headers["Idempotency-Key"] == "xnovu-txn-1-2"


@pytest.mark.parametrize("transaction_id", ["x" * 300, "naïve id", "tab\tinside"])
def test_long_or_non_ascii_transaction_ids_get_a_hashed_key(transaction_id: str) -> None:
    key = trigger_idempotency_key(transaction_id)

    assert key == trigger_idempotency_key(transaction_id)
    assert key.startswith("xnovu-sha256-")
    assert len(key) <= 255
    assert key.isascii()
    assert key != trigger_idempotency_key(transaction_id + "!")


# --- trigger: the answer ------------------------------------------------------------------


def test_processed_answer_is_the_result_with_rate_limits(
    novu: respx.MockRouter, client: NovuClient
) -> None:
    headers = {"RateLimit-Limit": "600", "RateLimit-Remaining": "598", "RateLimit-Reset": "2"}
    body = {"data": result_json("txn-1", activityFeedLink="https://x")}
    novu.post(TRIGGER).mock(return_value=httpx.Response(201, json=body, headers=headers))

    result = client.trigger(make_event())

    assert result.processed
    assert result.acknowledged is True
    assert result.transaction_id == "txn-1"
    assert result.error is None
    assert result.rate_limit is not None
    assert (result.rate_limit.limit, result.rate_limit.remaining) == (600, 598)
    assert result.rate_limit.reset_seconds == 2.0
    assert result.replayed is False


@pytest.mark.parametrize(
    "status",
    ["trigger_not_active", "invalid_recipients", "error", "no_workflow_steps_defined", "new"],
)
def test_201_not_processed_is_permanent_and_keeps_novus_answer(
    novu: respx.MockRouter, client: NovuClient, status: str
) -> None:
    body = {"data": result_json("txn-1", status, acknowledged=True, error=["Workflow is off"])}
    novu.post(TRIGGER).mock(return_value=httpx.Response(201, json=body))

    with pytest.raises(NovuPermanentError) as caught:
        client.trigger(make_event())

    assert caught.value.status_code == 201
    assert caught.value.body == body
    assert status in caught.value.message
    assert "Workflow is off" in caught.value.message


@pytest.mark.parametrize("status_code", [400, 401, 403, 404, 413, 422])
def test_client_errors_are_permanent(
    novu: respx.MockRouter, client: NovuClient, status_code: int
) -> None:
    body = {"statusCode": status_code, "message": ["to must be defined"], "error": "Bad"}
    novu.post(TRIGGER).mock(return_value=httpx.Response(status_code, json=body))

    with pytest.raises(NovuPermanentError) as caught:
        client.trigger(make_event())

    assert caught.value.status_code == status_code
    assert caught.value.message == "to must be defined"
    assert caught.value.body == body


@pytest.mark.parametrize("status_code", [408, 409, 429, 500, 502, 503, 504])
def test_server_errors_and_throttling_are_retryable(
    novu: respx.MockRouter, client: NovuClient, status_code: int
) -> None:
    novu.post(TRIGGER).mock(return_value=httpx.Response(status_code, text="upstream trouble"))

    with pytest.raises(NovuRetryableError) as caught:
        client.trigger(make_event())

    assert caught.value.status_code == status_code
    assert caught.value.body == "upstream trouble"
    assert caught.value.retry_after is None


def test_429_retry_after_seconds_is_exposed(novu: respx.MockRouter, client: NovuClient) -> None:
    novu.post(TRIGGER).mock(return_value=httpx.Response(429, headers={"Retry-After": "3"}))

    with pytest.raises(NovuRetryableError) as caught:
        client.trigger(make_event())

    assert caught.value.retry_after == 3.0


def test_retry_after_http_date_becomes_seconds_from_now(
    novu: respx.MockRouter, client: NovuClient
) -> None:
    when = datetime.now(UTC) + timedelta(seconds=120)
    headers = {"Retry-After": format_datetime(when, usegmt=True)}
    novu.post(TRIGGER).mock(return_value=httpx.Response(503, headers=headers))

    with pytest.raises(NovuRetryableError) as caught:
        client.trigger(make_event())

    assert caught.value.retry_after is not None
    assert 100.0 <= caught.value.retry_after <= 120.0


def test_parse_retry_after_edge_cases() -> None:
    now = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)

    assert parse_retry_after("Wed, 01 Jan 2025 12:00:30 GMT", now=now) == 30.0
    assert parse_retry_after("Wed, 01 Jan 2025 11:00:00 GMT", now=now) == 0.0
    assert parse_retry_after("1.5") == 1.5
    assert parse_retry_after("-4") == 0.0
    assert parse_retry_after("99999999999") == 86_400.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after("") is None
    assert parse_retry_after(None) is None


def test_idempotency_409_in_flight_is_retryable_after_one_second(
    novu: respx.MockRouter, client: NovuClient
) -> None:
    body = {"statusCode": 409, "message": 'Request with key "xnovu-txn-1" is being processed'}
    response = httpx.Response(409, json=body, headers={"Retry-After": "1"})
    novu.post(TRIGGER).mock(return_value=response)

    with pytest.raises(NovuRetryableError) as caught:
        client.trigger(make_event())

    assert caught.value.retry_after == 1.0
    assert "being processed" in caught.value.message


def test_replayed_cached_failure_is_flagged(novu: respx.MockRouter, client: NovuClient) -> None:
    response = httpx.Response(500, json={"message": "boom"}, headers={"Idempotency-Replay": "true"})
    novu.post(TRIGGER).mock(return_value=response)

    with pytest.raises(NovuRetryableError) as caught:
        client.trigger(make_event())

    assert caught.value.replayed is True


@pytest.mark.parametrize(
    "exc",
    [
        httpx.ConnectTimeout("connect timed out"),
        httpx.ReadTimeout("read timed out"),
        httpx.WriteTimeout("write timed out"),
        httpx.PoolTimeout("no free connection"),
    ],
)
def test_timeouts_are_retryable(
    novu: respx.MockRouter, client: NovuClient, exc: httpx.TimeoutException
) -> None:
    novu.post(TRIGGER).mock(side_effect=exc)

    with pytest.raises(NovuRetryableError) as caught:
        client.trigger(make_event())

    assert caught.value.status_code is None
    assert caught.value.__cause__ is exc
    assert type(exc).__name__ in caught.value.message


@pytest.mark.parametrize(
    "exc",
    [
        httpx.ConnectError("connection refused"),
        httpx.RemoteProtocolError("Server disconnected without sending a response."),
        httpx.ReadError("connection reset by peer"),
        httpx.WriteError("broken pipe"),
    ],
)
def test_connection_errors_are_retryable(
    novu: respx.MockRouter, client: NovuClient, exc: httpx.TransportError
) -> None:
    novu.post(TRIGGER).mock(side_effect=exc)

    with pytest.raises(NovuRetryableError) as caught:
        client.trigger(make_event())

    assert caught.value.status_code is None
    assert caught.value.__cause__ is exc


def test_refused_connection_on_a_real_socket_is_retryable() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # Nothing listens on the port any more.
    real = NovuClient(f"http://127.0.0.1:{port}", SECRET, connect_timeout=1.0)
    with real, pytest.raises(NovuRetryableError) as caught:
        real.trigger(make_event())

    assert isinstance(caught.value.__cause__, httpx.ConnectError)


def test_server_hanging_up_without_an_answer_is_retryable() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]

        def hang_up() -> None:
            connection, _ = server.accept()
            with connection:
                connection.recv(65536)

        thread = threading.Thread(target=hang_up, daemon=True)
        thread.start()
        real = NovuClient(f"http://127.0.0.1:{port}", SECRET, timeout=5.0)
        with real, pytest.raises(NovuRetryableError) as caught:
            real.trigger(make_event())
        thread.join(timeout=5)

    assert isinstance(caught.value.__cause__, httpx.RemoteProtocolError)


def test_unsupported_url_scheme_is_permanent() -> None:
    misconfigured = NovuClient("ftp://novu.test", SECRET)
    with misconfigured, pytest.raises(NovuPermanentError) as caught:
        misconfigured.trigger(make_event())

    assert "UnsupportedProtocol" in caught.value.message


def test_redirect_is_permanent_and_not_followed(novu: respx.MockRouter, client: NovuClient) -> None:
    redirect = httpx.Response(301, headers={"Location": "https://api.novu.co/v1/events/trigger"})
    route = novu.post(TRIGGER).mock(return_value=redirect)

    with pytest.raises(NovuPermanentError) as caught:
        client.trigger(make_event())

    assert route.call_count == 1
    assert "NOVU_API_URL" in caught.value.message


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(201, text="<html>proxy error</html>"),
        httpx.Response(201, content=b'{"data": {"acknowledged": tr'),
        httpx.Response(201, json={"acknowledged": True, "status": "processed"}),
        httpx.Response(201, json={"data": {"status": "processed"}}),
        httpx.Response(201, json={"data": result_json("someone-else")}),
    ],
    ids=["html", "truncated", "no-data", "no-acknowledged", "other-transaction"],
)
def test_garbled_2xx_is_retryable(
    novu: respx.MockRouter, client: NovuClient, response: httpx.Response
) -> None:
    novu.post(TRIGGER).mock(return_value=response)

    with pytest.raises(NovuRetryableError) as caught:
        client.trigger(make_event())

    assert caught.value.status_code == 201
    assert caught.value.message.startswith("unexpected response body")


# --- bulk trigger -------------------------------------------------------------------------


def test_bulk_of_101_events_is_refused_before_any_request(
    novu: respx.MockRouter, client: NovuClient
) -> None:
    route = novu.post(BULK).mock(return_value=httpx.Response(201, json={"data": []}))
    events = [make_event(f"txn-{n}") for n in range(101)]

    with pytest.raises(ValueError, match="1 to 100"):
        client.trigger_bulk(events)
    with pytest.raises(ValueError, match="1 to 100"):
        client.trigger_bulk([])
    with pytest.raises(ValueError, match="distinct"):
        client.trigger_bulk([make_event("same"), make_event("same")])

    assert not route.called
    assert len(novu.calls) == 0


def test_bulk_sends_events_under_a_key_derived_from_the_ordered_ids(
    novu: respx.MockRouter, client: NovuClient
) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        events = json.loads(request.content)["events"]
        return httpx.Response(201, json={"data": [result_json(e["transactionId"]) for e in events]})

    route = novu.post(BULK).mock(side_effect=answer)
    forward = [make_event("a"), make_event("b")]

    client.trigger_bulk(forward)
    client.trigger_bulk(forward)
    client.trigger_bulk(list(reversed(forward)))

    first, again, reversed_ = (call.request for call in route.calls)
    assert first.headers["Authorization"] == f"ApiKey {SECRET}"
    assert json.loads(first.content) == {"events": [event.to_body() for event in forward]}
    assert first.headers["Idempotency-Key"] == bulk_idempotency_key(["a", "b"])
    assert again.headers["Idempotency-Key"] == first.headers["Idempotency-Key"]
    assert reversed_.headers["Idempotency-Key"] != first.headers["Idempotency-Key"]
    assert len(first.headers["Idempotency-Key"]) <= 255


def test_bulk_results_are_classified_per_event(novu: respx.MockRouter, client: NovuClient) -> None:
    data = [
        result_json("a"),
        result_json("b", "trigger_not_active", error=["Workflow is not active"]),
        result_json("c"),
    ]
    novu.post(BULK).mock(return_value=httpx.Response(201, json={"data": data}))

    results = client.trigger_bulk([make_event("a"), make_event("b"), make_event("c")])

    assert [result.transaction_id for result in results] == ["a", "b", "c"]
    assert [result.processed for result in results] == [True, False, True]
    assert result_error(results[0]) is None
    assert result_error(results[2]) is None
    failure = result_error(results[1])
    assert isinstance(failure, NovuPermanentError)
    assert failure.status_code == 201
    assert "trigger_not_active" in failure.message
    assert failure.body["error"] == ["Workflow is not active"]


def test_every_bulk_result_carries_the_answers_rate_limit_and_replay_flag(
    novu: respx.MockRouter, client: NovuClient
) -> None:
    # The headers are read once per answer and shared by each event's result.
    headers = {"RateLimit-Limit": "600", "RateLimit-Remaining": "597", "Idempotency-Replay": "true"}
    data = [result_json("a"), result_json("b")]
    novu.post(BULK).mock(return_value=httpx.Response(201, json={"data": data}, headers=headers))

    results = client.trigger_bulk([make_event("a"), make_event("b")])

    for result in results:
        assert result.rate_limit is not None
        assert (result.rate_limit.limit, result.rate_limit.remaining) == (600, 597)
        assert result.replayed is True


def test_bulk_answer_with_missing_results_is_retryable(
    novu: respx.MockRouter, client: NovuClient
) -> None:
    novu.post(BULK).mock(return_value=httpx.Response(201, json={"data": [result_json("a")]}))

    with pytest.raises(NovuRetryableError):
        client.trigger_bulk([make_event("a"), make_event("b")])


def test_bulk_call_failure_fails_every_event(novu: respx.MockRouter, client: NovuClient) -> None:
    novu.post(BULK).mock(return_value=httpx.Response(429, headers={"Retry-After": "10"}))

    with pytest.raises(NovuRetryableError) as caught:
        client.trigger_bulk([make_event("a"), make_event("b")])

    assert caught.value.retry_after == 10.0


# --- cancel -------------------------------------------------------------------------------


@pytest.mark.parametrize("cancelled", [True, False])
def test_cancel_returns_novus_answer(
    novu: respx.MockRouter, client: NovuClient, cancelled: bool
) -> None:
    route = novu.route(method="DELETE").mock(
        return_value=httpx.Response(200, json={"data": cancelled})
    )

    assert client.cancel("txn/1 a?b") is cancelled

    request = route.calls.last.request
    assert request.url.raw_path == b"/v1/events/trigger/txn%2F1%20a%3Fb"
    assert request.headers["Authorization"] == f"ApiKey {SECRET}"
    assert "Idempotency-Key" not in request.headers
    assert request.content == b""


def test_cancel_with_a_non_boolean_answer_is_retryable(
    novu: respx.MockRouter, client: NovuClient
) -> None:
    novu.route(method="DELETE").mock(return_value=httpx.Response(200, json={"data": "yes"}))

    with pytest.raises(NovuRetryableError):
        client.cancel("txn-1")


def test_cancel_of_an_empty_id_is_refused() -> None:
    with NovuClient(BASE_URL, SECRET) as novu_client, pytest.raises(ValueError):
        novu_client.cancel("")


# --- configuration ------------------------------------------------------------------------


def test_from_settings_uses_novu_url_key_and_timeouts(novu: respx.MockRouter) -> None:
    settings = Settings.model_validate(
        {
            "NOVU_API_URL": f"{BASE_URL}/",
            "NOVU_SECRET_KEY": "sk_from_settings",
            "NOVU_TIMEOUT_SECONDS": 7.5,
            "NOVU_CONNECT_TIMEOUT_SECONDS": 1.5,
        }
    )
    route = novu.post(TRIGGER).mock(return_value=processed("txn-1"))

    with NovuClient.from_settings(settings) as configured:
        configured.trigger(make_event())

    request = route.calls.last.request
    assert request.url == f"{BASE_URL}{TRIGGER}"
    assert request.headers["Authorization"] == "ApiKey sk_from_settings"
    assert request.extensions["timeout"] == {
        "connect": 1.5,
        "read": 7.5,
        "write": 7.5,
        "pool": 1.5,
    }


def test_one_client_serves_many_calls_over_one_transport() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["Idempotency-Key"])
        return processed(_tid(request))

    with NovuClient(BASE_URL, SECRET, transport=httpx.MockTransport(handler)) as shared:
        results = [shared.trigger(make_event(f"txn-{n}")) for n in range(5)]

    assert [result.transaction_id for result in results] == [f"txn-{n}" for n in range(5)]
    assert seen == [f"xnovu-txn-{n}" for n in range(5)]


def test_empty_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="secret_key"):
        NovuClient(BASE_URL, "")


# --- errors travel through Celery ---------------------------------------------------------


def test_errors_survive_pickling_and_describe_themselves_as_json() -> None:
    retryable = NovuRetryableError(429, "slow down", 3.0, {"message": "slow down"}, True)
    permanent = NovuPermanentError(422, "workflow_not_found", {"statusCode": 422})

    copy = pickle.loads(pickle.dumps(retryable))
    assert (copy.status_code, copy.message, copy.retry_after, copy.replayed) == (
        429,
        "slow down",
        3.0,
        True,
    )
    assert str(copy) == "Novu HTTP 429: slow down"
    assert pickle.loads(pickle.dumps(permanent)).body == {"statusCode": 422}
    details = json.loads(json.dumps(retryable.as_details()))
    assert details["retryable"] is True
    assert details["retryAfter"] == 3.0
    assert json.loads(json.dumps(permanent.as_details()))["retryable"] is False


# --- backoff ------------------------------------------------------------------------------


def test_backoff_never_exceeds_the_cap() -> None:
    rng = random.Random(7)
    delays = [
        backoff_delay(attempt, base=1.0, cap=30.0, rng=rng)
        for attempt in range(1, 200)
        for _ in range(20)
    ]

    assert max(delays) <= 30.0
    assert min(delays) >= 0.0


def test_backoff_ceiling_is_base_times_two_to_the_attempt() -> None:
    class Highest:
        def uniform(self, a: float, b: float) -> float:
            return b

    ceilings = [backoff_delay(n, base=0.5, cap=10.0, rng=Highest()) for n in range(1, 8)]

    assert ceilings == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]


def test_backoff_honours_retry_after_even_above_the_cap() -> None:
    rng = random.Random(1)

    assert all(
        backoff_delay(attempt, base=1.0, cap=60.0, retry_after=3.0, rng=rng) >= 3.0
        for attempt in range(1, 30)
    )
    assert backoff_delay(1, base=1.0, cap=60.0, retry_after=120.0, rng=rng) == 120.0


def test_backoff_grows_with_attempt_on_average() -> None:
    rng = random.Random(42)

    def mean(attempt: int) -> float:
        samples = [backoff_delay(attempt, base=1.0, cap=1000.0, rng=rng) for _ in range(2000)]
        return sum(samples) / len(samples)

    means = [mean(attempt) for attempt in range(1, 8)]

    assert means == sorted(means)
    assert means[-1] > 20 * means[0]


def test_backoff_refuses_nonsense() -> None:
    with pytest.raises(ValueError):
        backoff_delay(0, base=1.0, cap=10.0)
    with pytest.raises(ValueError):
        backoff_delay(1, base=0.0, cap=10.0)


def _tid(request: httpx.Request) -> str:
    transaction_id: str = json.loads(request.content)["transactionId"]
    return transaction_id
