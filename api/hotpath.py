"""A direct way in for POST /api/trigger, the request the API serves most.

Two layers, each measured (docs/performance.md) and each checked against what it replaces:

- TriggerRoute serves the route without FastAPI's generic request handler (below).
- TriggerHotPath reaches that route ahead of the app's whole stack.

Every request passes FastAPI's and Starlette's entry points, Starlette's ServerErrorMiddleware,
FastAPI's exception and body-limit middleware, its router (which matches the path against the
routes, twice in FastAPI 0.165), its per-request exit stacks and the route's request wrapper
before the endpoint runs. For the trigger, the router and what follows measured as about a
tenth of its CPU, and the layers before our middleware as another tenth (docs/performance.md).
XNovuAPI.__call__ (api/app.py) hands POST /api/trigger to TriggerHotPath, which gives it what
those layers would have done for it: the request id, the same metrics and body-size limit (the
same middleware classes), `scope["app"]` and `scope["route"]`, the app's exception handlers,
and for a bug the JSON 500 that ServerErrorMiddleware would have sent, the error raised on to
the server. Any other request goes the usual way; so do triggers when FastAPI's own
OpenTelemetry instrumentation is on (FASTAPI_TELEMETRY), so that they get its spans.

tests/api/test_trigger_route.py sends the same requests here and to the same endpoint served
by FastAPI's own route and stack, and expects the same answers.

The rest of a trigger's measured fast path lives with what it speeds up, each explained there
and in docs/performance.md: the key cache (shared/apikeys.py, PrincipalCache), rate-limit leases
(api/ratelimit.py), group commit (shared/notifications/recorder.py) and one LPUSH per message
(shared/queue.py, RedisTaskWriter).
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from fastapi import FastAPI, HTTPException
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.types import Receive, Scope, Send

from api.deps import get_principal
from api.limits import BodySizeLimit
from api.metrics import MetricsMiddleware
from api.ratelimit import get_rate_limiter
from api.request_ids import RequestIds
from shared.notifications.schemas import TriggerRequest

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
            if handler is not None:
                response = await handler(request, exc)
            else:
                # A bug: what Starlette's ServerErrorMiddleware does with it, as for any route:
                # the app's handler for Exception answers (a JSON 500), and the error goes on to
                # the server, which logs it.
                answer = await self._server_error(request, exc)
                await answer(scope, receive, send)
                raise
        await response(scope, receive, send)

    def _handler_for(self, exc: Exception) -> Handler | None:
        # As Starlette's ExceptionMiddleware: the nearest class in the error's MRO; the
        # handler for Exception itself belongs to ServerErrorMiddleware (_server_error).
        handlers: dict[Any, Any] = self.app.exception_handlers
        for cls in type(exc).__mro__:
            if cls is Exception:
                return None
            if cls in handlers:
                handler: Handler = handlers[cls]
                return handler
        return None

    async def _server_error(self, request: Request, exc: Exception) -> Response:
        handlers: dict[Any, Any] = self.app.exception_handlers
        handler: Handler | None = handlers.get(500) or handlers.get(Exception)
        if handler is None:
            return PlainTextResponse("Internal Server Error", status_code=500)
        return await handler(request, exc)


class TriggerHotPath:
    """POST /api/trigger, ahead of the app's whole stack (XNovuAPI.__call__ asks `serves`):
    the request id, the metrics and the body-size limit every request gets (the same
    middleware classes), then the route's own handler, errors answered as the app's stack
    would (_DirectRoute)."""

    def __init__(self, fastapi_app: FastAPI, route: APIRoute, *, max_body_bytes: int) -> None:
        self.path = route.path
        self.app = RequestIds(
            MetricsMiddleware(BodySizeLimit(_DirectRoute(fastapi_app, route), max_body_bytes))
        )

    def serves(self, scope: Scope) -> bool:
        return (
            scope["type"] == "http"
            and scope["path"] == self.path
            and scope["method"] == "POST"
            and not scope.get("root_path")
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


class TriggerRoute(APIRoute):
    """Serves POST /api/trigger without FastAPI's generic request handler.

    The route is declared and documented as any other (`trigger`'s signature: the body model,
    the principal, the Idempotency-Key header). FastAPI's generic handler resolves that
    signature through its dependency machinery on every request, which measured as about a
    fifth of a trigger's CPU (docs/performance.md). This handler takes the same steps in the
    same order, directly: read the body and parse it as JSON when its content type is JSON
    (400 when malformed), authenticate (401, 429, with the app's dependency overrides
    honoured), validate the body (422 in FastAPI's shape), then call the endpoint.
    tests/api/test_trigger_route.py checks that both handlers answer alike."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        endpoint = self.endpoint

        async def handle(request: Request) -> Response:
            body = await _json_body(request)
            limiter = await _dependency(request, get_rate_limiter)
            principal = await get_principal(request, limiter)
            response: Response = await endpoint(_validated(body), principal, request)
            return response

        return handle


_NO_BODY = object()


async def _json_body(request: Request) -> Any:
    """The body as FastAPI reads one for a model: JSON when the content type says so, the raw
    bytes otherwise, _NO_BODY when empty."""
    raw = await request.body()
    if not raw:
        return _NO_BODY
    content_type = request.headers.get("content-type")
    if content_type is None or not _is_json(content_type):
        return raw
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise RequestValidationError(
            [
                {
                    "type": "json_invalid",
                    "loc": ("body", exc.pos),
                    "msg": "JSON decode error",
                    "input": {},
                    "ctx": {"error": exc.msg},
                }
            ]
        ) from exc
    except ValueError as exc:  # not UTF-8, or an integer of over 4,300 digits
        raise HTTPException(400, "There was an error parsing the body") from exc
    except RecursionError as exc:  # nested deeper than the parser's stack: refused, not a 500
        raise HTTPException(400, "the request body is nested too deeply") from exc


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    main, _, sub = media.partition("/")
    return main == "application" and (sub == "json" or sub.endswith("+json"))


def _validated(body: Any) -> TriggerRequest:
    """The body as a TriggerRequest, or FastAPI's 422 for a body parameter."""
    if body is _NO_BODY:
        raise RequestValidationError(
            [{"type": "missing", "loc": ("body",), "msg": "Field required", "input": None}]
        )
    try:
        return TriggerRequest.model_validate(body, from_attributes=True)
    except ValidationError as exc:
        raise RequestValidationError(
            [{**error, "loc": ("body", *error["loc"])} for error in exc.errors(include_url=False)]
        ) from None


async def _dependency(request: Request, dependency: Callable[[], Any]) -> Any:
    """Call a parameterless dependency as FastAPI would, through the app's overrides."""
    provider = request.app.dependency_overrides.get(dependency, dependency)
    value = provider()
    return await value if inspect.isawaitable(value) else value


def idempotency_key(request: Request) -> str | None:
    """The Idempotency-Key header, 422 unless 1 to 255 characters (as its OpenAPI schema)."""
    key = request.headers.get("idempotency-key")
    if key is None or 1 <= len(key) <= 255:
        return key
    problem = "string_too_short" if not key else "string_too_long"
    raise RequestValidationError(
        [
            {
                "type": problem,
                "loc": ("header", "Idempotency-Key"),
                "msg": "Idempotency-Key must be 1 to 255 characters",
                "input": key,
            }
        ]
    )
