"""The FastAPI application."""

from __future__ import annotations

import logging

from fastapi import FastAPI

from api.errors import install_error_handlers
from api.limits import BodySizeLimit
from api.metrics import MetricsMiddleware
from api.metrics import router as metrics_router
from api.routes import (
    health,
    notifications,
    novu_bridge,
    stats,
    templates,
    trigger,
    trigger_bulk,
    workflows,
)
from shared.settings import get_settings


def create_app() -> FastAPI:
    """Build the API with its routes, error handlers and body-size limit."""
    settings = get_settings()
    logging.basicConfig(level=settings.log_level)
    app = FastAPI(
        title="XNovu",
        version="0.1.0",
        description="Notification workflow service: trigger, track and cancel notifications.",
    )
    install_error_handlers(app)
    app.include_router(health.router)
    app.include_router(metrics_router)
    app.include_router(trigger.router)
    app.include_router(trigger_bulk.router)
    app.include_router(notifications.router)
    app.include_router(templates.router)
    app.include_router(workflows.router)
    app.include_router(stats.router)
    app.include_router(novu_bridge.router)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(MetricsMiddleware)
    return app


app = create_app()
