"""The delivery log page in a real headless Chromium (Playwright driving the system's browser),
against a real uvicorn API, worker and Novu emulator: log in with a tenant's key, find a
triggered notification in the list, open it and read its timeline, cancel a scheduled one and
see it RETRACTED; another enterprise's notification is a 404 page.

Playwright's own browser download is not used: the test drives the system Chromium
(XNOVU_CHROMIUM, else `chromium` on PATH). Without one it is skipped, unless
XNOVU_REQUIRE_BROWSER=1 (CI sets it, .ci/run), when it fails instead.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from devtools.devstack import free_port
from tests.conftest import BridgeApi, Tenant, Worker, make_tenant, signup_payload

pytestmark = pytest.mark.integration


def _chromium() -> str | None:
    for candidate in (os.environ.get("XNOVU_CHROMIUM"), "chromium", "chromium-browser"):
        if candidate and (found := shutil.which(candidate)):
            return found
    return None


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    """A headless Chromium (Playwright's Browser), or a skip (a failure when required)."""
    executable = _chromium()
    if executable is None:
        reason = "no Chromium found (set XNOVU_CHROMIUM or install the chromium package)"
        if os.environ.get("XNOVU_REQUIRE_BROWSER") == "1":
            pytest.fail(f"XNOVU_REQUIRE_BROWSER=1 but {reason}")
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture()
def receiver() -> Iterator[str]:
    """A status webhook receiver on 127.0.0.1 answering 204 to everything; yields its URL."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length", "0")))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/hook"
    server.shutdown()
    server.server_close()


def _trigger(api: str, tenant: Tenant, *, later: bool = False) -> int:
    body: dict[str, Any] = {"workflowId": "user-signup", "payload": signup_payload()}
    if later:
        body["scheduledFor"] = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat()
    response = httpx.post(f"{api}/api/trigger", json=body, headers=tenant.headers, timeout=10)
    assert response.status_code == 202, response.text
    return int(response.json()["notificationId"])


def _wait_for(api: str, tenant: Tenant, nid: int, status: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    seen = None
    while time.monotonic() < deadline:
        url = f"{api}/api/notifications/{nid}"
        seen = httpx.get(url, headers=tenant.headers, timeout=10).json()["notification_status"]
        if seen == status:
            return
        time.sleep(0.2)
    raise AssertionError(f"notification {nid} stayed {seen}, never {status}")


def _reload_until(page: Any, locator: Any, count: int, timeout: float = 30) -> None:
    """Reload the page until `locator` finds at least `count` elements (events that arrive
    after the notification is SENT: Novu's webhooks, our status webhook)."""
    deadline = time.monotonic() + timeout
    while locator.count() < count and time.monotonic() < deadline:
        time.sleep(0.5)
        page.reload()


def test_log_in_find_read_the_timeline_and_cancel(
    chromium: Any,
    worker: Worker,
    webhook_worker: Worker,
    bridge_process: BridgeApi,
    receiver: str,
    emulator: httpx.Client,
) -> None:
    api = bridge_process.url  # a real uvicorn API process (the bridge Novu calls)
    tenant, other = make_tenant(), make_tenant()
    endpoint = httpx.post(
        f"{api}/api/webhooks",
        json={"url": receiver, "eventTypes": ["notification.sent"]},
        headers=tenant.headers,
        timeout=10,
    )
    assert endpoint.status_code == 201, endpoint.text
    sent = _trigger(api, tenant)
    scheduled = _trigger(api, tenant, later=True)
    theirs = _trigger(api, other, later=True)
    _wait_for(api, tenant, sent, "SENT")

    context = chromium.new_context()
    page = context.new_page()
    page.goto(f"{api}/ui/notifications")
    assert page.url == f"{api}/ui/login"  # no session yet
    page.fill("input[name=api_key]", tenant.api_key)
    page.click("button[type=submit]")
    page.wait_for_url(f"{api}/ui/notifications")
    cookie = next(c for c in context.cookies() if c["name"] == "xnovu_ui_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"

    rows = page.locator("table.list tbody tr")
    ids = {int(i) for i in rows.evaluate_all("rs => rs.map(r => r.dataset.id).filter(Boolean)")}
    assert {sent, scheduled} <= ids and theirs not in ids
    assert page.locator(f"tr[data-id='{sent}'] .status").inner_text() == "SENT"

    page.click(f"a[href='/ui/notifications/{sent}']")
    page.wait_for_url(f"{api}/ui/notifications/{sent}")
    assert page.locator("#status").inner_text() == "SENT"
    kinds = page.locator("#timeline td.kind").all_inner_texts()
    # Novu's delivery events (delivery.*) and the status webhook's (webhook.*) come in from
    # elsewhere, before or after our `sent`.
    ours = [kind for kind in kinds if not kind.startswith(("delivery.", "webhook."))]
    assert ours == ["accepted", "attempt.started", "sent"], kinds
    assert page.locator("#content article.channel").count() >= 1  # the rendered channels
    # The notification.sent status webhook to the tenant's receiver, once a worker sent it.
    attempts = page.locator("#webhooks tr.webhook-attempt td.type")
    _reload_until(page, attempts, 1)
    assert attempts.all_inner_texts() == ["delivered"]
    # Novu's message.sent for each channel step the emulator executed (email, in-app).
    channels = page.locator("#delivery tr[data-channel]")
    _reload_until(page, channels, 2)
    statuses = page.locator("#delivery tr[data-channel] td.delivery-status").all_inner_texts()
    assert statuses == ["sent", "sent"]

    # A provider failure injected at Novu (the emulator) shows as the channel's message.failed.
    fault = {"providerFailures": [{"channel": "email", "message": "mailbox <b>unavailable</b>"}]}
    assert emulator.post("/_emulator/faults", json=fault).status_code == 200
    failing = _trigger(api, tenant)
    _wait_for(api, tenant, failing, "SENT")
    page.goto(f"{api}/ui/notifications/{failing}")
    _reload_until(page, channels, 2)
    assert page.locator("#delivery tr[data-channel='email'] td.delivery-status").inner_text() == (
        "failed"
    )
    failed = page.locator("#delivery tr.delivery-event", has_text="message.failed")
    assert "mailbox <b>unavailable</b>" in failed.inner_text()  # the provider's text, as text

    page.goto(f"{api}/ui/notifications/{scheduled}")
    assert page.locator("#status").inner_text() == "PENDING"
    page.click("button[value=cancel]")
    page.wait_for_url(f"{api}/ui/notifications/{scheduled}?flash=retracted")
    assert page.locator("#status").inner_text() == "RETRACTED"
    assert "Cancelled" in page.locator(".flash").inner_text()
    assert "retracted" in page.locator("#timeline td.kind").all_inner_texts()
    _wait_for(api, tenant, scheduled, "RETRACTED", timeout=1)

    response = page.goto(f"{api}/ui/notifications/{theirs}")
    assert response is not None and response.status == 404
    assert "No such notification" in page.locator("main").inner_text()
    _wait_for(api, other, theirs, "PENDING", timeout=1)

    page.click("text=Log out")
    page.wait_for_url(f"{api}/ui/login")
    page.goto(f"{api}/ui/notifications")
    assert page.url == f"{api}/ui/login"
    context.close()
