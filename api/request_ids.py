"""Every request gets a request id, on every log line about it (shared/logs.py) and in its
answer's `X-Request-ID`: the caller's own `X-Request-ID` when it is a plain token of at most
64 characters (so a caller can follow its request through our logs), else a new one."""

from __future__ import annotations

import re
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared import logs

HEADER = b"x-request-id"
_TOKEN = re.compile(rb"[A-Za-z0-9._:-]{1,64}")


class RequestIds:
    """Pure ASGI, outside everything else, so that every line of a request carries its id."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next((value for name, value in scope["headers"] if name == HEADER), None)
        raw = given if given is not None and _TOKEN.fullmatch(given) else uuid.uuid4().hex.encode()
        logs.clear()
        logs.bind(request_id=raw.decode())

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), (HEADER, raw)]
            await send(message)

        await self.app(scope, receive, send_with_id)
