"""Liveness and readiness."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from shared.db.session import get_engine
from shared.heartbeat import read_beat
from shared.redis_client import redis_from_url
from shared.settings import get_settings

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process is up and serving."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "A dependency is unavailable"}})
def readyz() -> JSONResponse:
    """Ready when PostgreSQL answers. The broker (Redis) and beat's last tick are reported
    but not required: triggers are accepted while either is down, and published or released
    when it returns."""
    checks: dict[str, Any] = {}
    try:
        with get_engine().connect() as conn:
            conn.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"unavailable: {type(exc).__name__}"
    try:
        client = redis_from_url(
            get_settings().require_redis_url(), socket_connect_timeout=1, socket_timeout=1
        )
        client.ping()
        client.close()
        checks["broker"] = "ok"
    except Exception as exc:
        checks["broker"] = f"unavailable: {type(exc).__name__}"
    checks["beat"] = read_beat(get_settings().require_redis_url()).as_json()
    ready = checks["database"] == "ok"
    return JSONResponse(
        {"status": "ok" if ready else "unavailable", "checks": checks},
        status_code=200 if ready else 503,
    )
