"""Synchronous client for the four Novu REST calls XNovu makes.

Building a request and reading its answer are pure functions over
`NovuRequest` and `httpx.Response`; `NovuClient` only sends. An async twin can
reuse everything but `NovuClient`. The client never retries or sleeps: the
worker decides when to try again (see `shared.novu.retry.backoff_delay`).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self
from urllib.parse import quote

import httpx
from pydantic import ValidationError

from shared.metrics import novu_endpoint, record_novu_call
from shared.novu.errors import (
    error_from_response,
    error_from_transport,
    is_replay,
    response_body,
    result_error,
    unexpected_body_error,
)
from shared.novu.schemas import (
    MAX_BULK_EVENTS,
    RateLimit,
    TriggerEvent,
    TriggerResult,
    canonical_json,
)
from shared.process import PerProcess

if TYPE_CHECKING:
    from shared.settings import Settings

TRIGGER_PATH = "/v1/events/trigger"
BULK_TRIGGER_PATH = "/v1/events/trigger/bulk"
IDEMPOTENCY_KEY_PREFIX = "xnovu-"
MAX_IDEMPOTENCY_KEY_CHARS = 255  # Novu answers 400 above this.


def _package_version() -> str:
    try:
        return version("xnovu")
    except PackageNotFoundError:
        return "0"


USER_AGENT = f"xnovu/{_package_version()} (httpx/{httpx.__version__})"


@dataclass(frozen=True, slots=True)
class NovuRequest:
    """One HTTP call to Novu, ready to send with any httpx client."""

    method: str
    path: str
    headers: Mapping[str, str] = field(default_factory=dict)
    content: bytes | None = None


def default_headers(secret_key: str) -> dict[str, str]:
    """Headers every call carries: Novu's ApiKey auth, JSON, and who we are."""
    return {
        "Authorization": f"ApiKey {secret_key}",
        "Accept": "application/json",
        "User-Agent": USER_AGENT,
    }


def _is_plain_header_text(text: str) -> bool:
    return all(" " < char < "\x7f" for char in text)


def trigger_idempotency_key(transaction_id: str) -> str:
    """The Idempotency-Key for one trigger: the same for every attempt of a transactionId.

    `xnovu-<transactionId>` when that is a valid header value of at most 255
    characters, otherwise `xnovu-sha256-<hex digest of the transactionId>`.
    """
    key = IDEMPOTENCY_KEY_PREFIX + transaction_id
    if len(key) <= MAX_IDEMPOTENCY_KEY_CHARS and _is_plain_header_text(transaction_id):
        return key
    digest = hashlib.sha256(transaction_id.encode()).hexdigest()
    return f"{IDEMPOTENCY_KEY_PREFIX}sha256-{digest}"


def bulk_idempotency_key(transaction_ids: Sequence[str]) -> str:
    """The Idempotency-Key for a bulk trigger: a hash of its transactionIds, in order."""
    encoded = json.dumps(list(transaction_ids), separators=(",", ":"), ensure_ascii=False)
    digest = hashlib.sha256(encoded.encode()).hexdigest()
    return f"{IDEMPOTENCY_KEY_PREFIX}bulk-{digest}"


def _json_headers(idempotency_key: str) -> dict[str, str]:
    return {"Content-Type": "application/json", "Idempotency-Key": idempotency_key}


def build_trigger_request(
    event: TriggerEvent, *, idempotency_key: str | None = None
) -> NovuRequest:
    """`POST /v1/events/trigger` for one event, keyed by its transactionId unless told otherwise."""
    key = idempotency_key or trigger_idempotency_key(event.transaction_id)
    return NovuRequest("POST", TRIGGER_PATH, _json_headers(key), canonical_json(event.to_body()))


def build_bulk_trigger_request(
    events: Sequence[TriggerEvent], *, idempotency_key: str | None = None
) -> NovuRequest:
    """`POST /v1/events/trigger/bulk` for 1 to 100 events with distinct transactionIds."""
    if not 1 <= len(events) <= MAX_BULK_EVENTS:
        raise ValueError(f"a bulk trigger takes 1 to {MAX_BULK_EVENTS} events, got {len(events)}")
    transaction_ids = [event.transaction_id for event in events]
    if len(set(transaction_ids)) != len(transaction_ids):
        # Novu would silently drop the later events sharing a transactionId.
        raise ValueError("transactionIds must be distinct within a bulk trigger")
    key = idempotency_key or bulk_idempotency_key(transaction_ids)
    body = {"events": [event.to_body() for event in events]}
    return NovuRequest("POST", BULK_TRIGGER_PATH, _json_headers(key), canonical_json(body))


def build_cancel_request(transaction_id: str) -> NovuRequest:
    """`DELETE /v1/events/trigger/{transactionId}`, the id escaped as one path segment."""
    if not transaction_id:
        raise ValueError("transaction_id must not be empty")
    return NovuRequest("DELETE", f"{TRIGGER_PATH}/{quote(transaction_id, safe='')}")


def parse_rate_limit(headers: httpx.Headers) -> RateLimit | None:
    """Novu's `RateLimit-*` headers, or None when it sent none."""
    limit = _int_header(headers, "RateLimit-Limit")
    remaining = _int_header(headers, "RateLimit-Remaining")
    reset = _float_header(headers, "RateLimit-Reset")
    policy = headers.get("RateLimit-Policy")
    if limit is None and remaining is None and reset is None and policy is None:
        return None
    return RateLimit(limit=limit, remaining=remaining, reset_seconds=reset, policy=policy)


def _int_header(headers: httpx.Headers, name: str) -> int | None:
    try:
        return int(headers[name].strip())
    except (KeyError, ValueError):
        return None


def _float_header(headers: httpx.Headers, name: str) -> float | None:
    try:
        return float(headers[name].strip())
    except (KeyError, ValueError):
        return None


def _data(response: httpx.Response) -> Any:
    """The `data` member of a 2xx JSON answer; raises a retryable error when it is missing."""
    try:
        body = json.loads(response.content)
    except ValueError:
        raise unexpected_body_error(response, "a JSON document") from None
    if not isinstance(body, dict) or "data" not in body:
        raise unexpected_body_error(response, "an object with `data`")
    return body["data"]


def _result(
    response: httpx.Response,
    item: Any,
    transaction_id: str,
    context: dict[str, Any],
) -> TriggerResult:
    """One trigger result of the answer, with `context` (what the response headers say, read
    once per response) filled in."""
    try:
        result = TriggerResult.model_validate(item)
    except ValidationError:
        raise unexpected_body_error(response, "a trigger result") from None
    if result.transaction_id is not None and result.transaction_id != transaction_id:
        raise unexpected_body_error(response, f"transactionId {transaction_id!r}")
    return result.model_copy(update=context)


def _header_context(response: httpx.Response) -> dict[str, Any]:
    """What every result of one answer shares: the rate limit, whether it was a replay, and its
    HTTP status (the timeline shows it). Read once per response: looking the headers up again
    for each of 100 events of a bulk answer was a tenth of the worker's CPU in batched
    delivery."""
    return {
        "rate_limit": parse_rate_limit(response.headers),
        "replayed": is_replay(response),
        "status_code": response.status_code,
    }


def parse_trigger_response(response: httpx.Response, event: TriggerEvent) -> TriggerResult:
    """The processed result of a 2xx trigger answer.

    Raises `NovuPermanentError` when Novu answered 201 with a status other than
    `processed`, and `NovuRetryableError` when the body is not a trigger result.
    """
    result = _result(response, _data(response), event.transaction_id, _header_context(response))
    error = result_error(result, status_code=response.status_code, body=response_body(response))
    if error is not None:
        raise error
    return result


def parse_bulk_trigger_response(
    response: httpx.Response, events: Sequence[TriggerEvent]
) -> list[TriggerResult]:
    """One result per event, in the order sent; each may be processed or not (see `processed`)."""
    data = _data(response)
    if not isinstance(data, list) or len(data) != len(events):
        raise unexpected_body_error(response, f"a list of {len(events)} trigger results")
    context = _header_context(response)
    return [
        _result(response, item, event.transaction_id, context)
        for item, event in zip(data, events, strict=True)
    ]


def parse_cancel_response(response: httpx.Response) -> bool:
    """Whether Novu cancelled anything for the transactionId."""
    data = _data(response)
    if not isinstance(data, bool):
        raise unexpected_body_error(response, "a boolean `data`")
    return data


class NovuClient:
    """Novu's trigger, bulk trigger and cancel calls over one pooled `httpx.Client`.

    Thread-safe and meant to live for the whole process. Every call either
    returns or raises a `NovuError`; none retries or sleeps.
    """

    def __init__(
        self,
        base_url: str,
        secret_key: str,
        *,
        timeout: float = 10.0,
        connect_timeout: float = 3.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if not base_url:
            raise ValueError("base_url must not be empty")
        if not secret_key:
            raise ValueError("secret_key must not be empty")
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers=default_headers(secret_key),
            # Waiting for a free pooled connection is bounded like connecting.
            timeout=httpx.Timeout(timeout, connect=connect_timeout, pool=connect_timeout),
            transport=transport,
            follow_redirects=False,
        )

    @classmethod
    def from_settings(
        cls, settings: Settings, *, transport: httpx.BaseTransport | None = None
    ) -> NovuClient:
        """A client for the configured Novu (or the local emulator when none is set)."""
        return cls(
            settings.effective_novu_api_url,
            settings.effective_novu_secret_key,
            timeout=settings.novu_timeout_seconds,
            connect_timeout=settings.novu_connect_timeout_seconds,
            transport=transport,
        )

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the pooled connections."""
        self._http.close()

    def trigger(self, event: TriggerEvent, *, idempotency_key: str | None = None) -> TriggerResult:
        """Trigger one workflow run; returns only when Novu answered `processed`.

        `idempotency_key` overrides the key derived from the transactionId (for
        example after Novu replayed a cached failure for that key).
        """
        request = build_trigger_request(event, idempotency_key=idempotency_key)
        return parse_trigger_response(self._send(request), event)

    def trigger_bulk(
        self, events: Sequence[TriggerEvent], *, idempotency_key: str | None = None
    ) -> list[TriggerResult]:
        """Trigger 1 to 100 events in one call; check each result's `processed`.

        A result that is not processed is that event's permanent failure
        (`shared.novu.errors.result_error` turns it into a `NovuPermanentError`);
        the others are unaffected. A failure of the call itself raises for all.
        """
        request = build_bulk_trigger_request(events, idempotency_key=idempotency_key)
        return parse_bulk_trigger_response(self._send(request), events)

    def cancel(self, transaction_id: str) -> bool:
        """Cancel the transaction's delayed, digested or pending steps; True if any were."""
        return parse_cancel_response(self._send(build_cancel_request(transaction_id)))

    def sync_bridge(self, bridge_url: str, *, source: str) -> list[Any]:
        """`POST /v1/bridge/sync?source=…`: Novu calls `discover` on the bridge at `bridge_url`,
        stores every workflow listed there and deletes the ones no longer listed; returns the
        workflows Novu stored. Novu answers 400 when it cannot reach or read the bridge."""
        body = canonical_json({"bridgeUrl": bridge_url})
        path = f"/v1/bridge/sync?source={quote(source, safe='')}"
        response = self._send(NovuRequest("POST", path, {"Content-Type": "application/json"}, body))
        data = _data(response)
        if not isinstance(data, list):
            raise unexpected_body_error(response, "a list of workflows")
        return data

    def _send(self, request: NovuRequest) -> httpx.Response:
        endpoint = novu_endpoint(request.method, request.path)
        started = time.perf_counter()
        try:
            response = self._http.request(
                request.method, request.path, headers=dict(request.headers), content=request.content
            )
        except httpx.RequestError as exc:
            record_novu_call(endpoint, None, time.perf_counter() - started)
            raise error_from_transport(exc) from exc
        record_novu_call(endpoint, response.status_code, time.perf_counter() - started)
        if not response.is_success:
            raise error_from_response(response)
        return response


def _client_from_settings() -> NovuClient:
    from shared.settings import get_settings

    return NovuClient.from_settings(get_settings())


_client = PerProcess(_client_from_settings)


def get_novu_client() -> NovuClient:
    """The process's pooled client, built from settings; a forked child builds its own."""
    return _client.get()


__all__ = [
    "BULK_TRIGGER_PATH",
    "TRIGGER_PATH",
    "USER_AGENT",
    "NovuClient",
    "NovuRequest",
    "build_bulk_trigger_request",
    "build_cancel_request",
    "build_trigger_request",
    "bulk_idempotency_key",
    "default_headers",
    "get_novu_client",
    "parse_bulk_trigger_response",
    "parse_cancel_response",
    "parse_rate_limit",
    "parse_trigger_response",
    "trigger_idempotency_key",
]
