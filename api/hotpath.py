"""A direct way in for POST /api/trigger, the request the API serves most.

Every request passes FastAPI's exception middleware, its router (which matches the path
against the routes, twice in FastAPI 0.165), its per-request exit stacks and the route's
request wrapper before the endpoint runs. For the trigger that machinery measured as about a
tenth of its CPU (docs/performance.md). TriggerHotPath, the outermost middleware, hands POST
/api/trigger to the route's own handler (TriggerRoute) with what those layers would have done
for it: the same metrics and body-size limit (the same middleware classes), `scope["app"]` and
`scope["route"]`, and the app's exception handlers. Any other request goes the usual way.

tests/api/test_trigger_route.py sends the same requests here and to the same endpoint served
by FastAPI's own route and stack, and expects the same answers.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from api.limits import BodySizeLimit
from api.metrics import MetricsMiddleware

Handler = Callable[[Request, Exception], Awaitable[Response]]


class _DirectRoute:
    """An ASGI app serving one route's handler, errors answered by the app's handlers."""

    def __init__(self, app: FastAPI, route: APIRoute) -> None:
        self.app = app
        self.route = route
        self.handle = route.get_route_handler()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope["app"] = self.app
        scope["route"] = self.route
        request = Request(scope, receive, send)
        try:
            response = await self.handle(request)
        except Exception as exc:
            handler = self._handler_for(exc)
            if handler is None:
                raise  # to ServerErrorMiddleware, as from any route: a JSON 500
            response = await handler(request, exc)
        await response(scope, receive, send)

    def _handler_for(self, exc: Exception) -> Handler | None:
        # As Starlette's ExceptionMiddleware: the nearest class in the error's MRO; the
        # handler for Exception itself belongs to ServerErrorMiddleware.
        handlers: dict[Any, Any] = self.app.exception_handlers
        for cls in type(exc).__mro__:
            if cls is Exception:
                return None
            if cls in handlers:
                handler: Handler = handlers[cls]
                return handler
        return None


class TriggerHotPath:
    """Outermost middleware: POST to the route's path goes to the route directly (through the
    metrics and body-size middleware), anything else to the app's usual stack."""

    def __init__(
        self, app: ASGIApp, *, fastapi_app: FastAPI, route: APIRoute, max_body_bytes: int
    ) -> None:
        self.app = app
        self.path = route.path
        self.direct = MetricsMiddleware(
            BodySizeLimit(_DirectRoute(fastapi_app, route), max_body_bytes)
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["path"] == self.path
            and scope["method"] == "POST"
            and not scope.get("root_path")
        ):
            await self.direct(scope, receive, send)
        else:
            await self.app(scope, receive, send)
