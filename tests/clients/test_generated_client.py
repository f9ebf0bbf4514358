"""The OpenAPI document is a contract other languages can build on: a client generated from it
(openapi-python-client, as a TypeScript caller would run openapi-typescript) is generated
without warnings, imports, and works against the real API, errors included (docs/clients.md)."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import api_process, make_tenant, signup_payload

pytestmark = pytest.mark.integration

PACKAGE = "xnovu_generated"


@pytest.mark.timeout(300)
def test_a_generated_client_works_against_the_api(stack, client, tmp_path):
    spec = tmp_path / "openapi.json"
    spec.write_text(json.dumps(client.get("/openapi.json").json()))
    bin_dir = str(Path(sys.executable).parent)
    generated = subprocess.run(
        [
            f"{bin_dir}/openapi-python-client",
            "generate",
            "--path",
            str(spec),
            "--output-path",
            str(tmp_path / PACKAGE),
            "--meta",
            "none",
        ],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=tmp_path,
        env={**os.environ, "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}"},
    )
    assert generated.returncode == 0, generated.stdout + generated.stderr
    assert "Warning" not in generated.stdout + generated.stderr, generated.stdout
    for operation in ("trigger", "trigger_bulk"):
        assert (tmp_path / PACKAGE / "api" / "trigger" / f"{operation}.py").exists()

    sys.path.insert(0, str(tmp_path))
    try:
        api = importlib.import_module(f"{PACKAGE}.client")
        trigger = importlib.import_module(f"{PACKAGE}.api.trigger.trigger")
        get_notification = importlib.import_module(f"{PACKAGE}.api.notifications.get_notification")
        models = importlib.import_module(f"{PACKAGE}.models")
        tenant = make_tenant()
        with api_process(stack, "generated-client-api", RATE_LIMIT_PER_SECOND="0") as url:
            caller = api.AuthenticatedClient(base_url=url, token=tenant.api_key)
            body = models.TriggerRequest.from_dict(
                {"workflowId": "user-signup", "payload": signup_payload()}
            )
            accepted = trigger.sync_detailed(client=caller, body=body, idempotency_key="gen-1")
            assert accepted.status_code == 202
            assert isinstance(accepted.parsed, models.TriggerResponse)
            read = get_notification.sync(
                client=caller, notification_id=accepted.parsed.notification_id
            )
            assert isinstance(read, models.NotificationRead)
            assert read.transaction_id == accepted.parsed.transaction_id
            missing = get_notification.sync_detailed(client=caller, notification_id=2**62)
            assert missing.status_code == 404 and isinstance(missing.parsed, models.Error)
            assert missing.parsed.error.code == "not_found"
    finally:
        sys.path.remove(str(tmp_path))
        for name in [name for name in sys.modules if name.startswith(PACKAGE)]:
            del sys.modules[name]
