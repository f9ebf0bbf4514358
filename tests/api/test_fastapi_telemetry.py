"""FastAPI's own OpenTelemetry instrumentation is off unless FASTAPI_TELEMETRY=true
(shared/settings.py): off, FastAPI does not look for OpenTelemetry providers per request."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize(("value", "on"), [(None, False), ("false", False), ("true", True)])
def test_fastapi_telemetry_follows_the_setting(monkeypatch, stack, value, on):
    from api.app import create_app
    from shared.settings import get_settings

    if value is None:
        monkeypatch.delenv("FASTAPI_TELEMETRY", raising=False)
    else:
        monkeypatch.setenv("FASTAPI_TELEMETRY", value)
    get_settings.cache_clear()
    try:
        app = create_app()
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
    config = app._telemetry  # FastAPI's TelemetryConfig, as given to FastAPI(telemetry=...)
    assert (config["tracing"], config["metrics"], config["logs"]) == (on, on, on)
    # With FastAPI's spans on, triggers take the app's stack too (api/hotpath.py).
    assert (app.trigger_path is None) is on
