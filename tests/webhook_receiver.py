"""A webhook receiver for tests: an HTTP server on 127.0.0.1 that records what it is sent."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from devtools.devstack import free_port


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes

    @property
    def event(self) -> dict[str, Any]:
        return json.loads(self.body)


@dataclass
class Receiver:
    """An HTTP receiver on 127.0.0.1: records every request and answers `answer()`'s status
    after `delay` seconds."""

    url: str = ""
    requests: list[Received] = field(default_factory=list)
    answer: Callable[[], int] = lambda: 200
    delay: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def events(self, type_: str | None = None) -> list[Received]:
        with self.lock:
            found = list(self.requests)
        return [r for r in found if type_ is None or r.event["type"] == type_]


def serve(state: Receiver, port: int = 0) -> Iterator[Receiver]:
    """Run `state`'s receiver (on `port`, or a free one) until the generator is closed."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            with state.lock:
                state.requests.append(
                    Received({k.lower(): v for k, v in self.headers.items()}, body)
                )
            if state.delay:
                time.sleep(state.delay)
            status = state.answer()
            try:
                self.send_response(status)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"ok")
            except (BrokenPipeError, ConnectionResetError):
                pass  # the sender gave up waiting (its timeout)

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port or free_port()), Handler)
    server.daemon_threads = True
    state.url = f"http://localhost:{server.server_address[1]}/hooks"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
