"""The template API's fields for the original's templates (issue 14): `undefined_mode`,
`locales`, previews in a locale and of drafts, and the original's filters and tag at preview:
bad input is a JSON 4xx naming the field, never a 500."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.api.test_novu_bridge import bridge_post, event, xnovu
from tests.api.test_ui import _logged_in
from tests.conftest import signup_payload
from tests.factories import api_error, back_to_draft, create_template, create_workflow

# 51 two-letter locale tags: aa, ab, ... by.
TAGS = [chr(97 + i // 26) + chr(97 + i % 26) for i in range(51)]


def body(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": "Hello",
        "template_key": f"hello-{uuid.uuid4().hex[:8]}",
        "channel_type": "EMAIL",
        "subject_template": "Hello {{ name }}",
        "body_template": "<p>Hello {{ name }}</p>",
    }
    data.update(overrides)
    return data


def create(client: Any, tenant: Any, **overrides: Any) -> dict[str, Any]:
    response = client.post("/api/templates", json=body(**overrides), headers=tenant.headers)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def preview(client: Any, tenant: Any, template_id: int, **request: Any) -> Any:
    return client.post(
        f"/api/templates/{template_id}/preview", json=request, headers=tenant.headers
    )


def test_undefined_mode_and_locales_are_stored_and_read_back(client, tenant):
    created = create(client, tenant)
    assert created["undefined_mode"] == "strict" and created["locales"] is None
    locales = {
        "fr": {"subject_template": "Bonjour {{ name }}", "body_template": "<p>Bonjour</p>"},
        "pt-BR": {"subject_template": "Olá", "body_template": "<p>Olá</p>"},
    }
    created = create(client, tenant, undefined_mode="blank", locales=locales)
    assert created["undefined_mode"] == "blank" and created["locales"] == locales
    patched = client.patch(
        f"/api/templates/{created['id']}",
        json={"undefined_mode": "strict", "locales": None},
        headers=tenant.headers,
    )
    assert patched.status_code == 200, patched.text
    assert (patched.json()["undefined_mode"], patched.json()["locales"]) == ("strict", None)


@pytest.mark.parametrize(
    ("fields", "code", "where"),
    [
        ({"undefined_mode": "lax"}, "validation_error", "undefined_mode"),
        ({"locales": {"english!": {"body_template": "x"}}}, "validation_error", "locales"),
        ({"locales": {"fr": {"subject_template": "S"}}}, "validation_error", "body_template"),
        ({"locales": {"fr": {"body_template": "x", "html": "y"}}}, "validation_error", "html"),
        ({"locales": {"fr": {"body_template": "<p>x</p>"}}}, "validation_error", "subject"),
        (
            {"locales": {"fr": {"subject_template": "S", "body_template": "B"}, "FR": {}}},
            "validation_error",
            "locales",
        ),
        (
            {"locales": {tag: {"subject_template": "S", "body_template": "B"} for tag in TAGS}},
            "validation_error",
            "at most 50 locales",
        ),
        (
            {"locales": {"de": {"subject_template": "S", "body_template": "{% xnovu_render %}"}}},
            "template_syntax_error",
            "locales.de.body_template",
        ),
    ],
)
def test_bad_fields_are_a_json_422_naming_them(client, tenant, fields, code, where):
    response = client.post("/api/templates", json=body(**fields), headers=tenant.headers)
    error = api_error(response, 422, code)
    assert where in str(error), error


def test_a_null_undefined_mode_in_a_patch_is_refused(client, tenant):
    created = create(client, tenant)
    response = client.patch(
        f"/api/templates/{created['id']}", json={"undefined_mode": None}, headers=tenant.headers
    )
    api_error(response, 422, "validation_error")


def test_preview_renders_the_variant_of_a_locale_and_drafts_it_nests(client, tenant):
    footer = create(
        client,
        tenant,
        channel_type="SMS",
        subject_template=None,
        body_template="-- {{ team }}",
        locales={"fr": {"body_template": "-- équipe {{ team }}"}},
    )
    assert footer["publish_status"] == "DRAFT"
    created = create(
        client,
        tenant,
        undefined_mode="blank",
        body_template='<p>Hello {{ name }}{{ missing.x }}</p>{% xnovu_render "'
        + footer["template_key"]
        + '", team: "A&B" %}',
        locales={
            "fr": {
                "subject_template": "Bonjour {{ name }}",
                "body_template": '<p>Bonjour {{ name }}</p>{% xnovu_render "'
                + footer["template_key"]
                + '", team: "A&B" %}',
            }
        },
    )
    english = preview(client, tenant, created["id"], variables={"name": "Ada"})
    assert english.status_code == 200, english.text
    assert english.json() == {"subject": "Hello Ada", "body": "<p>Hello Ada</p>-- A&amp;B"}
    french = preview(client, tenant, created["id"], variables={"name": "Ada"}, locale="fr-CA")
    assert french.json() == {
        "subject": "Bonjour Ada",
        "body": "<p>Bonjour Ada</p>-- équipe A&amp;B",
    }
    bad = preview(client, tenant, created["id"], locale="not a locale")
    api_error(bad, 422, "validation_error")


@pytest.mark.parametrize(
    ("source", "value", "code"),
    [
        ("{{ c | markdown_to_html }}", "* a\n" * 12_000, "render_memory_exceeded"),
        ("{{ c | sanitize_email }}", "<div>" * 6_000, "render_limit_exceeded"),
        # Within the payload's limit, but 16 copies of it leave no room for the parser.
        ("{{ (c * 16) | html_to_text }}", "<p>" * 20_000, "render_memory_exceeded"),
    ],
)
def test_hostile_input_to_the_filters_is_a_422_at_preview(client, tenant, source, value, code):
    created = create(
        client, tenant, channel_type="SMS", subject_template=None, body_template=source
    )
    response = preview(client, tenant, created["id"], variables={"c": value})
    api_error(response, 422, code)


def test_the_bridge_previews_a_draft_and_refuses_to_execute_it(client, tenant):
    key = f"drafted-{uuid.uuid4().hex[:8]}"
    draft = create_template(client, tenant, "SMS", body="draft {{ message }}")
    create_workflow(client, tenant, key, publish=True, SMS=draft)
    back_to_draft(tenant, draft["id"])
    payload = {"message": "hi", "_xnovu": xnovu(tenant.enterprise_id)}
    shown = bridge_post(client, event(payload), action="preview", workflowId=key, stepId="sms")
    assert shown.status_code == 200, shown.text
    assert shown.json()["outputs"] == {"body": "draft hi"}
    executed = bridge_post(client, event(payload), workflowId=key, stepId="sms")
    assert 400 <= executed.status_code < 500, executed.text
    assert "is not published" in executed.text


def test_an_override_that_does_not_compile_is_a_422_naming_it(client, tenant):
    overrides = {
        "email": {"subject": "Hi {{ name }}", "cc": ["ok", "{% if %}"]},
        "sms": {"content": "plain {text}", "n": 1},
    }
    response = client.post(
        "/api/trigger",
        json={"workflowId": "user-signup", "payload": signup_payload(), "overrides": overrides},
        headers=tenant.headers,
    )
    error = api_error(response, 422, "invalid_overrides")
    assert [(e["field"], e["line"]) for e in error["details"]] == [("overrides.email.cc[1]", 1)]
    overrides["email"]["cc"] = ["ok"]
    response = client.post(
        "/api/trigger",
        json={"workflowId": "user-signup", "payload": signup_payload(), "overrides": overrides},
        headers=tenant.headers,
    )
    assert response.status_code == 202, response.text


def test_the_delivery_log_page_shows_the_variant_the_recipient_gets(client, tenant, app):
    key = f"localized-{uuid.uuid4().hex[:8]}"
    sms = create_template(client, tenant, "SMS", body="Hello {{ message }}", publish=False)
    client.patch(
        f"/api/templates/{sms['id']}",
        json={"locales": {"fr": {"body_template": "Bonjour {{ message }}"}}},
        headers=tenant.headers,
    )
    client.post(f"/api/templates/{sms['id']}/publish", headers=tenant.headers)
    create_workflow(client, tenant, key, publish=True, SMS=sms)
    later = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat()
    response = client.post(
        "/api/trigger",
        json={
            "workflowId": key,
            "payload": {"message": "Ada"},
            "recipients": [{"subscriberId": "s1", "locale": "fr-BE"}],
            "scheduledFor": later,
        },
        headers=tenant.headers,
    )
    assert response.status_code == 202, response.text
    with TestClient(app, raise_server_exceptions=False) as browser:
        _logged_in(browser, tenant)
        page = browser.get(f"/ui/notifications/{response.json()['notificationId']}")
    assert page.status_code == 200
    assert "Bonjour Ada" in page.text and "Hello Ada" not in page.text
