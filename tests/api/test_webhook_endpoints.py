"""The status webhook endpoint API: registration, the secret shown once, changes, bounds, the
address guard at registration, and isolation between enterprises."""

from __future__ import annotations

import base64

import pytest
from standardwebhooks import Webhook

from shared.settings import get_settings
from tests.conftest import make_tenant
from tests.factories import api_error

URL = "http://127.0.0.1:9/hooks"


def _create(client, tenant, **body):
    payload = {"url": URL, "eventTypes": ["notification.sent"], **body}
    return client.post("/api/webhooks", json=payload, headers=tenant.headers)


def test_create_shows_the_secret_once(client, tenant):
    response = _create(client, tenant, description="ops", eventTypes=["notification.sent"] * 2)
    assert response.status_code == 201, response.text
    created = response.json()
    secret = created["secret"]
    assert secret.startswith("whsec_") and len(base64.b64decode(secret[6:])) == 32
    Webhook(secret)  # the library accepts it as a signing key
    assert created["eventTypes"] == ["notification.sent"]  # repeats dropped
    assert created["enabled"] is True and created["description"] == "ops"

    read = client.get(f"/api/webhooks/{created['id']}", headers=tenant.headers).json()
    listed = client.get("/api/webhooks", headers=tenant.headers).json()["items"]
    assert "secret" not in read and read["url"] == URL
    assert [item["id"] for item in listed] == [created["id"]]
    assert all("secret" not in item for item in listed)
    assert secret not in str(listed) + str(read)


def test_rotate_gives_a_new_secret(client, tenant):
    created = _create(client, tenant).json()
    rotated = client.post(
        f"/api/webhooks/{created['id']}/rotate-secret", headers=tenant.headers
    ).json()
    assert rotated["secret"].startswith("whsec_") and rotated["secret"] != created["secret"]


def test_patch_disables_and_enables(client, tenant):
    endpoint = _create(client, tenant).json()
    path = f"/api/webhooks/{endpoint['id']}"
    disabled = client.patch(path, json={"enabled": False}, headers=tenant.headers).json()
    assert disabled["enabled"] is False and disabled["disabledReason"]
    changed = client.patch(
        path,
        json={"enabled": True, "eventTypes": ["message.failed", "notification.failed"]},
        headers=tenant.headers,
    ).json()
    assert changed["enabled"] is True and "disabledReason" not in changed
    assert changed["eventTypes"] == ["message.failed", "notification.failed"]


def test_delete_removes_it(client, tenant):
    endpoint = _create(client, tenant).json()
    path = f"/api/webhooks/{endpoint['id']}"
    assert client.delete(path, headers=tenant.headers).status_code == 204
    api_error(client.get(path, headers=tenant.headers), 404, "not_found")
    api_error(client.delete(path, headers=tenant.headers), 404, "not_found")


def test_another_enterprise_sees_nothing(client, tenant):
    endpoint = _create(client, tenant).json()
    other = make_tenant()
    path = f"/api/webhooks/{endpoint['id']}"
    assert client.get("/api/webhooks", headers=other.headers).json()["items"] == []
    api_error(client.get(path, headers=other.headers), 404, "not_found")
    api_error(client.patch(path, json={"enabled": False}, headers=other.headers), 404, "not_found")
    api_error(client.delete(path, headers=other.headers), 404, "not_found")
    api_error(client.post(f"{path}/rotate-secret", headers=other.headers), 404, "not_found")
    api_error(client.get(f"{path}/attempts", headers=other.headers), 404, "not_found")
    assert client.get(path, headers=tenant.headers).json()["enabled"] is True


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"eventTypes": ["notification.exploded"]}, "validation_error"),
        ({"eventTypes": []}, "validation_error"),
        ({"url": "ftp://example.com/x"}, "invalid_url"),
        ({"url": "http://user:pw@example.com/x"}, "invalid_url"),
        ({"url": "http://example.com/x#frag"}, "invalid_url"),
        ({"url": "http:///nohost"}, "invalid_url"),
        ({"url": "http://example.com/" + "a" * 2100}, "validation_error"),
        ({"url": "http://a b.example.com/"}, "invalid_url"),
        ({"url": "http://does-not-exist.invalid/x"}, "unresolvable_url"),
        ({"secret": "whsec_mine"}, "validation_error"),
    ],
)
def test_bad_endpoints_are_422(client, tenant, body, code):
    api_error(_create(client, tenant, **body), 422, code)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/x",
        "http://localhost/x",
        "http://10.0.0.8/x",
        "http://169.254.169.254/latest/meta-data",
        "https://[::1]/x",
        "http://[::ffff:192.168.1.1]/x",
        "http://0.0.0.0/x",
        # Other spellings of 127.0.0.1 the resolver accepts.
        "http://2130706433/x",
        "http://0x7f.0.0.1/x",
        "http://127.1/x",
        "http://[fe80::1%25eth0]/x",
    ],
)
def test_private_addresses_are_refused_unless_allowed(client, tenant, monkeypatch, url):
    monkeypatch.setattr(get_settings(), "webhook_allow_private_networks", False)
    error = api_error(_create(client, tenant, url=url), 422, "forbidden_address")
    assert error["details"][0]["field"] == "url"
    assert client.get("/api/webhooks", headers=tenant.headers).json()["items"] == []
    # A URL changed later is checked the same way.
    monkeypatch.setattr(get_settings(), "webhook_allow_private_networks", True)
    endpoint = _create(client, tenant).json()
    monkeypatch.setattr(get_settings(), "webhook_allow_private_networks", False)
    api_error(
        client.patch(f"/api/webhooks/{endpoint['id']}", json={"url": url}, headers=tenant.headers),
        422,
        "forbidden_address",
    )


def test_endpoints_per_enterprise_are_bounded(client, tenant, monkeypatch):
    monkeypatch.setattr(get_settings(), "webhook_max_endpoints_per_enterprise", 2)
    assert _create(client, tenant).status_code == 201
    assert _create(client, tenant).status_code == 201
    api_error(_create(client, tenant), 409, "too_many_endpoints")
    assert _create(client, make_tenant()).status_code == 201


def test_attempts_of_a_new_endpoint_are_an_empty_page(client, tenant):
    endpoint = _create(client, tenant).json()
    page = client.get(f"/api/webhooks/{endpoint['id']}/attempts", headers=tenant.headers).json()
    assert page == {"items": [], "nextCursor": None}
    api_error(
        client.get(
            f"/api/webhooks/{endpoint['id']}/attempts",
            params={"cursor": "nonsense!"},
            headers=tenant.headers,
        ),
        400,
        "invalid_cursor",
    )
