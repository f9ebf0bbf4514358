"""`/api/novu`: the Novu Framework bridge (discover, health-check, code, execute, preview).

Handled as @novu/framework's request handler (handler.ts) does: the `action` query parameter
picks the verb (none means `health-check`); every action but `health-check` needs a valid
`novu-signature` first, whatever the method; GET serves `discover`, `health-check` and `code`,
POST serves `execute` and `preview`, OPTIONS answers `{}`, and anything else is an error in the
protocol's `{message, code, data?}` shape, never the API's `{error: {...}}` one.

Novu calls `execute` once per step of every notification, so the bridge is served by a plain
ASGI handler (BridgeHotPath, ahead of FastAPI's whole middleware stack, api/app.py) rather
than by FastAPI's routing, dependency solving and a thread hop per request, which measured as
nine tenths of an `execute` (docs/performance.md). A step runs on the event loop when everything it
needs is in memory, and on a thread otherwise (api/bridge/execute.py, WouldBlock), as the
trigger's check does (api/hotpath.py). The FastAPI routes below stay for the OpenAPI
description and serve the same `answer` when the hot path is bypassed (a `root_path`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Annotated, Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.types import ASGIApp, Receive, Scope, Send

from api.bridge import errors
from api.bridge.catalog import CatalogCache, load_catalog
from api.bridge.errors import BridgeError
from api.bridge.execute import WouldBlock, execute_step
from api.bridge.protocol import (
    LEGACY_SIGNATURE_HEADER,
    SIGNATURE_HEADER,
    ErrorCode,
    GetAction,
    PostAction,
    response_headers,
)
from api.bridge.signature import EMPTY_BODY, verify_signature
from api.limits import BodySizeLimit, send_json
from api.metrics import MetricsMiddleware
from shared.payloads import json_depth
from shared.settings import Settings, get_settings

log = logging.getLogger(__name__)

router = APIRouter(tags=["novu bridge"])

BRIDGE_PATH = "/api/novu"
# A step whose body is larger than this runs on a thread: checking a big payload against its
# schema would hold up every other request on the loop.
LOOP_BODY_BYTES = 16 * 1024
_catalog: CatalogCache | None = None
_warned_unsigned = False
_RAW_HEADERS = [(k.encode(), v.encode()) for k, v in response_headers().items()]


def catalog_cache() -> CatalogCache:
    """The process's catalog cache (execute's step checks)."""
    global _catalog
    if _catalog is None:
        _catalog = CatalogCache(get_settings().registry_check_interval_seconds)
    return _catalog


async def answer(
    method: str, query: Mapping[str, str], headers: Mapping[str, str], body: bytes
) -> tuple[int, dict[str, Any], dict[str, str]]:
    """One bridge request's status, JSON document and extra headers."""
    settings = get_settings()
    action = query.get("action") or GetAction.HEALTH_CHECK.value
    try:
        if action != GetAction.HEALTH_CHECK:
            _check_signature(method, headers, body, settings)
        if method == "OPTIONS":
            return 200, {}, {}
        if method == "GET":
            return 200, await _get(action, query.get("workflowId") or "", query.get("stepId")), {}
        if method == "POST":
            if action not in (PostAction.EXECUTE, PostAction.PREVIEW):
                raise errors.invalid_action(action, method)
            return 200, await _execute(PostAction(action), query, body), {}
        raise errors.method_not_allowed(method)
    except BridgeError as exc:
        return exc.status_code, exc.body(), {}
    except (DBAPIError, PoolTimeoutError) as exc:
        # 503 is one of the statuses Novu retries: the step runs again once the database is back.
        log.warning("bridge %s %s: database unavailable: %s", method, action, exc)
        failure = errors.unavailable()
        return failure.status_code, failure.body(), {"retry-after": "2"}
    except Exception:
        log.exception("bridge %s %s failed", method, action)
        failure = errors.unexpected()
        return failure.status_code, failure.body(), {}


def _check_signature(
    method: str, headers: Mapping[str, str], body: bytes, settings: Settings
) -> None:
    global _warned_unsigned
    if not settings.novu_bridge_verify_signatures:
        if not _warned_unsigned:
            _warned_unsigned = True
            log.warning(
                "NOVU_BRIDGE_VERIFY_SIGNATURES is off: %s accepts unsigned requests; "
                "never run like this where anyone but you can reach it",
                BRIDGE_PATH,
            )
        return
    # Novu signs a GET as `{}`; a POST over the bytes it sends, which are what we received.
    signed = body if method == "POST" and body else EMPTY_BODY
    header = headers.get(SIGNATURE_HEADER) or headers.get(LEGACY_SIGNATURE_HEADER) or None
    verify_signature(header, signed, settings.effective_novu_secret_key)


async def _execute(action: PostAction, query: Mapping[str, str], body: bytes) -> dict[str, Any]:
    arguments: dict[str, Any] = {
        "action": action,
        "workflow_id": query.get("workflowId") or "",
        "step_id": query.get("stepId") or "",
        "event": _event(body),
        "catalog": catalog_cache(),
    }
    if len(body) <= LOOP_BODY_BYTES:
        try:
            return execute_step(**arguments, on_loop=True)
        except WouldBlock:
            pass
    return await run_in_threadpool(lambda: execute_step(**arguments))


# How much deeper than a trigger's payload (MAX_PAYLOAD_DEPTH) an event may nest: the event
# wraps the payload, and `state` carries earlier steps' outputs.
EVENT_DEPTH_MARGIN = 8


def _event(body: bytes) -> dict[str, Any]:
    """The POST body as an object; like the framework, an unreadable body counts as `{}`. A
    body nested deeper than any trigger could have made it is refused (400)."""
    try:
        document = json.loads(body) if body.strip() else {}
    except ValueError:
        return {}
    except RecursionError:
        document = None  # deeper than the parser's stack
    limit = get_settings().max_payload_depth + EVENT_DEPTH_MARGIN
    # No value nests deeper than it has brackets: most bodies need no walk.
    shallow = body.count(b"{") + body.count(b"[") <= limit
    if document is None or (not shallow and json_depth(document) > limit):
        raise BridgeError(
            400,
            ErrorCode.EXECUTION_EVENT_PAYLOAD_INVALID,
            f"The request body is nested deeper than {limit} levels",
            {"maxDepth": limit},
        )
    return document if isinstance(document, dict) else {}


async def _get(action: str, workflow_id: str, step_id: str | None) -> dict[str, Any]:
    if action == GetAction.HEALTH_CHECK:
        catalog = await run_in_threadpool(catalog_cache().get)
        return catalog.health_check()
    if action == GetAction.DISCOVER:
        catalog = await run_in_threadpool(catalog_cache().get, fresh=True)
        return catalog.discover()
    if action == GetAction.CODE:
        catalog = await run_in_threadpool(load_catalog)
        return catalog.code(workflow_id, step_id)
    raise errors.invalid_action(action, "GET")


def _encode(document: dict[str, Any]) -> bytes:
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()


# -- the hot path: a plain ASGI handler --------------------------------------------------------


class _BridgeRoute:
    """What MetricsMiddleware reads from `scope["route"]`: the route template."""

    path = BRIDGE_PATH


async def _serve(scope: Scope, receive: Receive, send: Send) -> None:
    """Answer one bridge request as an ASGI app."""
    scope["route"] = _BridgeRoute
    method = scope["method"]
    # The last value of a repeated parameter, as FastAPI's Query gave it.
    query = dict(parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True))
    headers: dict[str, str] = {}
    for name, value in scope["headers"]:
        if name in (b"novu-signature", b"x-novu-signature"):
            headers.setdefault(name.decode(), value.decode("latin-1"))
    body = b""
    if method == "POST":
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        body = b"".join(chunks)
    status, document, extra = await answer(method, query, headers, body)
    try:
        encoded = _encode(document)
    except (TypeError, ValueError):  # no ServerErrorMiddleware out here (api/app.py)
        log.exception("bridge %s: the answer is not JSON", method)
        failure = errors.unexpected()
        status, encoded, extra = failure.status_code, _encode(failure.body()), {}
    extra_headers = ((k.encode(), v.encode()) for k, v in extra.items())
    await send_json(send, status, encoded, (*_RAW_HEADERS, *extra_headers))


class BridgeHotPath:
    """Wraps the app's whole middleware stack (api/app.py, XNovuAPI): requests to the bridge's
    path go to `_serve` (through the metrics and body-size middleware, as every request does),
    anything else to the app's usual stack. `answer` turns every failure into the protocol's
    error, so nothing here needs Starlette's ServerErrorMiddleware."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int) -> None:
        self.app = app
        self.direct = MetricsMiddleware(BodySizeLimit(_serve, max_body_bytes))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == BRIDGE_PATH and not scope.get("root_path"):
            await self.direct(scope, receive, send)
        else:
            await self.app(scope, receive, send)


# -- the documented routes ---------------------------------------------------------------------


async def novu_bridge(
    request: Request,
    action: Annotated[str | None, Query()] = None,
    workflow_id: Annotated[str | None, Query(alias="workflowId")] = None,
    step_id: Annotated[str | None, Query(alias="stepId")] = None,
) -> Response:
    """Answer one bridge request."""
    query = {
        name: value
        for name, value in (("action", action), ("workflowId", workflow_id), ("stepId", step_id))
        if value is not None
    }
    body = await request.body() if request.method == "POST" else b""
    status, document, extra = await answer(request.method, query, request.headers, body)
    return Response(
        _encode(document),
        status_code=status,
        headers={**response_headers(), **extra},
        media_type="application/json",
    )


# One route per method, so each has its own OpenAPI operation id.
for _method in ("GET", "POST", "OPTIONS", "PUT", "PATCH", "DELETE"):
    router.add_api_route(
        BRIDGE_PATH,
        novu_bridge,
        methods=[_method],
        operation_id=f"novu_bridge_{_method.lower()}",
        summary="Novu Framework bridge",
        description=(
            "Called by Novu, signed with the Novu secret key (`novu-signature`). GET "
            "`?action=health-check|discover|code`, POST `?action=execute|preview&workflowId=W"
            "&stepId=S`. Errors are `{message, code, data?}` as in @novu/framework."
        ),
    )
