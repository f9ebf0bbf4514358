"""The templates API: CRUD, publish, preview, validation and isolation between enterprises."""

from __future__ import annotations

import uuid
from typing import Any

from shared.templates import get_template_renderer
from tests.conftest import make_tenant


def template_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "Welcome",
        "description": "Sent after sign-up",
        "template_key": f"welcome-{uuid.uuid4().hex[:8]}",
        "channel_type": "EMAIL",
        "subject_template": "Welcome, {{ name }}!",
        "body_template": "<p>Hi {{ name }}, you are on the {{ plan }} plan.</p>",
        "variables_description": {"plan": {"default": "free", "description": "plan name"}},
    }
    body.update(overrides)
    return body


def create(client: Any, tenant: Any, **overrides: Any) -> dict[str, Any]:
    response = client.post(
        "/api/templates", json=template_body(**overrides), headers=tenant.headers
    )
    assert response.status_code == 201, response.text
    return response.json()


def nest(template_key: str, arguments: str = "") -> str:
    """Jinja source that renders another template here."""
    return "{{ xnovu_render('" + template_key + "'" + arguments + ") }}"


def test_create_then_read_and_list(client, tenant):
    created = create(client, tenant)
    assert created["publish_status"] == "DRAFT"
    assert created["deactivated"] is False
    assert created["enterprise_id"] == str(tenant.enterprise_id)
    assert created["created_by"] == f"api-key:{tenant.key_id}"
    assert created["variables_description"] == {
        "plan": {"default": "free", "description": "plan name"}
    }
    fetched = client.get(f"/api/templates/{created['id']}", headers=tenant.headers)
    assert fetched.status_code == 200
    assert fetched.json() == created

    sms = create(client, tenant, channel_type="SMS", subject_template=None, body_template="hi")
    listed = client.get("/api/templates", headers=tenant.headers).json()["items"]
    assert [t["id"] for t in listed] == [created["id"], sms["id"]]
    only_sms = client.get(
        "/api/templates", params={"channel_type": "SMS"}, headers=tenant.headers
    ).json()["items"]
    assert [t["id"] for t in only_sms] == [sms["id"]]


def test_patch_changes_only_the_given_fields(client, tenant):
    created = create(client, tenant)
    response = client.patch(
        f"/api/templates/{created['id']}",
        json={"body_template": "<p>Bye {{ name }}</p>", "description": None},
        headers=tenant.headers,
    )
    assert response.status_code == 200, response.text
    patched = response.json()
    assert patched["body_template"] == "<p>Bye {{ name }}</p>"
    assert patched["description"] is None
    assert patched["subject_template"] == created["subject_template"]
    assert patched["name"] == created["name"]
    assert patched["updated_at"] >= created["updated_at"]


def test_publish_marks_the_template_published(client, tenant):
    created = create(client, tenant)
    response = client.post(f"/api/templates/{created['id']}/publish", headers=tenant.headers)
    assert response.status_code == 200
    assert response.json()["publish_status"] == "PUBLISH"
    again = client.get(f"/api/templates/{created['id']}", headers=tenant.headers).json()
    assert again["publish_status"] == "PUBLISH"


def test_preview_renders_defaults_and_sample_variables(client, tenant):
    created = create(client, tenant)
    response = client.post(
        f"/api/templates/{created['id']}/preview",
        json={"variables": {"name": "<Ada>"}},
        headers=tenant.headers,
    )
    assert response.status_code == 200, response.text
    assert response.json() == {
        "subject": "Welcome, <Ada>!",
        "body": "<p>Hi &lt;Ada&gt;, you are on the free plan.</p>",
    }
    overridden = client.post(
        f"/api/templates/{created['id']}/preview",
        json={"variables": {"name": "Bo", "plan": "pro"}},
        headers=tenant.headers,
    ).json()
    assert overridden["body"] == "<p>Hi Bo, you are on the pro plan.</p>"


def test_preview_without_subject_omits_it(client, tenant):
    sms = create(client, tenant, channel_type="SMS", subject_template=None, body_template="x")
    response = client.post(f"/api/templates/{sms['id']}/preview", headers=tenant.headers)
    assert response.status_code == 200
    assert response.json() == {"body": "x"}


def test_preview_shows_the_latest_edit(client, tenant):
    created = create(client, tenant, channel_type="SMS", subject_template=None, body_template="v1")
    client.post(f"/api/templates/{created['id']}/publish", headers=tenant.headers)
    renderer = get_template_renderer()
    assert renderer.render_template(created["id"], tenant.enterprise_id, {}).body == "v1"
    client.patch(
        f"/api/templates/{created['id']}", json={"body_template": "v2"}, headers=tenant.headers
    )
    preview = client.post(f"/api/templates/{created['id']}/preview", headers=tenant.headers)
    assert preview.json()["body"] == "v2"
    # and this process's cache was dropped after the commit, so delivery sees it too
    assert renderer.render_template(created["id"], tenant.enterprise_id, {}).body == "v2"


def test_preview_errors_are_422_with_the_reason(client, tenant):
    created = create(client, tenant)
    missing = client.post(f"/api/templates/{created['id']}/preview", headers=tenant.headers)
    assert missing.status_code == 422
    error = missing.json()["error"]
    assert error["code"] == "render_error"
    assert "'name' is undefined" in error["message"]

    bomb = create(client, tenant, channel_type="SMS", body_template="{{ 'x' * 10 ** 9 }}")
    limited = client.post(f"/api/templates/{bomb['id']}/preview", headers=tenant.headers)
    assert limited.status_code == 422
    assert limited.json()["error"]["code"] == "render_limit_exceeded"

    probe = create(client, tenant, channel_type="SMS", body_template="{{ ''.__class__ }}")
    refused = client.post(f"/api/templates/{probe['id']}/preview", headers=tenant.headers)
    assert refused.status_code == 422
    assert refused.json()["error"]["code"] == "template_security_error"


def test_preview_renders_nested_templates_and_names_cycles(client, tenant):
    footer = create(
        client, tenant, channel_type="SMS", subject_template=None, body_template="-- {{ who }}"
    )
    outer = create(
        client,
        tenant,
        body_template="<p>{{ name }}</p>" + nest(footer["template_key"], ", {'who': name}"),
    )
    response = client.post(
        f"/api/templates/{outer['id']}/preview",
        json={"variables": {"name": "<A>"}},
        headers=tenant.headers,
    )
    assert response.json()["body"] == "<p>&lt;A&gt;</p>-- &lt;A&gt;"

    client.patch(
        f"/api/templates/{footer['id']}",
        json={"body_template": nest(outer["template_key"])},
        headers=tenant.headers,
    )
    cycle = client.post(
        f"/api/templates/{outer['id']}/preview",
        json={"variables": {"name": "x"}},
        headers=tenant.headers,
    )
    assert cycle.status_code == 422
    expected = f"{outer['template_key']} -> {footer['template_key']} -> {outer['template_key']}"
    assert expected in cycle.json()["error"]["message"]


def test_syntax_error_is_422_with_field_and_line(client, tenant):
    response = client.post(
        "/api/templates",
        json=template_body(body_template="<p>\nfine\n{{ name }\n</p>"),
        headers=tenant.headers,
    )
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "template_syntax_error"
    [detail] = error["details"]
    assert (detail["field"], detail["line"]) == ("body_template", 3)
    assert detail["message"]

    created = create(client, tenant)
    patched = client.patch(
        f"/api/templates/{created['id']}",
        json={"subject_template": "{% if x %}"},
        headers=tenant.headers,
    )
    assert patched.status_code == 422
    assert patched.json()["error"]["details"][0]["field"] == "subject_template"
    unchanged = client.get(f"/api/templates/{created['id']}", headers=tenant.headers).json()
    assert unchanged["subject_template"] == created["subject_template"]


def test_channel_rules_are_checked(client, tenant):
    response = client.post(
        "/api/templates", json=template_body(subject_template=None), headers=tenant.headers
    )
    assert response.status_code == 422
    assert response.json()["error"]["details"] == [
        {"field": "subject_template", "message": "an EMAIL template needs a subject"}
    ]
    sms = create(client, tenant, channel_type="SMS", subject_template=None, body_template="x")
    to_email = client.patch(
        f"/api/templates/{sms['id']}", json={"channel_type": "EMAIL"}, headers=tenant.headers
    )
    assert to_email.status_code == 422


def test_duplicate_key_is_409_but_other_enterprises_may_reuse_it(client, tenant):
    first = create(client, tenant)
    duplicate = client.post(
        "/api/templates",
        json=template_body(template_key=first["template_key"]),
        headers=tenant.headers,
    )
    assert duplicate.status_code == 409
    assert duplicate.json()["error"]["code"] == "duplicate_template_key"

    second = create(client, tenant)
    rename = client.patch(
        f"/api/templates/{second['id']}",
        json={"template_key": first["template_key"]},
        headers=tenant.headers,
    )
    assert rename.status_code == 409

    other = make_tenant()
    reused = client.post(
        "/api/templates",
        json=template_body(template_key=first["template_key"]),
        headers=other.headers,
    )
    assert reused.status_code == 201


def test_another_enterprise_gets_404_and_changes_nothing(client, tenant):
    created = create(client, tenant)
    other = make_tenant()
    base = f"/api/templates/{created['id']}"
    for response in (
        client.get(base, headers=other.headers),
        client.patch(base, json={"name": "stolen"}, headers=other.headers),
        client.post(f"{base}/publish", headers=other.headers),
        client.post(f"{base}/preview", json={"variables": {"name": "x"}}, headers=other.headers),
    ):
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "not_found"
    assert client.get("/api/templates", headers=other.headers).json()["items"] == []
    mine = client.get(base, headers=tenant.headers).json()
    assert (mine["name"], mine["publish_status"]) == (created["name"], "DRAFT")


def test_a_service_key_acts_for_the_enterprise_it_names(client, tenant):
    created = create(client, tenant)
    service = make_tenant(service=True)
    headers = {**service.headers, "X-Enterprise-Id": str(tenant.enterprise_id)}
    assert client.get(f"/api/templates/{created['id']}", headers=headers).status_code == 200
    assert client.get(f"/api/templates/{created['id']}", headers=service.headers).status_code == 400


def test_invalid_requests_are_422(client, tenant):
    created = create(client, tenant)
    cases = [
        ("post", "/api/templates", template_body(unknown_field=1)),
        ("post", "/api/templates", template_body(template_key="Bad Key!")),
        ("post", "/api/templates", template_body(template_key="-leading-dash")),
        ("post", "/api/templates", template_body(channel_type="FAX")),
        ("post", "/api/templates", template_body(body_template="")),
        ("post", "/api/templates", template_body(body_template="x" * (100 * 1024 + 1))),
        ("post", "/api/templates", template_body(variables_description=["not", "an", "object"])),
        ("patch", f"/api/templates/{created['id']}", {"unknown_field": 1}),
        ("patch", f"/api/templates/{created['id']}", {"name": None}),
        ("patch", f"/api/templates/{created['id']}", {"body_template": None}),
        ("post", f"/api/templates/{created['id']}/preview", {"variables": {}, "extra": 1}),
        ("post", f"/api/templates/{created['id']}/preview", {"variables": "nope"}),
        ("get", f"/api/templates/{2**63}", None),
        ("get", "/api/templates/0", None),
    ]
    for method, url, body in cases:
        response = client.request(method, url, json=body, headers=tenant.headers)
        assert response.status_code == 422, (method, url, response.text)
        assert response.json()["error"]["code"] == "validation_error"


def test_unknown_template_and_missing_auth(client, tenant):
    response = client.get(f"/api/templates/{2**63 - 1}", headers=tenant.headers)
    assert response.status_code == 404
    assert client.get("/api/templates").status_code == 401
    malformed = client.post(
        "/api/templates",
        content=b"{not json",
        headers={**tenant.headers, "Content-Type": "application/json"},
    )
    assert malformed.status_code == 400
