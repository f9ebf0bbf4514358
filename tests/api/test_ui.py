"""The delivery log page over HTTP (api/ui/): login and its failures, the session cookie's
flags, CSRF, scoping to the session's enterprise, escaping of hostile tenant data, and the
cancel form. The same pages in a real browser: tests/integration/test_ui_browser.py."""

from __future__ import annotations

import datetime as dt
import html
import re
import secrets
import uuid
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.authguard import AuthFailureGuard, get_auth_failure_guard
from api.ratelimit import RateLimiter
from api.ui.session import LOGIN_COOKIE, SESSION_COOKIE
from tests.conftest import Stack, Tenant, make_tenant, signup_payload
from tests.rows import insert_notification


def _csrf(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found, page
    return found.group(1)


def _login(client: TestClient, key: str, **fields: str) -> Any:
    form = client.get("/ui/login")
    assert form.status_code == 200
    return client.post(
        "/ui/login",
        data={"csrf": _csrf(form.text), "api_key": key, **fields},
        follow_redirects=False,
    )


@pytest.fixture()
def browser(app: Any) -> Any:
    """A TestClient of its own (its own cookie jar), as one browser."""
    with TestClient(app, raise_server_exceptions=False) as http:
        yield http


def _logged_in(client: TestClient, tenant: Tenant) -> None:
    response = _login(client, tenant.api_key)
    assert response.status_code == 303, response.text
    assert response.headers["location"] == "/ui/notifications"


def _scheduled(client: TestClient, tenant: Tenant, **payload: Any) -> int:
    later = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat()
    response = client.post(
        "/api/trigger",
        json={
            "workflowId": "user-signup",
            "payload": {**signup_payload(), **payload},
            "scheduledFor": later,
        },
        headers=tenant.headers,
    )
    assert response.status_code == 202, response.text
    return int(response.json()["notificationId"])


def _status(client: TestClient, tenant: Tenant, nid: int) -> str:
    """The notification's status as the API answers it."""
    row = client.get(f"/api/notifications/{nid}", headers=tenant.headers).json()
    return str(row["notification_status"])


def _press(browser: TestClient, nid: int, action: str, page: Any, flash: str) -> Any:
    """Submit the page's `action` form (cancel, retry): 303 back to the notification with
    `flash`; the page it comes back to."""
    done = browser.post(
        f"/ui/notifications/{nid}/{action}",
        data={"csrf": _csrf(page.text)},
        follow_redirects=False,
    )
    location = f"/ui/notifications/{nid}?flash={flash}"
    assert (done.status_code, done.headers["location"]) == (303, location)
    return browser.get(location)


def test_pages_without_a_session_go_to_the_login_form(browser: TestClient) -> None:
    for path in ("/ui/notifications", "/ui/notifications/1"):
        response = browser.get(path, follow_redirects=False)
        assert (response.status_code, response.headers["location"]) == (303, "/ui/login")
    forged = f"{'a' * 40}.{'b' * 43}"
    browser.cookies.set(SESSION_COOKIE, forged, path="/ui")
    response = browser.get("/ui/notifications", follow_redirects=False)
    assert (response.status_code, response.headers["location"]) == (303, "/ui/login")


def test_a_wrong_key_is_refused_on_the_form(browser: TestClient) -> None:
    response = _login(browser, "xnk_" + secrets.token_urlsafe(32))
    assert response.status_code == 401
    assert "That API key is not valid." in response.text
    assert SESSION_COOKIE not in response.cookies


def test_login_failures_count_against_the_failed_authentication_limit(
    app: Any, browser: TestClient, stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    prefix = f"xnovu:test-authfail:{uuid.uuid4().hex}:"
    limiter = RateLimiter(stack.redis_url, per_second=0.1, burst=3, key_prefix=prefix)
    guard = AuthFailureGuard(limiter, failed_key_ttl=5.0)
    monkeypatch.setitem(app.dependency_overrides, get_auth_failure_guard, lambda: guard)
    try:
        statuses = [
            _login(browser, "xnk_" + secrets.token_urlsafe(32)).status_code for _ in range(5)
        ]
        refused = _login(browser, "xnk_" + secrets.token_urlsafe(32))
    finally:
        guard.close()
    assert statuses == [401] * 3 + [429] * 2
    assert refused.status_code == 429
    assert int(refused.headers["Retry-After"]) >= 1
    assert "Too many failed logins" in refused.text


def test_a_login_form_without_its_token_is_refused(browser: TestClient, tenant: Tenant) -> None:
    browser.get("/ui/login")
    response = browser.post(
        "/ui/login", data={"csrf": "forged", "api_key": tenant.api_key}, follow_redirects=False
    )
    assert response.status_code == 403
    assert SESSION_COOKIE not in response.cookies


def test_the_session_cookie_is_httponly_strict_and_holds_no_key(
    browser: TestClient, tenant: Tenant
) -> None:
    response = _login(browser, tenant.api_key)
    assert response.status_code == 303
    header = next(
        value
        for value in response.headers.get_list("set-cookie")
        if value.startswith(f"{SESSION_COOKIE}=")
    )
    flags = {part.strip().lower() for part in header.split(";")[1:]}
    assert {"httponly", "samesite=strict", "path=/ui"} <= flags
    assert "secure" not in flags  # plain http: a Secure cookie would never come back
    value = response.cookies[SESSION_COOKIE]
    assert tenant.api_key not in value
    assert tenant.api_key.split("_", 1)[1][:20] not in value
    # The login form's own cookie is gone once logged in.
    assert any(v.startswith(f"{LOGIN_COOKIE}=") for v in response.headers.get_list("set-cookie"))


def test_over_https_the_cookie_is_secure(app: Any, tenant: Tenant) -> None:
    with TestClient(app, base_url="https://testserver", raise_server_exceptions=False) as https:
        response = _login(https, tenant.api_key)
    assert response.status_code == 303
    header = next(
        v for v in response.headers.get_list("set-cookie") if v.startswith(f"{SESSION_COOKIE}=")
    )
    assert "secure" in {part.strip().lower() for part in header.split(";")}


def test_the_list_shows_the_sessions_enterprise_only(
    client: TestClient, browser: TestClient, tenant: Tenant
) -> None:
    mine = _scheduled(client, tenant)
    other = make_tenant()
    theirs = _scheduled(client, other)
    _logged_in(browser, tenant)
    page = browser.get("/ui/notifications")
    assert page.status_code == 200
    assert f'href="/ui/notifications/{mine}"' in page.text
    assert f'href="/ui/notifications/{theirs}"' not in page.text
    assert page.headers["content-security-policy"].startswith("default-src 'none'")
    one = browser.get(f"/ui/notifications/{mine}")
    assert one.status_code == 200
    assert 'id="status">PENDING<' in one.text
    assert '<td class="kind">accepted</td>' in one.text  # the timeline's first event
    missing = browser.get(f"/ui/notifications/{theirs}")
    assert missing.status_code == 404
    assert "No such notification in this enterprise." in missing.text


def _listed(page: Any) -> set[int]:
    return {int(i) for i in re.findall(r'<tr data-id="(\d+)">', page.text)}


def test_filters_and_next_page_link(
    client: TestClient, browser: TestClient, tenant: Tenant
) -> None:
    later = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat()
    event = {"workflowId": "user-signup", "scheduledFor": later}
    bulk = client.post(
        "/api/trigger/bulk",
        json={"events": [{**event, "payload": signup_payload()} for _ in range(51)]},
        headers=tenant.headers,
    )
    assert bulk.status_code == 202, bulk.text
    ids = {r["notificationId"] for r in bulk.json()["results"]}
    _logged_in(browser, tenant)
    assert _listed(browser.get("/ui/notifications", params={"status": "SENT"})) == set()
    first = browser.get(
        "/ui/notifications", params={"status": "PENDING", "workflow": "user-signup"}
    )
    assert len(_listed(first)) == 50
    found = re.search(r'<a class="next" href="([^"]+)"', first.text)
    assert found, first.text
    next_url = html.unescape(found.group(1))
    assert "status=PENDING" in next_url and "workflow=user-signup" in next_url
    second = browser.get(next_url)
    assert _listed(first) | _listed(second) == ids
    assert '<a class="next"' not in second.text
    batch = browser.get("/ui/notifications", params={"batchId": bulk.json()["batchId"]})
    assert _listed(batch) == _listed(first)  # the batch's newest 50
    assert browser.get("/ui/notifications", params={"cursor": "zzz"}).status_code == 400


def test_lookup_filters(client: TestClient, browser: TestClient, tenant: Tenant) -> None:
    ada, bob = signup_payload(), signup_payload()
    first = _scheduled(client, tenant, **ada)
    second = _scheduled(client, tenant, **bob)
    transaction_id = client.get(f"/api/notifications/{second}", headers=tenant.headers).json()[
        "transaction_id"
    ]
    _logged_in(browser, tenant)

    def listed(**params: str) -> set[int]:
        page = browser.get("/ui/notifications", params=params)
        assert page.status_code == 200, page.text
        return _listed(page)

    assert listed(recipient=ada["userId"]) == {first}
    assert listed(transactionId=transaction_id) == {second}
    hour_ago = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")
    assert listed(createdAfter=hour_ago) == {first, second}  # no offset: UTC
    assert listed(createdBefore=hour_ago) == set()
    assert listed(createdAfter=dt.datetime.now(dt.UTC).isoformat(), recipient=bob["userId"]) == (
        set()
    )
    for params, wrong in (
        ({"status": "NOPE"}, "status"),
        ({"recipient": "two words"}, "recipient"),
        ({"batchId": "not-a-uuid"}, "batchId"),
        ({"createdAfter": "yesterday"}, "createdAfter"),
    ):
        page = browser.get("/ui/notifications", params=params)
        assert page.status_code == 400
        assert f"Invalid filter: {wrong}." in page.text
    inverted = browser.get(
        "/ui/notifications",
        params={"createdAfter": "2026-01-02T00:00", "createdBefore": "2026-01-01T00:00"},
    )
    assert inverted.status_code == 422
    assert "createdAfter must not be later than createdBefore" in inverted.text


def test_hostile_tenant_data_is_shown_as_text(
    client: TestClient, browser: TestClient, tenant: Tenant
) -> None:
    script = "<script>alert(document.cookie)</script>"
    row = insert_notification(
        tenant.enterprise_id,
        payload={"userId": "u-x", "name": script, "email": "x@example.com"},
        recipients=[f'"><img src=x onerror=alert(1)>{script}'],
    )
    _logged_in(browser, tenant)
    for path in ("/ui/notifications", f"/ui/notifications/{row.notification_id}"):
        page = browser.get(path)
        assert page.status_code == 200
        assert "<script>alert" not in page.text
        assert "<img src=x" not in page.text
        assert html.escape(script) in page.text or html.escape(script, quote=False) in page.text


def test_cancel_needs_the_sessions_token_and_then_retracts(
    client: TestClient, browser: TestClient, tenant: Tenant
) -> None:
    nid = _scheduled(client, tenant)
    _logged_in(browser, tenant)
    page = browser.get(f"/ui/notifications/{nid}")
    refused = browser.post(
        f"/ui/notifications/{nid}/cancel", data={"csrf": "x" * 43}, follow_redirects=False
    )
    assert refused.status_code == 403
    assert "did not carry this session&#39;s token" in refused.text
    assert _status(client, tenant, nid) == "PENDING"

    shown = _press(browser, nid, "cancel", page, "retracted")
    assert 'id="status">RETRACTED<' in shown.text
    assert "Cancelled: the notification is RETRACTED." in shown.text
    assert _status(client, tenant, nid) == "RETRACTED"


def test_another_sessions_token_and_another_enterprises_row_are_refused(
    client: TestClient, browser: TestClient, app: Any, tenant: Tenant
) -> None:
    nid = _scheduled(client, tenant)
    other = make_tenant()
    with TestClient(app, raise_server_exceptions=False) as other_browser:
        _logged_in(other_browser, other)
        their_token = _csrf(other_browser.get("/ui/notifications").text)
        # Their own token, on our row: 404, and nothing moves.
        theirs = other_browser.post(
            f"/ui/notifications/{nid}/cancel", data={"csrf": their_token}, follow_redirects=False
        )
        assert theirs.status_code == 404
    _logged_in(browser, tenant)
    # Their token in our session: refused.
    forged = browser.post(
        f"/ui/notifications/{nid}/cancel", data={"csrf": their_token}, follow_redirects=False
    )
    assert forged.status_code == 403
    assert _status(client, tenant, nid) == "PENDING"


def test_retry_of_a_pending_row_says_it_is_not_possible(
    client: TestClient, browser: TestClient, tenant: Tenant
) -> None:
    nid = _scheduled(client, tenant)
    _logged_in(browser, tenant)
    token = _csrf(browser.get(f"/ui/notifications/{nid}").text)
    done = browser.post(f"/ui/notifications/{nid}/retry", data={"csrf": token})
    assert done.status_code == 200
    assert "Not possible in the notification&#39;s current status." in done.text


def test_a_revoked_key_ends_its_sessions_and_logout_ends_the_cookie(
    browser: TestClient, tenant: Tenant
) -> None:
    from api.deps import principal_cache
    from shared.apikeys import revoke_api_key
    from shared.db.session import transaction

    _logged_in(browser, tenant)
    page = browser.get("/ui/notifications")
    assert page.status_code == 200
    logout = browser.post("/ui/logout", data={"csrf": _csrf(page.text)}, follow_redirects=False)
    assert (logout.status_code, logout.headers["location"]) == (303, "/ui/login")
    assert browser.get("/ui/notifications", follow_redirects=False).status_code == 303

    _logged_in(browser, tenant)
    with transaction() as session:
        revoke_api_key(session, key_id=tenant.key_id)
    principal_cache().clear()  # as API_KEY_CACHE_SECONDS passing would
    response = browser.get("/ui/notifications", follow_redirects=False)
    assert (response.status_code, response.headers["location"]) == (303, "/ui/login")


def test_a_service_key_logs_in_for_the_enterprise_it_names(
    client: TestClient, browser: TestClient
) -> None:
    service = make_tenant(service=True)
    tenant = make_tenant()
    nid = _scheduled(client, tenant)
    refused = _login(browser, service.api_key)
    assert refused.status_code == 400
    assert "service key must name the enterprise" in refused.text
    response = _login(browser, service.api_key, enterprise_id=str(tenant.enterprise_id))
    assert response.status_code == 303
    assert browser.get(f"/ui/notifications/{nid}").status_code == 200


def test_retry_of_a_failed_row_from_the_page(
    client: TestClient, browser: TestClient, tenant: Tenant
) -> None:
    from sqlalchemy import update

    from shared.db.enums import NotificationStatus
    from shared.db.models import Notification
    from shared.db.session import transaction

    nid = _scheduled(client, tenant)
    with transaction() as session:
        session.execute(
            update(Notification)
            .where(Notification.id == nid)
            .values(notification_status=NotificationStatus.FAILED)
        )
    _logged_in(browser, tenant)
    page = browser.get(f"/ui/notifications/{nid}")
    assert 'value="retry"' in page.text and 'value="cancel"' not in page.text
    shown = _press(browser, nid, "retry", page, "retried")
    assert "Retried: the notification is PENDING again" in shown.text
    assert '<td class="kind">retried</td>' in shown.text
    assert _status(client, tenant, nid) == "PENDING"


def test_without_a_secret_the_page_is_off(
    browser: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    from api.ui import auth
    from shared.settings import get_settings

    monkeypatch.setattr(get_settings(), "ui_session_secret", None)
    auth._signer_from_settings.cache_clear()
    try:
        response = browser.get("/ui/login")
    finally:
        monkeypatch.undo()
        auth._signer_from_settings.cache_clear()
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "ui_disabled"


def test_pages_count_against_the_keys_rate_limit(
    app: Any, browser: TestClient, tenant: Tenant, stack: Stack
) -> None:
    from api.ratelimit import RateLimiter, get_rate_limiter

    _logged_in(browser, tenant)
    prefix = f"xnovu:test-ratelimit:{uuid.uuid4().hex}:"
    limiter = RateLimiter(stack.redis_url, per_second=0.1, burst=2, key_prefix=prefix)
    app.dependency_overrides[get_rate_limiter] = lambda: limiter
    try:
        statuses = [browser.get("/ui/notifications").status_code for _ in range(3)]
        # The key's API requests share the same budget.
        api = browser.get("/api/notifications", headers=tenant.headers)
    finally:
        app.dependency_overrides.pop(get_rate_limiter, None)
        limiter.close()
    assert statuses == [200, 200, 429]
    assert api.status_code == 429
