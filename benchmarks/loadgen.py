"""A small HTTP/1.1 keep-alive load generator on asyncio (uvloop when installed).

wrk cannot be assumed on a user's machine, and an httpx-based client would be the bottleneck,
so this writes pre-built request bytes on raw connections and reads just enough of each answer
(status line, Content-Length or chunked framing) to find its end. Two modes:

- `closed_loop`: N connections, each sending its next request as soon as the previous answer
  arrived (wrk's model): throughput and latency at that concurrency.
- `open_loop`: requests started at a fixed rate whatever the answers do, each on a free
  connection (a new one when all are busy), so slow answers do not slow the offered load.

`canned_server` is the generator's own yardstick: a server that answers every request with
a fixed response without parsing it, to measure how many requests a second the generator can
drive at all on this machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import urlsplit

try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop ships with uvicorn[standard]
    uvloop = None  # type: ignore[assignment]


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's loop when available (as uvicorn uses), else asyncio's."""
    return uvloop.new_event_loop() if uvloop is not None else asyncio.new_event_loop()


def build_request(
    url: str,
    method: str = "POST",
    body: Any = None,
    headers: dict[str, str] | None = None,
) -> bytes:
    """The bytes of one HTTP/1.1 keep-alive request (JSON body when `body` is not None)."""
    parts = urlsplit(url)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    content = b"" if body is None else json.dumps(body, separators=(",", ":")).encode()
    lines = [f"{method} {path} HTTP/1.1", f"Host: {parts.netloc}", "Connection: keep-alive"]
    if body is not None:
        lines += ["Content-Type: application/json", f"Content-Length: {len(content)}"]
    elif method in ("POST", "PUT", "PATCH"):
        lines.append("Content-Length: 0")
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + content


class _Connection(asyncio.Protocol):
    """One keep-alive connection: send a request, resolve a future with (status, body)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have the same API.
        self.transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("connection closed by the server"))

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.waiter is None or self.waiter.done():
            return
        parsed = _parse_response(self.buffer)
        if parsed is not None:
            status, body, used = parsed
            del self.buffer[:used]
            self.waiter.set_result((status, body))

    def request(self, payload: bytes) -> asyncio.Future[tuple[int, bytes]]:
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        if self.closed or self.transport.is_closing():
            self.waiter.set_exception(ConnectionError("connection already closed"))
        else:
            self.transport.write(payload)
        return self.waiter


def _parse_response(buffer: bytearray) -> tuple[int, bytes, int] | None:
    """(status, body, bytes used) of the first complete response in `buffer`, else None."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = bytes(buffer[:end]).decode("latin-1")
    lines = head.split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    length = None
    chunked = False
    for line in lines[1:]:
        name, _, value = line.partition(":")
        lowered = name.strip().lower()
        if lowered == "content-length":
            length = int(value.strip())
        elif lowered == "transfer-encoding" and "chunked" in value.lower():
            chunked = True
    start = end + 4
    if not chunked:
        size = length or 0
        if len(buffer) < start + size:
            return None
        return status, bytes(buffer[start : start + size]), start + size
    body = bytearray()
    position = start
    while True:
        line_end = buffer.find(b"\r\n", position)
        if line_end < 0:
            return None
        size = int(bytes(buffer[position:line_end]).split(b";")[0], 16)
        chunk_start = line_end + 2
        if len(buffer) < chunk_start + size + 2:
            return None
        body += buffer[chunk_start : chunk_start + size]
        position = chunk_start + size + 2
        if size == 0:
            return status, bytes(body), position


async def _connect(host: str, port: int) -> _Connection:
    loop = asyncio.get_running_loop()
    _, protocol = await loop.create_connection(_Connection, host, port)
    return protocol


@dataclass
class LoadResult:
    """Outcome of one load run: answers by status, latencies (seconds) of the 2xx ones."""

    duration: float
    latencies: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    errors: int = 0
    bodies: list[tuple[float, bytes]] = field(default_factory=list)

    @property
    def ok(self) -> int:
        return sum(n for status, n in self.statuses.items() if 200 <= status < 300)

    @property
    def rate(self) -> float:
        return self.ok / self.duration if self.duration else 0.0

    def percentile(self, q: float) -> float:
        return percentile(self.latencies, q)


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100), nearest rank; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


async def closed_loop(
    url: str,
    request: bytes | Callable[[int], bytes],
    *,
    connections: int,
    duration: float,
    warmup: float = 0.0,
) -> LoadResult:
    """`connections` connections sending back to back for `duration` s, after `warmup` s."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    make = request if callable(request) else (lambda _n, r=request: r)
    result = LoadResult(duration=duration)
    started = time.perf_counter()
    measure_from = started + warmup
    stop_at = measure_from + duration
    counter = 0

    async def run() -> None:
        nonlocal counter
        connection = await _connect(host, port)
        while True:
            now = time.perf_counter()
            if now >= stop_at:
                break
            counter += 1
            try:
                status, _ = await connection.request(make(counter))
            except ConnectionError:
                result.errors += 1
                connection = await _connect(host, port)
                continue
            done = time.perf_counter()
            if done >= measure_from and now >= measure_from and done <= stop_at:
                result.statuses[status] = result.statuses.get(status, 0) + 1
                if 200 <= status < 300:
                    result.latencies.append(done - now)
        if connection.transport is not None:
            connection.transport.close()

    await asyncio.gather(*(run() for _ in range(connections)))
    return result


async def open_loop(
    url: str,
    request: Callable[[int], bytes],
    *,
    rate: float,
    duration: float,
    keep_bodies: bool = False,
) -> LoadResult:
    """Start `rate` requests a second for `duration` s on pooled keep-alive connections.

    With `keep_bodies`, each 2xx answer is kept with the wall-clock time its request started.
    """
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    result = LoadResult(duration=duration)
    idle: list[_Connection] = []
    pending: set[asyncio.Task[None]] = set()

    async def one(n: int, wall: float) -> None:
        while idle and idle[-1].closed:  # the server closed it while it sat idle
            idle.pop()
        connection = idle.pop() if idle else await _connect(host, port)
        sent = time.perf_counter()
        try:
            status, body = await connection.request(request(n))
        except ConnectionError:
            result.errors += 1
            return
        result.statuses[status] = result.statuses.get(status, 0) + 1
        if 200 <= status < 300:
            result.latencies.append(time.perf_counter() - sent)
            if keep_bodies:
                result.bodies.append((wall, body))
        if not connection.closed:
            idle.append(connection)

    start = time.perf_counter()
    total = int(rate * duration)
    for n in range(total):
        due = start + n / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.ensure_future(one(n, time.time()))
        pending.add(task)
        task.add_done_callback(pending.discard)
    if pending:
        await asyncio.gather(*pending)
    for connection in idle:
        if connection.transport is not None:
            connection.transport.close()
    return result


_CANNED = (
    b"HTTP/1.1 202 Accepted\r\ncontent-type: application/json\r\ncontent-length: 16\r\n\r\n"
    b'{"status":"ok"}\n'
)


class _CannedProtocol(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.buffer = bytearray()

    def data_received(self, data: bytes) -> None:
        # One answer per request head + body; requests carry Content-Length.
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buffer[:end]).lower()
            length = 0
            marker = head.find(b"content-length:")
            if marker >= 0:
                length = int(head[marker + 15 :].split(b"\r\n", 1)[0])
            if len(self.buffer) < end + 4 + length:
                return
            del self.buffer[: end + 4 + length]
            self.transport.write(_CANNED)


def canned_server(port: int) -> None:
    """Serve the canned answer on 127.0.0.1:port until killed (run in its own process)."""
    loop = new_event_loop()
    asyncio.set_event_loop(loop)
    server = loop.run_until_complete(
        loop.create_server(_CannedProtocol, "127.0.0.1", port, backlog=4096)
    )
    with contextlib.suppress(KeyboardInterrupt):
        loop.run_forever()
    server.close()
