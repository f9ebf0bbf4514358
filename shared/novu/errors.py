"""Errors of the Novu client, and the rules that sort Novu's answers into them.

The worker needs one decision per failed call: try again later
(`NovuRetryableError`) or give up (`NovuPermanentError`). Everything here is a
pure function of the response or exception, so a sync and an async client can
share it.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from shared.novu.schemas import TriggerResult

# 408 timeout, 409 same Idempotency-Key still in flight, 429 rate limited.
RETRYABLE_STATUS_CODES = frozenset({408, 409, 429})
# A Retry-After further away than this is treated as garbage and clamped.
MAX_RETRY_AFTER_SECONDS = 86_400.0
# Novu's answer to a trigger of a workflow it does not know: the message of its 422, and the
# `error` of that event's result in a bulk answer (Novu's ParseEventRequest).
WORKFLOW_NOT_FOUND = "workflow_not_found"
_MAX_MESSAGE_CHARS = 500
_MAX_TEXT_BODY_CHARS = 2_000


class NovuError(Exception):
    """Base of every error the Novu client raises."""

    status_code: int | None
    message: str
    body: Any

    def __str__(self) -> str:
        prefix = f"Novu HTTP {self.status_code}" if self.status_code is not None else "Novu"
        return f"{prefix}: {self.message}"

    def as_details(self) -> dict[str, Any]:
        """A JSON-safe description, fit for a notification's `error_details`."""
        return {
            "retryable": isinstance(self, NovuRetryableError),
            "statusCode": self.status_code,
            "message": self.message,
            "body": self.body,
        }


class NovuRetryableError(NovuError):
    """A failure that may go away: the same request can be sent again later.

    `retry_after` is Novu's `Retry-After` in seconds, when it sent one.
    `replayed` is true when Novu answered from its Idempotency-Key cache: it
    keeps that answer for 24 hours, so resending with the same key gets the
    same answer until then.
    """

    def __init__(
        self,
        status_code: int | None,
        message: str,
        retry_after: float | None = None,
        body: Any = None,
        replayed: bool = False,
    ) -> None:
        # All arguments go to Exception so that pickling (Celery) rebuilds the error intact.
        super().__init__(status_code, message, retry_after, body, replayed)
        self.status_code = status_code
        self.message = message
        self.retry_after = retry_after
        self.body = body
        self.replayed = replayed

    def as_details(self) -> dict[str, Any]:
        """A JSON-safe description, with the retry hint."""
        return {**super().as_details(), "retryAfter": self.retry_after, "replayed": self.replayed}


class NovuPermanentError(NovuError):
    """A failure that sending the same request again cannot fix."""

    def __init__(self, status_code: int | None, message: str, body: Any = None) -> None:
        super().__init__(status_code, message, body)
        self.status_code = status_code
        self.message = message
        self.body = body


def is_retryable_status(status_code: int) -> bool:
    """True for HTTP statuses worth another try: 408, 409, 429 and every 5xx."""
    return status_code in RETRYABLE_STATUS_CODES or status_code >= 500


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` header (delta-seconds or HTTP-date), else None."""
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    seconds: float
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # "-0000" dates parse naive; HTTP-dates are always GMT.
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if math.isnan(seconds):
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_SECONDS)


def response_body(response: httpx.Response) -> Any:
    """The response's JSON, or its text (shortened) when it is not JSON; None when empty."""
    if not response.content:
        return None
    try:
        return json.loads(response.content)
    except ValueError:
        return response.text[:_MAX_TEXT_BODY_CHARS]


def error_message(body: Any, default: str) -> str:
    """Novu's own error message from an error body (`message` may be a list), or `default`."""
    if isinstance(body, dict):
        for key in ("message", "error"):
            value = body.get(key)
            if isinstance(value, list) and value:
                return _shorten("; ".join(str(item) for item in value))
            if isinstance(value, str) and value:
                return _shorten(value)
    return default


def error_from_response(response: httpx.Response) -> NovuError:
    """The error for a non-2xx answer: retryable for 408/409/429/5xx, permanent otherwise."""
    status = response.status_code
    body = response_body(response)
    message = error_message(body, response.reason_phrase or f"HTTP {status}")
    if is_retryable_status(status):
        return NovuRetryableError(
            status,
            message,
            retry_after=parse_retry_after(response.headers.get("Retry-After")),
            body=body,
            replayed=is_replay(response),
        )
    if 300 <= status < 400:
        location = response.headers.get("Location", "")
        message = f"unexpected redirect to {location!r}; check NOVU_API_URL"
    return NovuPermanentError(status, message, body)


def error_from_transport(exc: httpx.RequestError) -> NovuError:
    """The error for a call that got no usable HTTP answer.

    Timeouts and broken connections are retryable: Novu may or may not have
    accepted the request, and resending the same transactionId is safe. A URL
    scheme httpx cannot speak, or a request httpx refuses to write, will fail
    the same way every time.
    """
    kind = type(exc).__name__
    message = f"{kind}: {exc}" if str(exc) else kind
    if isinstance(exc, httpx.UnsupportedProtocol | httpx.LocalProtocolError):
        return NovuPermanentError(None, _shorten(message))
    return NovuRetryableError(None, _shorten(message))


def unexpected_body_error(response: httpx.Response, what: str) -> NovuRetryableError:
    """A 2xx whose body is not what Novu documents.

    Retryable: the body was probably cut or mangled on the way, and resending is
    safe because Novu drops a transactionId it has already seen.
    """
    return NovuRetryableError(
        response.status_code,
        f"unexpected response body for {what}",
        body=response_body(response),
        replayed=is_replay(response),
    )


def result_error(
    result: TriggerResult, *, status_code: int = 201, body: Any = None
) -> NovuPermanentError | None:
    """The permanent error for a trigger result Novu did not process, or None when it did."""
    if result.processed:
        return None
    detail = result.error_text()
    message = f"Novu did not process the trigger: status {result.status!r}"
    if detail:
        message = f"{message}: {detail}"
    if body is None:
        body = result.model_dump(mode="json", by_alias=True)
    return NovuPermanentError(status_code, _shorten(message), body)


def is_rate_limited(exc: NovuError) -> bool:
    """True when Novu refused the call for its rate limit (429): it ran nothing and charged
    nothing."""
    return exc.status_code == 429


def is_ambiguous(exc: NovuError) -> bool:
    """True when Novu may have run the call although it failed: no answer (a timeout, a
    dropped connection), a mangled 2xx, or a 5xx."""
    status = exc.status_code
    return isinstance(exc, NovuRetryableError) and (status is None or status < 300 or status >= 500)


def is_workflow_not_found(error: NovuError | TriggerResult) -> bool:
    """True when Novu refused a trigger because it does not know the workflow (not synced)."""
    if isinstance(error, TriggerResult):
        return not error.processed and WORKFLOW_NOT_FOUND in error.error_text()
    return error.status_code == 422 and WORKFLOW_NOT_FOUND in error.message


def is_replay(response: httpx.Response) -> bool:
    """True when Novu answered from its Idempotency-Key cache."""
    value: str = response.headers.get("Idempotency-Replay", "")
    return value.strip().lower() == "true"


def _shorten(text: str) -> str:
    return text if len(text) <= _MAX_MESSAGE_CHARS else text[: _MAX_MESSAGE_CHARS - 1] + "…"
