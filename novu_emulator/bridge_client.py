"""The HTTP/1.1 client the emulator's step workers call the bridge with: one keep-alive
connection per worker and bridge origin, on asyncio streams and h11 (as the emulator's server).

Why not httpx: on this path (small JSON requests, 50 concurrent callers) httpx's pool answered
10 to 20 times fewer requests a second than h11 on the same machine (its pool scans every
connection on each request), and the emulator must not be what limits Novu's step rate. A
connection owned by one worker also means no request ever waits for a free connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit

import h11

READ_CHUNK = 65536
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


class Connection:
    """One keep-alive connection to an origin, used for one request at a time."""

    def __init__(self, origin: Origin) -> None:
        self.origin = origin
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._h11 = h11.Connection(h11.CLIENT)

    async def request(
        self, method: str, target: str, headers: list[tuple[str, str]], body: bytes | None
    ) -> tuple[int, bytes]:
        """Send one request and read its whole answer: (status, body)."""
        reused = self._writer is not None and self._reusable()
        if not reused:
            await self._open()
        try:
            return await self._exchange(method, target, headers, body)
        except ConnectionFailed as exc:
            await self.close()
            if not (reused and exc.before_answer):
                raise
        # The server closed the idle connection as we reused it: once more on a new one.
        await self._open()
        try:
            return await self._exchange(method, target, headers, body)
        except ConnectionFailed:
            await self.close()
            raise

    async def close(self) -> None:
        """Close the connection (the next request opens a new one)."""
        writer, self._reader, self._writer = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError, ssl.SSLError):  # already gone: nothing to tidy
                await writer.wait_closed()

    def _reusable(self) -> bool:
        return (
            self._reader is not None
            and not self._reader.at_eof()
            and self._h11.our_state is h11.IDLE
            and self._h11.their_state is h11.IDLE
        )

    async def _open(self) -> None:
        await self.close()
        context = ssl.create_default_context() if self.origin.scheme == "https" else None
        try:
            self._reader, self._writer = await asyncio.open_connection(
                self.origin.host, self.origin.port, ssl=context
            )
        except (OSError, ssl.SSLError) as exc:
            raise ConnectionFailed(f"connect to {self.origin.host_header}: {exc!r}") from exc
        self._h11 = h11.Connection(h11.CLIENT)

    async def _exchange(
        self, method: str, target: str, headers: list[tuple[str, str]], body: bytes | None
    ) -> tuple[int, bytes]:
        assert self._reader is not None and self._writer is not None
        conn, reader, writer = self._h11, self._reader, self._writer
        sent = [("host", self.origin.host_header), *headers]
        if body is not None:
            sent.append(("content-length", str(len(body))))
        status, chunks, size = 0, [], 0
        try:
            events: list[h11.Event] = [h11.Request(method=method, target=target, headers=sent)]
            if body:
                events.append(h11.Data(data=body))
            events.append(h11.EndOfMessage())
            writer.write(b"".join(conn.send(event) or b"" for event in events))
            await writer.drain()
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(await reader.read(READ_CHUNK))
                elif isinstance(event, h11.Response):
                    status = event.status_code
                elif isinstance(event, h11.Data):
                    size += len(event.data)
                    if size > MAX_ANSWER_BYTES:
                        raise ConnectionFailed(
                            f"answer over {MAX_ANSWER_BYTES} bytes", before_answer=False
                        )
                    chunks.append(bytes(event.data))
                elif isinstance(event, h11.EndOfMessage):
                    break
                elif isinstance(event, h11.ConnectionClosed):
                    raise ConnectionFailed(
                        "connection closed before the answer", before_answer=status == 0
                    )
        except (OSError, ssl.SSLError, h11.ProtocolError) as exc:
            raise ConnectionFailed(repr(exc), before_answer=status == 0) from exc
        if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
            conn.start_next_cycle()
        else:
            await self.close()  # `connection: close`, or an answer before our body was read
        return status, b"".join(chunks)
