"""Running the emulator: the asyncio server, a blocking `serve`, and a background-thread runner."""

from __future__ import annotations

import asyncio
import logging
import random
import signal
import threading
from collections.abc import Collection, Coroutine, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlsplit

from novu_emulator.bridge import BridgeRunner
from novu_emulator.config import BridgeConfig
from novu_emulator.control import CONTROL_PREFIX, ControlApi
from novu_emulator.http import HttpRequest, Reply, json_response, serve_connection
from novu_emulator.novu_api import NovuApi, not_found
from novu_emulator.ratelimit import DEFAULT_EVENTS_RPS, RateLimits
from novu_emulator.state import DEFAULT_DEDUPE_RACE_WINDOW_MS, EmulatorState
from novu_emulator.webhooks import DEFAULT_RETRY_DELAYS, WebhookSender
from novu_emulator.workflows import registered
from shared.settings import EMULATOR_SECRET_KEY

logger = logging.getLogger(__name__)

# Novu's API parses JSON bodies of up to 20 MB under these paths (Express path prefixes), and
# of up to body-parser's default 100 KB elsewhere; the 512 KB limit per event is checked apart.
EXTENDED_BODY_PATHS = (
    "/v1/events",
    "/v1/notification-templates",
    "/v1/workflows",
    "/v1/layouts",
    "/v1/bridge/sync",
    "/v1/bridge/diff",
)
EXTENDED_BODY_BYTES = 20 * 1024 * 1024
DEFAULT_BODY_BYTES = 100 * 1024


def max_body_bytes(target: str) -> int:
    """The largest request body Novu's API reads for this target (the emulator's own
    endpoints take as much as Novu's largest)."""
    path = urlsplit(target).path
    if not path.startswith("/v1/"):
        return EXTENDED_BODY_BYTES
    extended = any(path == p or path.startswith(p + "/") for p in EXTENDED_BODY_PATHS)
    return EXTENDED_BODY_BYTES if extended else DEFAULT_BODY_BYTES


SHUTDOWN_GRACE_SECONDS = 2.0


class EmulatorServer:
    """The emulator as an asyncio server: `await start()`, then `await close()`, in one loop."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        secret_key: str = EMULATOR_SECRET_KEY,
        *,
        workflows: Collection[str] = (),
        seed: int | None = None,
        bridge_url: str | None = None,
        events_rps: int = DEFAULT_EVENTS_RPS,
        dedupe_race_window_ms: int = DEFAULT_DEDUPE_RACE_WINDOW_MS,
        webhook_url: str | None = None,
        webhook_secret: str | None = None,
        webhook_retry_delays: Sequence[float] = DEFAULT_RETRY_DELAYS,
    ) -> None:
        """`workflows`: workflow ids Novu knows from the start, as if made in its dashboard
        (others must be synced before they can be triggered); `seed` makes faults repeatable;
        `bridge_url`: the Framework bridge to execute accepted triggers on (None: none);
        `events_rps`: the Novu tier's Events rate limit in tokens a second (Free: 60);
        `dedupe_race_window_ms`: how soon after a transactionId's first trigger a second one
        still runs instead of being dropped as a duplicate; `webhook_url` and
        `webhook_secret` (`whsec_...`): where Novu's message webhooks go, signed with what
        (either None: none are sent), and `webhook_retry_delays` the waits between tries."""
        if not secret_key:
            raise ValueError("secret_key must not be empty")
        self.host = host
        self.state = EmulatorState()
        self.state.startup_bridge = self.state.bridge = BridgeConfig(bridge_url=bridge_url)
        self.state.startup_workflows = {name: registered(name) for name in workflows}
        self.state.workflows = dict(self.state.startup_workflows)
        self.state.events_rps = events_rps
        self.state.rate_limits = RateLimits(events_rps)
        self.state.dedupe_race_window_ms = dedupe_race_window_ms
        self._requested_port = port
        self.webhooks = WebhookSender(
            self.state, webhook_url, webhook_secret, retry_delays=webhook_retry_delays
        )
        self.bridge = BridgeRunner(
            self.state,
            secret_key,
            webhooks=self.webhooks,
            rng=random.Random(None if seed is None else seed + 1),
        )
        self._novu = NovuApi(
            self.state,
            secret_key,
            rng=random.Random(seed),
            bridge=self.bridge,
        )
        self._control = ControlApi(self.state)
        self._server: asyncio.Server | None = None
        self._connections: dict[asyncio.Task[None], asyncio.StreamWriter] = {}
        self._busy: set[asyncio.Task[None]] = set()  # Connections inside a request handler.
        self._closing = False

    @property
    def port(self) -> int:
        """The bound port (the real one when 0 was asked for)."""
        if self._server is None or not self._server.sockets:
            raise RuntimeError("the emulator is not listening")
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def url(self) -> str:
        """Base URL for clients; wildcard bind addresses are reached through loopback."""
        host = "127.0.0.1" if self.host in ("", "0.0.0.0", "::") else self.host
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    async def start(self) -> None:
        """Bind and start accepting connections."""
        self._closing = False
        self._server = await asyncio.start_server(
            self._on_connection, self.host, self._requested_port
        )
        logger.info("Novu emulator listening on %s", self.url)

    async def close(self) -> None:
        """Stop accepting, drop idle connections, give requests in progress a moment to finish."""
        if self._server is None:
            return
        self._closing = True
        self._server.close()
        # An idle connection sees end-of-stream and ends; a busy one answers, then ends.
        for task, writer in self._connections.items():
            if task not in self._busy:
                writer.close()
        if self._connections:
            await asyncio.wait(set(self._connections), timeout=SHUTDOWN_GRACE_SECONDS)
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.wait(set(self._connections), timeout=SHUTDOWN_GRACE_SECONDS)
        with suppress(TimeoutError):
            await asyncio.wait_for(self._server.wait_closed(), SHUTDOWN_GRACE_SECONDS)
        await self.bridge.close()
        await self.webhooks.close()
        self._server = None
        logger.info("Novu emulator stopped")

    async def _on_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections[task] = writer
        try:
            await serve_connection(
                reader,
                writer,
                self._handle,
                max_body_bytes=max_body_bytes,
                keep_alive=lambda: not self._closing,
            )
        except asyncio.CancelledError:
            # Only close() cancels connections; ending quietly keeps asyncio from logging it.
            logger.debug("connection cancelled at shutdown")
        finally:
            del self._connections[task]

    async def _handle(self, request: HttpRequest) -> Reply:
        task = asyncio.current_task()
        assert task is not None
        self._busy.add(task)
        try:
            if request.path == CONTROL_PREFIX or request.path.startswith(CONTROL_PREFIX + "/"):
                return self._control.handle(request)
            if request.path.startswith("/v1/"):
                return await self._novu.handle(request)
            return not_found(request)
        except Exception:
            logger.exception("emulator failed on %s %s", request.method, request.target)
            return json_response(500, {"statusCode": 500, "message": "emulator error"})
        finally:
            self._busy.discard(task)


async def _serve_until_signalled(server: EmulatorServer) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals = (signal.SIGINT, signal.SIGTERM)
    for signum in signals:
        loop.add_signal_handler(signum, stop.set)
    try:
        await server.start()
        await stop.wait()
    finally:
        for signum in signals:
            loop.remove_signal_handler(signum)
        await server.close()


def run_loop(main: Coroutine[Any, Any, None]) -> None:
    """Run `main` on uvloop where it is installed (uvicorn[standard] brings it on Linux and
    macOS): the emulator shares the machine with what it measures, so its loop should cost as
    little as uvicorn's does; asyncio's own loop otherwise."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
    else:
        uvloop.run(main)


def serve(
    host: str,
    port: int,
    secret_key: str,
    *,
    bridge_url: str | None = None,
    events_rps: int = DEFAULT_EVENTS_RPS,
    dedupe_race_window_ms: int = DEFAULT_DEDUPE_RACE_WINDOW_MS,
    webhook_url: str | None = None,
    webhook_secret: str | None = None,
) -> None:
    """Run the emulator in the foreground until SIGINT or SIGTERM, then exit cleanly."""
    server = EmulatorServer(
        host,
        port,
        secret_key,
        bridge_url=bridge_url,
        events_rps=events_rps,
        dedupe_race_window_ms=dedupe_race_window_ms,
        webhook_url=webhook_url,
        webhook_secret=webhook_secret,
    )
    run_loop(_serve_until_signalled(server))


@dataclass(slots=True)
class _Startup:
    ready: threading.Event = field(default_factory=threading.Event)
    loop: asyncio.AbstractEventLoop | None = None
    stop: asyncio.Event | None = None
    error: BaseException | None = None


class RunningEmulator:
    """An emulator serving from a background thread; `stop()` (or `with`) shuts it down."""

    def __init__(self, server: EmulatorServer, thread: threading.Thread, startup: _Startup) -> None:
        self.server = server
        self.url = server.url
        self.port = server.port
        self._thread = thread
        self._startup = startup

    def stop(self, timeout: float = 10.0) -> None:
        """Shut the server down and wait for its thread; calling it twice is harmless."""
        loop, stop = self._startup.loop, self._startup.stop
        if loop is not None and stop is not None and self._thread.is_alive():
            with suppress(RuntimeError):  # The loop may have closed in the meantime.
                loop.call_soon_threadsafe(stop.set)
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise RuntimeError(f"the Novu emulator thread did not stop within {timeout} s")

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def start_in_thread(
    host: str = "127.0.0.1",
    port: int = 0,
    secret_key: str = EMULATOR_SECRET_KEY,
    *,
    workflows: Collection[str] = (),
    seed: int | None = None,
    bridge_url: str | None = None,
    events_rps: int = DEFAULT_EVENTS_RPS,
    dedupe_race_window_ms: int = DEFAULT_DEDUPE_RACE_WINDOW_MS,
    webhook_url: str | None = None,
    webhook_secret: str | None = None,
    webhook_retry_delays: Sequence[float] = DEFAULT_RETRY_DELAYS,
) -> RunningEmulator:
    """Start an emulator on its own event loop in a daemon thread; returns once it listens."""
    server = EmulatorServer(
        host,
        port,
        secret_key,
        workflows=workflows,
        seed=seed,
        bridge_url=bridge_url,
        events_rps=events_rps,
        dedupe_race_window_ms=dedupe_race_window_ms,
        webhook_url=webhook_url,
        webhook_secret=webhook_secret,
        webhook_retry_delays=webhook_retry_delays,
    )
    startup = _Startup()

    async def main() -> None:
        startup.loop = asyncio.get_running_loop()
        startup.stop = asyncio.Event()
        try:
            await server.start()
        except BaseException as exc:
            startup.error = exc
            return
        finally:
            startup.ready.set()
        try:
            await startup.stop.wait()
        finally:
            await server.close()

    thread = threading.Thread(target=run_loop, args=(main(),), name="novu-emulator", daemon=True)
    thread.start()
    if not startup.ready.wait(timeout=10.0):
        raise RuntimeError("the Novu emulator did not start within 10 s")
    if startup.error is not None:
        thread.join()
        raise startup.error
    return RunningEmulator(server, thread, startup)
