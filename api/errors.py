"""One error type for the API and the handlers that turn every failure into JSON.

Domain errors (shared/errors.py) and database errors get their status here, in one table, for
a request's error and for each event of a bulk request alike. Every error body is
`{"error": {"code", "message", "details"?}}`; nothing answers a bare 500.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.request_ids import request_id_header
from shared.errors import (
    DomainError,
    InvalidInput,
    MissingInput,
    NotAllowed,
    NotFound,
    StateConflict,
    TooLarge,
    Unavailable,
)

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An error with its HTTP status, a stable machine code and a human message."""

    def __init__(
        self,
        status_code: int,
        code: str,
        message: str,
        details: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.code = code
        self.message = message
        self.details = details
        self.headers = headers


def error_response(
    status_code: int,
    code: str,
    message: str,
    details: Any = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        body["details"] = details
    # Errors of the paths that answer by themselves carry the request's id too (the
    # middleware adds it to the others; a second copy is not added).
    headers = {**request_id_header(), **(headers or {})}
    return JSONResponse({"error": body}, status_code=status_code, headers=headers)


def not_found(what: str) -> ApiError:
    return ApiError(404, "not_found", f"{what} not found")


_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def _validation_details(exc: RequestValidationError) -> list[dict[str, Any]]:
    details = []
    for err in exc.errors():
        loc = [str(part) for part in err.get("loc", ()) if part != "body"]
        details.append({"field": ".".join(loc) or "body", "message": err.get("msg", "invalid")})
    return details


# The HTTP status of each kind of domain error: the one place the domain meets HTTP.
DOMAIN_STATUS: dict[type[DomainError], int] = {
    MissingInput: 400,
    NotAllowed: 403,
    NotFound: 404,
    StateConflict: 409,
    TooLarge: 413,
    InvalidInput: 422,
    Unavailable: 503,
}

_DATABASE_DOWN = (OperationalError, PoolTimeoutError, psycopg.OperationalError)
_UNSTORABLE = (DataError, psycopg.DataError)
_DATABASE_ERROR = (DBAPIError, psycopg.Error)


def api_error_of(exc: BaseException) -> ApiError | None:
    """The answer to an error the API knows: its own, the domain's, the database's (the
    trigger recorder's psycopg connection included); None for anything else (a bug: 500)."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, DomainError):
        status = next(DOMAIN_STATUS[kind] for kind in type(exc).__mro__ if kind in DOMAIN_STATUS)
        headers = None
        if isinstance(exc, Unavailable):
            headers = {"Retry-After": str(exc.retry_after_seconds)}
        return ApiError(status, exc.code, exc.message, exc.details, headers)
    if isinstance(exc, _DATABASE_DOWN):
        return ApiError(
            503,
            "database_unavailable",
            "the database is unavailable, try again",
            headers={"Retry-After": "2"},
        )
    if isinstance(exc, _UNSTORABLE):
        # SQLSTATE class 22 (or psycopg refusing a value before sending it): the request carried
        # a value PostgreSQL cannot store, e.g. a NUL character in a string or in JSON.
        return ApiError(
            422,
            "invalid_value",
            "the request contains a value that cannot be stored "
            "(for example a NUL character in a string)",
        )
    if isinstance(exc, _DATABASE_ERROR):
        return ApiError(503, "database_error", "the database could not complete the request")
    return None


def install_error_handlers(app: FastAPI) -> None:
    """Register handlers so that every failure is a JSON error with the right status."""

    async def _known(_: Request, exc: Exception) -> JSONResponse:
        error = api_error_of(exc)
        assert error is not None  # registered only for the classes api_error_of knows
        if isinstance(exc, _DATABASE_DOWN):
            log.warning("database unavailable: %s", exc)
        elif isinstance(exc, _UNSTORABLE):
            log.info("value refused by the database: %s", getattr(exc, "orig", exc))
        elif isinstance(exc, _DATABASE_ERROR):
            log.error("database error", exc_info=exc)
        return error_response(
            error.status_code, error.code, error.message, error.details, error.headers
        )

    for known in (ApiError, DomainError, *_DATABASE_DOWN, *_UNSTORABLE, *_DATABASE_ERROR):
        app.add_exception_handler(known, _known)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        if any(err.get("type") == "json_invalid" for err in exc.errors()):
            return error_response(400, "malformed_json", "the request body is not valid JSON")
        return error_response(
            422, "validation_error", "the request is invalid", _validation_details(exc)
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _STATUS_CODES.get(exc.status_code, "error")
        message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
        return error_response(exc.status_code, code, message, headers=exc.headers)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return error_response(500, "internal_error", "an unexpected error occurred")
