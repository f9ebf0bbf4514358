"""The FastAPI application."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Receive, Scope, Send

from api.docs import install_offline_docs
from api.errors import install_error_handlers
from api.hotpath import TriggerHotPath
from api.limits import BodySizeLimit
from api.metrics import MetricsMiddleware
from api.metrics import router as metrics_router
from api.openapi import install_openapi, operation_id
from api.request_ids import RequestIds
from api.routes import (
    batches,
    health,
    notifications,
    novu_bridge,
    novu_webhooks,
    rules,
    stats,
    templates,
    trigger,
    trigger_bulk,
    webhooks,
    workflows,
)
from api.ui import auth as ui_auth
from api.ui import routes as ui_routes
from shared import logs
from shared.notifications.recorder import trigger_recorder
from shared.process import freeze_startup_objects
from shared.settings import get_settings


@asynccontextmanager
async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
    """On startup, freeze what the process has built (shared/process.py). On shutdown (after
    uvicorn has finished the requests in flight), record what the trigger recorder still holds
    before the process exits."""
    freeze_startup_objects()
    yield
    await run_in_threadpool(trigger_recorder().stop)


class XNovuAPI(FastAPI):
    """FastAPI, with triggers and Novu's calls of the bridge answered ahead of its whole
    middleware stack. POST /api/trigger goes to `trigger_path` before FastAPI and Starlette
    see it (api/hotpath.py).

    Novu calls `execute` once per step of every notification. Starlette wraps every request in
    ServerErrorMiddleware and FastAPI in its own middleware before any of ours; for a bridge
    call, whose handler answers every failure itself (api/routes/novu_bridge.py), those layers
    measured as a fifth of the API's CPU in benchmarks/e2e_steps.py. So the bridge's path goes
    straight to its handler, through the metrics and body-size middleware every request has.
    """

    # POST /api/trigger ahead of everything (api/hotpath.py); None: the usual way.
    trigger_path: TriggerHotPath | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        hot = self.trigger_path
        if hot is not None and hot.serves(scope):
            await hot(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)

    def build_middleware_stack(self) -> ASGIApp:
        return RequestIds(
            novu_bridge.BridgeHotPath(
                super().build_middleware_stack(), max_body_bytes=get_settings().max_body_bytes
            )
        )


def create_app() -> FastAPI:
    """Build the API with its routes, error handlers and body-size limit."""
    settings = get_settings()
    logs.configure(settings.log_level, settings.log_format)
    app = XNovuAPI(
        title="XNovu",
        version="0.1.0",
        description="Notification workflow service: trigger, track and cancel notifications.",
        lifespan=lifespan,
        # Operation ids are the route functions' names (create_template, list_notifications):
        # what a generated client calls its methods (docs/clients.md).
        generate_unique_id_function=operation_id,
        docs_url=None,  # served offline instead (api/docs.py)
        redoc_url=None,
        telemetry=None
        if settings.fastapi_telemetry
        else {"tracing": False, "metrics": False, "logs": False},
    )
    install_error_handlers(app)
    install_offline_docs(app)
    install_openapi(app)
    # The trigger first: the router tries routes in order, and triggers are most requests.
    app.include_router(trigger.router)
    app.include_router(health.router)
    app.include_router(metrics_router)
    app.include_router(trigger_bulk.router)
    app.include_router(notifications.router)
    app.include_router(batches.router)
    app.include_router(templates.router)
    app.include_router(workflows.router)
    app.include_router(rules.router)
    app.include_router(stats.router)
    app.include_router(webhooks.router)
    app.include_router(novu_bridge.router)
    # The delivery log page (/ui/): HTML over the same routes and services.
    app.include_router(ui_auth.router)
    app.include_router(ui_routes.router)
    app.include_router(novu_webhooks.router)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(MetricsMiddleware)
    if not settings.fastapi_telemetry:  # with it, triggers get FastAPI's spans too
        app.trigger_path = TriggerHotPath(
            app, trigger.trigger_route(), max_body_bytes=settings.max_body_bytes
        )
    return app


app = create_app()
