"""`/api/novu`: the Novu Framework bridge (discover, health-check, code, execute, preview).

Handled as @novu/framework's request handler (handler.ts) does: the `action` query parameter
picks the verb (none means `health-check`); every action but `health-check` needs a valid
`novu-signature` first, whatever the method; GET serves `discover`, `health-check` and `code`,
POST serves `execute` and `preview`, OPTIONS answers `{}`, and anything else is an error in the
protocol's `{message, code, data?}` shape, never the API's `{error: {...}}` one.
"""

from __future__ import annotations

import json
import logging
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from api.bridge import errors
from api.bridge.catalog import CatalogCache, load_catalog
from api.bridge.errors import BridgeError
from api.bridge.execute import execute_step
from api.bridge.protocol import GetAction, PostAction, response_headers
from api.bridge.signature import EMPTY_BODY, signature_header, verify_signature
from shared.settings import Settings, get_settings

log = logging.getLogger(__name__)

router = APIRouter(tags=["novu bridge"])

BRIDGE_PATH = "/api/novu"
_catalog: CatalogCache | None = None
_warned_unsigned = False


def catalog_cache() -> CatalogCache:
    """The process's catalog cache (execute's step checks)."""
    global _catalog
    if _catalog is None:
        _catalog = CatalogCache(get_settings().registry_check_interval_seconds)
    return _catalog


def _respond(status: int, body: Any) -> JSONResponse:
    return JSONResponse(body, status_code=status, headers=response_headers())


def _check_signature(request: Request, body: bytes, settings: Settings) -> None:
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
    signed = body if request.method == "POST" and body else EMPTY_BODY
    verify_signature(signature_header(request.headers), signed, settings.effective_novu_secret_key)


def _event(body: bytes) -> dict[str, Any]:
    """The POST body as an object; like the framework, an unreadable body counts as `{}`."""
    try:
        document = json.loads(body) if body.strip() else {}
    except ValueError:
        return {}
    return document if isinstance(document, dict) else {}


async def novu_bridge(
    request: Request,
    action: Annotated[str | None, Query()] = None,
    workflow_id: Annotated[str | None, Query(alias="workflowId")] = None,
    step_id: Annotated[str | None, Query(alias="stepId")] = None,
) -> JSONResponse:
    """Answer one bridge request."""
    settings = get_settings()
    action = action or GetAction.HEALTH_CHECK.value
    method = request.method
    body = await request.body() if method == "POST" else b""
    try:
        if action != GetAction.HEALTH_CHECK:
            _check_signature(request, body, settings)
        if method == "OPTIONS":
            return _respond(200, {})
        if method == "GET":
            return _respond(200, await _get(action, workflow_id or "", step_id))
        if method == "POST":
            if action not in (PostAction.EXECUTE, PostAction.PREVIEW):
                raise errors.invalid_action(action, method)
            answer = await run_in_threadpool(
                execute_step,
                action=PostAction(action),
                workflow_id=workflow_id or "",
                step_id=step_id or "",
                event=_event(body),
                catalog=catalog_cache(),
            )
            return _respond(200, answer)
        raise errors.method_not_allowed(method)
    except BridgeError as exc:
        return _respond(exc.status_code, exc.body())
    except (DBAPIError, PoolTimeoutError) as exc:
        # 503 is one of the statuses Novu retries: the step runs again once the database is back.
        log.warning("bridge %s %s: database unavailable: %s", method, action, exc)
        failure = errors.unavailable()
        response = _respond(failure.status_code, failure.body())
        response.headers["retry-after"] = "2"
        return response
    except Exception:
        log.exception("bridge %s %s failed", method, action)
        failure = errors.unexpected()
        return _respond(failure.status_code, failure.body())


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
