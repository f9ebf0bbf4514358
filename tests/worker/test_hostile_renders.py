"""Hostile templates against the real worker and the preview (issue 12): a render that builds
too much fails alone with its reason, and the process stays near its usual footprint."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator

import psutil
import pytest

from tests.conftest import wait_for_status
from tests.factories import create_template, create_workflow

pytestmark = pytest.mark.integration

# Each of a hundred thousand strings centred in a megabyte: it took a worker child from 129 MB
# to 3.5 GB within its 2 s timeout, and one preview took the API from 148 MB to 856 MB.
MEMORY_BOMB = "{{ range(100000)|map('string')|map('center', 999999)|list|length }}"
MB = 1024 * 1024


class PeakRss:
    """The largest resident set any of the processes `pids()` names had while sampled."""

    def __init__(self, pids: Callable[[], list[int]]) -> None:
        self.pids = pids
        self.peak = 0
        self.samples = 0
        self._stop = threading.Event()

    def _sample(self) -> None:
        while not self._stop.is_set():
            for pid in self.pids():
                with contextlib.suppress(psutil.Error):  # a child that just exited
                    self.peak = max(self.peak, psutil.Process(pid).memory_info().rss)
            self.samples += 1
            self._stop.wait(0.01)

    @contextlib.contextmanager
    def watching(self) -> Iterator[PeakRss]:
        thread = threading.Thread(target=self._sample, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            thread.join()


def _worker_children(worker) -> list[int]:
    return [child.pid for child in psutil.Process(worker.proc.pid).children(recursive=True)]


def test_memory_bomb_fails_in_the_worker_without_growing_it(client, tenant, worker):
    sms = create_template(client, tenant, "SMS", body=MEMORY_BOMB)
    create_workflow(client, tenant, "memory-bomb", SMS=sms, publish=True)
    peak = PeakRss(lambda: _worker_children(worker))
    with peak.watching():
        response = client.post(
            "/api/trigger",
            json={"workflowId": "memory-bomb", "payload": {"userId": "u-1"}},
            headers=tenant.headers,
        )
        assert response.status_code == 202, response.text
        row = wait_for_status(client, tenant, response.json()["notificationId"], {"SENT", "FAILED"})
    assert row["notification_status"] == "FAILED"
    assert row["error_details"]["code"] == "render_memory_exceeded"
    assert "TEMPLATE_MAX_MEMORY_BYTES" in row["error_details"]["message"]
    assert row["attempts"] == 1
    assert peak.samples > 0
    print(f"memory bomb: FAILED on attempt 1, worker children's peak RSS {peak.peak / MB:.0f} MB")
    assert peak.peak < 300 * MB, f"a worker child reached {peak.peak / MB:.0f} MB"


def test_memory_bomb_preview_is_a_422_and_the_api_stays_small(client, tenant):
    template = create_template(client, tenant, "SMS", body=MEMORY_BOMB)
    me = psutil.Process()
    before = me.memory_info().rss
    peak = PeakRss(lambda: [me.pid])
    with peak.watching():
        response = client.post(f"/api/templates/{template['id']}/preview", headers=tenant.headers)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "render_memory_exceeded"
    assert "TEMPLATE_MAX_MEMORY_BYTES" in error["message"]
    # The API (this process) grew by at most a few times the 8 MiB budget, not by gigabytes.
    assert peak.peak - before < 100 * MB, f"the API grew by {(peak.peak - before) / MB:.0f} MB"


def test_memory_bomb_executed_by_the_bridge_is_a_step_error(client, tenant):
    from tests.api.test_novu_bridge import assert_bridge_error, bridge_post, event

    sms = create_template(client, tenant, "SMS", body=MEMORY_BOMB)
    create_workflow(client, tenant, "bridge-memory-bomb", SMS=sms, publish=True)
    me = psutil.Process()
    before = me.memory_info().rss
    peak = PeakRss(lambda: [me.pid])
    # No rendered content in the payload (an event that did not come from our worker, or one too
    # large to carry it): the bridge renders the step itself.
    payload = {"userId": "u-1", "_xnovu": {"enterpriseId": str(tenant.enterprise_id)}}
    with peak.watching():
        response = bridge_post(
            client, event(payload), workflowId="bridge-memory-bomb", stepId="sms"
        )
    body = assert_bridge_error(response, 400, "StepExecutionFailedError")
    assert "TEMPLATE_MAX_MEMORY_BYTES" in body["data"]["reason"]
    assert peak.peak - before < 100 * MB, f"the API grew by {(peak.peak - before) / MB:.0f} MB"
