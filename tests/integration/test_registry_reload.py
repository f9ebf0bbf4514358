"""A reload made through one API process reaches another API process within 5 s."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.conftest import api_process
from tests.factories import create_template, create_workflow

pytestmark = pytest.mark.integration


@pytest.fixture()
def second_api(stack):
    with api_process(stack, "second-api", REGISTRY_CHECK_INTERVAL_SECONDS="2") as url:
        yield url


def _status(url, tenant, key):
    body = {"workflowId": key, "payload": {"message": "m"}, "scheduledFor": "2999-01-01T00:00:00Z"}
    return httpx.post(f"{url}/api/trigger", json=body, headers=tenant.headers).status_code


def test_publish_and_unpublish_reach_the_other_process_within_5_seconds(client, tenant, second_api):
    email = create_template(client, tenant, "EMAIL")
    workflow = create_workflow(client, tenant, "cross-process", EMAIL=email)
    assert _status(second_api, tenant, "cross-process") == 404  # loaded there, as a draft

    for action, expected in (("publish", 202), ("unpublish", 404)):
        assert (
            client.post(
                f"/api/workflows/{workflow['id']}/{action}", headers=tenant.headers
            ).status_code
            == 200
        )
        assert client.post("/api/workflows/reload", headers=tenant.headers).status_code == 200
        started = time.monotonic()
        while _status(second_api, tenant, "cross-process") != expected:
            assert time.monotonic() - started < 5, (
                f"{action} did not reach the other process in 5 s"
            )
            time.sleep(0.2)
