"""The HTTP/1.1 client the emulator's step workers call the bridge with: one keep-alive
connection per worker and bridge origin, an asyncio protocol whose answers are parsed by
httptools (llhttp, the parser uvicorn and Node use).

Why not httpx: on this path (small JSON requests, 50 concurrent callers) httpx's pool answered
10 to 20 times fewer requests a second than a plain connection on the same machine (its pool
scans every connection on each request), and the emulator stands in for Novu on the machine
that runs everything it measures (benchmarks/e2e_steps.py): every millisecond it spends is one
our stack cannot. An h11 client on asyncio streams cost 0.22 ms of CPU per step; this one
costs a fraction of that (benchmarks/emulator_steps.py). A connection owned by one worker also
means no request ever waits for a free one.

Answers must carry a `content-length` or be chunked (uvicorn, Node and every proxy Novu sits
behind do); one delimited by closing the connection is a failed call, which is stricter than
Novu's client.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass
from typing import cast
from urllib.parse import parse_qsl, urlencode, urlsplit

import httptools

# A bridge answer larger than this is refused (Novu's own limit on a step's output is far lower).
MAX_ANSWER_BYTES = 16 * 1024 * 1024


class ConnectionFailed(Exception):
    """The request got no complete answer: refused, reset, closed early or not HTTP."""

    def __init__(self, message: str, *, before_answer: bool = True) -> None:
        super().__init__(message)
        self.before_answer = before_answer


@dataclass(frozen=True, slots=True)
class Origin:
    scheme: str
    host: str
    port: int

    @property
    def host_header(self) -> str:
        default = 443 if self.scheme == "https" else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == default else f"{host}:{self.port}"


def request_target(url: str, params: dict[str, str]) -> tuple[Origin, str]:
    """The origin to connect to and the request target: the URL's path and query, with
    `params` set on it as Novu sets search parameters (replacing any of the same name)."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in params]
    query.extend(params.items())
    target = (parts.path or "/") + ("?" + urlencode(query) if query else "")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return Origin(parts.scheme, parts.hostname or "", port), target


class _Exchange(asyncio.Protocol):
    """A connection's protocol: feeds what arrives to httptools' response parser and resolves
    the waiting request's future with (status, body) when its answer is complete."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.status = 0
        self.chunks: list[bytes] = []
        self.size = 0
        self.failure: ConnectionFailed | None = None
        self.keep_alive = True
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have the same API.
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(
            ConnectionFailed("connection closed before the answer", before_answer=self.status == 0)
        )

    def data_received(self, data: bytes) -> None:
        if self.waiter is None or self.waiter.done():
            self.keep_alive = False  # bytes nobody asked for: the connection is not reusable
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(ConnectionFailed("the server switched protocols", before_answer=False))
        except httptools.HttpParserError as exc:
            self._fail(ConnectionFailed(f"not HTTP/1.1: {exc}", before_answer=self.status == 0))
        if self.failure is not None:
            self._fail(self.failure)

    # httptools' callbacks

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self.keep_alive = self.parser.should_keep_alive()

    def on_body(self, body: bytes) -> None:
        self.size += len(body)
        if self.size > MAX_ANSWER_BYTES:
            self.failure = ConnectionFailed(
                f"answer over {MAX_ANSWER_BYTES} bytes", before_answer=False
            )
        elif self.failure is None:
            self.chunks.append(body)

    def on_message_complete(self) -> None:
        if self.failure is None and self.waiter is not None and not self.waiter.done():
            self.waiter.set_result((self.status, b"".join(self.chunks)))

    # the connection's side

    def send(self, request: bytes) -> asyncio.Future[tuple[int, bytes]]:
        """Write one request; the future of its answer."""
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.status, self.chunks, self.size = 0, [], 0
        if self.closed or self.transport.is_closing():
            self.waiter.set_exception(ConnectionFailed("connection already closed"))
        else:
            self.transport.write(request)
        return self.waiter

    def reusable(self) -> bool:
        return not self.closed and self.keep_alive and self.failure is None

    def _fail(self, exc: ConnectionFailed) -> None:
        self.keep_alive = False
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc)


class Connection:
    """One keep-alive connection to an origin, used for one request at a time."""

    def __init__(self, origin: Origin) -> None:
        self.origin = origin
        self._exchange: _Exchange | None = None

    async def request(
        self, method: str, target: str, headers: list[tuple[str, str]], body: bytes | None
    ) -> tuple[int, bytes]:
        """Send one request and read its whole answer: (status, body)."""
        head = [f"{method} {target} HTTP/1.1", f"host: {self.origin.host_header}"]
        head.extend(f"{name}: {value}" for name, value in headers)
        if body is not None:
            head.append(f"content-length: {len(body)}")
        request = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + (body or b"")
        exchange = self._exchange
        reused = exchange is not None and exchange.reusable()
        if exchange is None or not reused:
            exchange = await self._open()
        try:
            return await self._answer(exchange, request)
        except ConnectionFailed as exc:
            if not (reused and exc.before_answer):
                raise
        # The server closed the idle connection as we reused it: once more on a new one.
        return await self._answer(await self._open(), request)

    async def close(self) -> None:
        """Close the connection (the next request opens a new one)."""
        exchange, self._exchange = self._exchange, None
        if exchange is not None and exchange.transport is not None:
            exchange.transport.close()

    async def _open(self) -> _Exchange:
        await self.close()
        context = ssl.create_default_context() if self.origin.scheme == "https" else None
        loop = asyncio.get_running_loop()
        try:
            _, exchange = await loop.create_connection(
                _Exchange, self.origin.host, self.origin.port, ssl=context
            )
        except (OSError, ssl.SSLError) as exc:
            raise ConnectionFailed(f"connect to {self.origin.host_header}: {exc!r}") from exc
        self._exchange = exchange
        return exchange

    async def _answer(self, exchange: _Exchange, request: bytes) -> tuple[int, bytes]:
        try:
            answer = await exchange.send(request)
        except BaseException:
            await self.close()  # cancelled (a timeout) or failed: its answer may still come
            raise
        if not exchange.reusable():
            await self.close()  # `connection: close`
        return answer
