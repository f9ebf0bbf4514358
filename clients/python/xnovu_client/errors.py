"""One exception hierarchy for everything the API can answer, by status; `code` is the API's
stable error code (`not_found`, `validation_error`, `idempotency_key_reused`, ...)."""

from __future__ import annotations

from typing import Any


class XNovuError(Exception):
    """Base of every error this client raises."""


class TransportError(XNovuError):
    """No answer: the connection failed or timed out (after the retries the policy allows)."""


class APIError(XNovuError):
    """The API answered an error: its HTTP status and `{"error": {code, message, details}}`."""

    status_code: int = 0

    def __init__(
        self,
        status_code: int,
        code: str,
        message: str,
        details: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(f"{status_code} {code}: {message}")
        self.status_code = status_code
        self.code = code
        self.message = message
        self.details = details
        self.headers = headers or {}


class BadRequestError(APIError):
    """400: malformed JSON, or a request the API cannot read."""


class AuthenticationError(APIError):
    """401: no API key, or not a live one."""


class PermissionDeniedError(APIError):
    """403: the key cannot act for that enterprise."""


class NotFoundError(APIError):
    """404: no such thing in the caller's enterprise."""


class ConflictError(APIError):
    """409: not in a state that allows it (e.g. cancelling a delivered notification)."""


class PayloadTooLargeError(APIError):
    """413: the body, or the Novu event it would make, is over its limit."""


class ValidationError(APIError):
    """422: the request is invalid; `details` names each field when there are several."""


class RateLimitedError(APIError):
    """429: over the key's rate, or too many failed authentications; see `retry_after`."""

    @property
    def retry_after(self) -> float | None:
        """Seconds the API asked to wait, if it said."""
        return parse_retry_after(self.headers.get("retry-after"))


class ServiceUnavailableError(APIError):
    """503: a dependency (the database) is unavailable; nothing was changed."""


class ServerError(APIError):
    """Any other 5xx."""


_BY_STATUS: dict[int, type[APIError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    413: PayloadTooLargeError,
    422: ValidationError,
    429: RateLimitedError,
    503: ServiceUnavailableError,
}


def error_for(status_code: int, body: Any, headers: dict[str, str]) -> APIError:
    """The exception for an error answer (a body not in the API's envelope still gives one)."""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        error = {"code": "http_error", "message": f"HTTP {status_code}"}
    kind = _BY_STATUS.get(status_code, ServerError if status_code >= 500 else APIError)
    return kind(
        status_code,
        str(error.get("code", "http_error")),
        str(error.get("message", "")),
        error.get("details"),
        headers,
    )


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After in seconds (the API sends whole seconds; an HTTP date is read too)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    import datetime as dt
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - dt.datetime.now(dt.UTC)).total_seconds())
