"""Who sees what of the process: an enterprise's key its own figures only, the operator's
credential (XNOVU_OPERATOR_TOKEN) everything (docs/architecture.md, "Operator credential")."""

from __future__ import annotations

from typing import Any

import pytest

from shared.settings import get_settings
from shared.templates.renderer import get_template_renderer
from tests.conftest import Tenant, make_tenant
from tests.factories import create_template


def _cached(client: Any, tenant: Tenant) -> None:
    """One of the tenant's templates in this process's template cache."""
    template = create_template(client, tenant, "SMS")
    get_template_renderer().render_template(template["id"], tenant.enterprise_id, {"message": "m"})


def test_stats_show_an_enterprise_its_own_figures_only(client):
    """Issue 12, item 7: the template cache listed every cached enterprise's id to any key."""
    a, b = make_tenant(), make_tenant()
    _cached(client, a)
    _cached(client, b)

    response = client.get("/api/stats", headers=b.headers)
    assert response.status_code == 200, response.text
    assert str(a.enterprise_id) not in response.text
    stats = response.json()
    assert stats["templateCache"]["entries"] == 1
    assert set(stats["templateCache"]) == {"entries", "ttlSeconds"}
    # Counts of every enterprise loaded in the process are the operator's, not B's.
    assert not {"enterprisesLoaded", "dynamicWorkflows"} & set(stats["registry"])
    assert set(stats["novu"]) == {
        "eventsTokensPerSecond",
        "tokensSpent",
        "notificationsSent",
        "tokensPerNotification",
    }


def test_the_operator_sees_every_enterprise(client, operator):
    a = make_tenant()
    _cached(client, a)
    response = client.get("/api/operator/stats", headers=operator)
    assert response.status_code == 200, response.text
    stats = response.json()
    assert stats["templateCache"]["enterprises"][str(a.enterprise_id)] == 1
    assert {"enterprisesLoaded", "dynamicWorkflows"} <= set(stats["registry"])
    assert "hits" in stats["templateCache"]


@pytest.mark.parametrize("path", ["/api/operator/stats", "/metrics"])
def test_an_enterprise_key_is_not_the_operator(client, operator, path):
    tenant, service = make_tenant(), make_tenant(service=True)
    for headers in (
        tenant.headers,
        {**service.headers, "X-Enterprise-Id": str(tenant.enterprise_id)},
        {"Authorization": operator["Authorization"] + "x"},
        {"Authorization": operator["Authorization"].replace("Bearer", "Basic")},
        {"Authorization": "Bearer é".encode()},  # bytes no ASCII key has
    ):
        response = client.get(path, headers=headers)
        assert response.status_code == 403, (headers, response.text)
        assert response.json()["error"]["code"] == "operator_only"
    missing = client.get(path)
    assert missing.status_code == 401
    assert missing.headers["WWW-Authenticate"] == "Bearer"
    assert client.get(path, headers=operator).status_code == 200


@pytest.mark.parametrize("path", ["/api/operator/stats", "/metrics"])
def test_without_an_operator_token_operator_endpoints_are_off(client, tenant, path):
    assert get_settings().operator_token is None
    for headers in ({}, tenant.headers, {"Authorization": "Bearer anything-at-all"}):
        response = client.get(path, headers=headers)
        assert response.status_code == 403
        assert response.json()["error"]["code"] == "operator_disabled"


def test_metrics_name_no_enterprise(client, operator):
    tenant = make_tenant()
    _cached(client, tenant)
    client.get("/api/notifications/123456789", headers=tenant.headers)
    client.get(f"/api/no-such-route/{tenant.enterprise_id}", headers=tenant.headers)
    text = client.get("/metrics", headers=operator).text
    assert "xnovu_http_requests_total" in text
    assert str(tenant.enterprise_id) not in text


def test_a_short_operator_token_is_refused_at_startup(monkeypatch):
    from pydantic import ValidationError

    from shared.settings import Settings

    monkeypatch.setenv("XNOVU_OPERATOR_TOKEN", "too-short")
    with pytest.raises(ValidationError, match="XNOVU_OPERATOR_TOKEN"):
        Settings()


def test_an_empty_operator_token_means_none(monkeypatch):
    """A compose `${XNOVU_OPERATOR_TOKEN:-}` or a blanked .env line: no credential, no error."""
    from shared.settings import Settings

    monkeypatch.setenv("XNOVU_OPERATOR_TOKEN", "")
    assert Settings().operator_token is None
