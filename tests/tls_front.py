"""A TLS front for a plain TCP server (what stunnel does), for the `rediss://` broker tests:
clients speak TLS to it, with a certificate from trustme's test CA, and it forwards the bytes to
the server. When the server goes away it closes its clients' connections, as a TLS Redis that
stops would."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading
from pathlib import Path

import trustme

from devtools.devstack import free_port
from tests.running import running


class TlsFront:
    def __init__(self, upstream_port: int, directory: Path) -> None:
        self.upstream_port = upstream_port
        self.port = free_port()
        self.ca = trustme.CA()
        self.ca_path = directory / "ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_path))
        self._context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ca.issue_cert("127.0.0.1", "localhost").configure_cert(self._context)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    def url(self, query: str = "") -> str:
        """A `rediss://` URL of the front (database 0), with `query` as its parameters."""
        return f"rediss://127.0.0.1:{self.port}/0" + (f"?{query}" if query else "")

    def start(self) -> None:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._serve, "127.0.0.1", self.port, ssl=self._context),
            self._loop,
        ).result(10)

    def stop(self) -> None:
        async def close(server: asyncio.Server) -> None:
            server.close()
            for writer in list(self._writers):
                writer.close()

        if self._server is not None:
            asyncio.run_coroutine_threadsafe(close(self._server), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _serve(
        self, client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter
    ) -> None:
        try:
            server_in, server_out = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            client_out.close()
            return
        self._writers.update((client_out, server_out))
        pipes = [
            asyncio.create_task(_pipe(client_in, server_out)),
            asyncio.create_task(_pipe(server_in, client_out)),
        ]
        # Either side's end ends both: a server that stops drops its clients' connections.
        await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
        for task in pipes:
            task.cancel()
        for writer in (client_out, server_out):
            self._writers.discard(writer)
            with contextlib.suppress(Exception):
                writer.close()


async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, ssl.SSLError):
        while data := await source.read(65536):
            sink.write(data)
            await sink.drain()


def tls_front(upstream_port: int, directory: Path) -> contextlib.AbstractContextManager[TlsFront]:
    return running(TlsFront(upstream_port, directory))
