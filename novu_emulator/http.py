"""A small HTTP/1.1 server loop on asyncio streams and h11, with keep-alive.

Written by hand rather than on an ASGI server because the emulator must be
able to close a connection after doing the work of a request but without
sending any answer, which ASGI cannot express.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass, field
from email.utils import formatdate
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlsplit

import h11

logger = logging.getLogger(__name__)

READ_CHUNK_BYTES = 65_536
MAX_HEADER_BYTES = 64 * 1024
# Novu's API keeps idle connections for 61 s; clients (httpx: 5 s) close theirs sooner.
KEEP_ALIVE_TIMEOUT_SECONDS = 61.0
# A client that stalls in the middle of sending a request is given up on after this.
REQUEST_READ_TIMEOUT_SECONDS = 30.0
# Nest's names for some statuses differ from Python's phrases.
_REASONS = {413: "Payload Too Large"}


def reason_phrase(status: int) -> str:
    """The standard reason phrase for a status, as Novu (NestJS) spells it."""
    if status in _REASONS:
        return _REASONS[status]
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """One complete request: header names are lower-case, the body fully read."""

    method: str
    target: str
    headers: dict[str, str]
    body: bytes

    @property
    def path(self) -> str:
        """The target without its query string."""
        return urlsplit(self.target).path

    @property
    def query(self) -> dict[str, list[str]]:
        """The query string's parameters."""
        return parse_qs(urlsplit(self.target).query)


@dataclass(frozen=True, slots=True)
class HttpResponse:
    """An answer to send; `close` asks for the connection to be closed after it."""

    status: int
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()
    close: bool = False

    def with_headers(self, *extra: tuple[str, str]) -> HttpResponse:
        """The same answer with more headers."""
        return HttpResponse(self.status, self.body, self.headers + extra, self.close)


@dataclass(frozen=True, slots=True)
class Disconnect:
    """Close the connection without answering the request."""

    reason: str = field(default="")


# What a handler answers: a response, or a dropped connection (an injected fault).
Reply = HttpResponse | Disconnect
Handler = Callable[[HttpRequest], Awaitable[Reply]]


def json_response(
    status: int, payload: Any, *headers: tuple[str, str], close: bool = False
) -> HttpResponse:
    """A JSON answer, compact like Express's `res.json`."""
    body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
    return HttpResponse(
        status, body, (("Content-Type", "application/json; charset=utf-8"), *headers), close
    )


class _EarlyAnswer(Exception):
    """Raised while reading a request that must be answered before it is complete."""

    def __init__(self, response: HttpResponse) -> None:
        super().__init__(response.status)
        self.response = response


async def serve_connection(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    handler: Handler,
    *,
    max_body_bytes: Callable[[str], int],
    keep_alive: Callable[[], bool],
) -> None:
    """Answer requests on one connection until either side closes it or `keep_alive()` is false."""
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEADER_BYTES)
    try:
        while True:
            try:
                request = await _read_request(conn, reader, writer, max_body_bytes)
            except _EarlyAnswer as early:
                await _send(conn, writer, early.response, head_only=False)
                return
            if request is None:
                return
            outcome = await handler(request)
            if isinstance(outcome, Disconnect):
                logger.debug("closing without an answer: %s", outcome.reason)
                return
            if not keep_alive():
                outcome = HttpResponse(outcome.status, outcome.body, outcome.headers, close=True)
            await _send(conn, writer, outcome, head_only=request.method == "HEAD")
            if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                return
            conn.start_next_cycle()
    except (ConnectionError, h11.LocalProtocolError, TimeoutError) as exc:
        logger.debug("connection ended: %r", exc)
    finally:
        await _close(writer)


async def _read_request(
    conn: h11.Connection,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    max_body_bytes: Callable[[str], int],
) -> HttpRequest | None:
    """The next complete request, or None when the client went away or stayed idle."""
    head: h11.Request | None = None
    body = bytearray()
    limit = 0  # set from the request's target once its head is read
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as exc:
            if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                raise _EarlyAnswer(_bad_request(str(exc), exc.error_status_hint)) from exc
            return None
        if event is h11.NEED_DATA:
            if conn.they_are_waiting_for_100_continue:
                writer.write(conn.send(h11.InformationalResponse(status_code=100, headers=[])))
            timeout = KEEP_ALIVE_TIMEOUT_SECONDS if head is None else REQUEST_READ_TIMEOUT_SECONDS
            try:
                data = await asyncio.wait_for(reader.read(READ_CHUNK_BYTES), timeout)
            except TimeoutError:
                return None
            conn.receive_data(data)
        elif isinstance(event, h11.Request):
            head = event
            limit = max_body_bytes(event.target.decode("ascii", "replace"))
            declared = _content_length(event)
            if declared is not None and declared > limit:
                raise _EarlyAnswer(_too_large())
        elif isinstance(event, h11.Data):
            body += event.data
            if head is not None and len(body) > limit:
                raise _EarlyAnswer(_too_large())
        elif isinstance(event, h11.EndOfMessage):
            assert head is not None
            return HttpRequest(
                method=head.method.decode("ascii", "replace").upper(),
                target=head.target.decode("ascii", "replace"),
                headers={
                    name.decode("latin-1").lower(): value.decode("latin-1")
                    for name, value in head.headers
                },
                body=bytes(body),
            )
        else:  # ConnectionClosed, or PAUSED after a protocol switch we never accept.
            return None


def _content_length(head: h11.Request) -> int | None:
    for name, value in head.headers:
        if name.lower() == b"content-length":
            with suppress(ValueError):
                return int(value)
    return None


# Express's final handler in production: body-parser's error reaches no Nest exception filter,
# so the answer is this HTML page, not Novu's JSON error.
_TOO_LARGE_PAGE = (
    b'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>Error</title>\n'
    b"</head>\n<body>\n<pre>Payload Too Large</pre>\n</body>\n</html>\n"
)


def _too_large() -> HttpResponse:
    # body-parser rejects the request before any route (or authentication) runs.
    return HttpResponse(
        413,
        _TOO_LARGE_PAGE,
        (
            ("Content-Security-Policy", "default-src 'none'"),
            ("X-Content-Type-Options", "nosniff"),
            ("Content-Type", "text/html; charset=utf-8"),
            ("Connection", "close"),
        ),
        close=True,
    )


def _bad_request(detail: str, status: int) -> HttpResponse:
    return json_response(
        status,
        {"statusCode": status, "message": detail or "malformed request", "error": "Bad Request"},
        ("Connection", "close"),
        close=True,
    )


async def _send(
    conn: h11.Connection, writer: asyncio.StreamWriter, response: HttpResponse, *, head_only: bool
) -> None:
    headers = [
        ("Date", formatdate(usegmt=True)),
        ("Content-Length", str(len(response.body))),
        *response.headers,
    ]
    if response.close and not any(name.lower() == "connection" for name, _ in headers):
        headers.append(("Connection", "close"))
    writer.write(
        conn.send(
            h11.Response(
                status_code=response.status,
                headers=headers,
                reason=reason_phrase(response.status).encode(),
            )
        )
    )
    if response.body and not head_only:
        writer.write(conn.send(h11.Data(data=response.body)))
    writer.write(conn.send(h11.EndOfMessage()))
    await writer.drain()


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with suppress(ConnectionError, TimeoutError):
        await asyncio.wait_for(writer.wait_closed(), 1.0)
