"""Every request gets a request id, on every log line about it (shared/logs.py) and in its
answer's `X-Request-ID`: the caller's own `X-Request-ID` when it is a plain token of at most
64 characters (so a caller can follow its request through our logs), else a new one."""

from __future__ import annotations

import re

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared import ids, logs

HEADER = b"x-request-id"
# Answered without wrapping `send`: a wrapper on every message of the hottest paths cost the
# trigger about 15 % of its CPU (benchmarks/ab.py). The trigger's route adds the header itself
# (`request_id_header`); Novu's bridge calls do without it.
UNWRAPPED = frozenset({"/api/trigger", "/api/novu"})
_TOKEN = re.compile(rb"[A-Za-z0-9._:-]{1,64}")


def request_id_header() -> dict[str, str]:
    """The header a route answering by itself adds (see UNWRAPPED)."""
    request_id = logs.REQUEST_ID.get()
    return {"X-Request-ID": request_id} if request_id is not None else {}


class RequestIds:
    """Pure ASGI, outside everything else, so that every line of a request carries its id."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next((value for name, value in scope["headers"] if name == HEADER), None)
        raw = given if given is not None and _TOKEN.fullmatch(given) else ids.request_id().encode()
        logs.REQUEST_ID.set(raw.decode())  # in this request's own task context
        if scope["path"] in UNWRAPPED:
            await self.app(scope, receive, send)
            return

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                if not any(name.lower() == HEADER for name, _ in headers):
                    headers.append((HEADER, raw))  # an error answer may carry it already
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_id)
