"""The workflow management API: create, publish, isolation, validation."""

from __future__ import annotations

import uuid

import pytest

from tests.conftest import make_tenant
from tests.factories import api_error, create_template, create_workflow


def test_created_workflow_is_a_draft_until_published(client, tenant):
    email = create_template(client, tenant, "EMAIL")
    workflow = create_workflow(client, tenant, "order-shipped", EMAIL=email)
    assert workflow["publish_status"] == "DRAFT"
    trigger = {"workflowId": "order-shipped", "payload": {"message": "hi"}, "subscriberId": "s-1"}
    assert client.post("/api/trigger", json=trigger, headers=tenant.headers).status_code == 404
    published = client.post(f"/api/workflows/{workflow['id']}/publish", headers=tenant.headers)
    assert published.status_code == 200 and published.json()["publish_status"] == "PUBLISH"
    trigger["scheduledFor"] = "2999-01-01T00:00:00Z"
    assert client.post("/api/trigger", json=trigger, headers=tenant.headers).status_code == 202
    client.post(f"/api/workflows/{workflow['id']}/unpublish", headers=tenant.headers)
    assert client.post("/api/trigger", json=trigger, headers=tenant.headers).status_code == 404


def test_deactivated_workflow_cannot_be_triggered(client, tenant):
    email = create_template(client, tenant, "EMAIL")
    workflow = create_workflow(client, tenant, "gone-soon", EMAIL=email, publish=True)
    response = client.post(f"/api/workflows/{workflow['id']}/deactivate", headers=tenant.headers)
    assert response.json()["deactivated"] is True
    trigger = {"workflowId": "gone-soon", "payload": {}, "subscriberId": "s-1"}
    assert client.post("/api/trigger", json=trigger, headers=tenant.headers).status_code == 404


def test_enabled_channel_without_its_template_is_422(client, tenant):
    email = create_template(client, tenant, "EMAIL")
    response = client.post(
        "/api/workflows",
        json={
            "workflow_key": "half-configured",
            "name": "Half",
            "default_channels": ["EMAIL", "SMS"],
            "template_overrides": {"emailTemplateId": email["id"]},
        },
        headers=tenant.headers,
    )
    assert response.status_code == 422
    messages = " ".join(d["message"] for d in response.json()["error"]["details"])
    assert "smsTemplateId" in messages


def test_template_of_the_wrong_channel_or_enterprise_is_422(client, tenant):
    sms = create_template(client, tenant, "SMS")
    other = make_tenant()
    foreign = create_template(client, other, "EMAIL")
    for template_id in (sms["id"], foreign["id"]):
        response = client.post(
            "/api/workflows",
            json={
                "workflow_key": f"wrong-{uuid.uuid4().hex[:6]}",
                "name": "Wrong",
                "default_channels": ["EMAIL"],
                "template_overrides": {"emailTemplateId": template_id},
            },
            headers=tenant.headers,
        )
        assert response.status_code == 422, response.text


def test_a_published_workflow_names_only_published_templates(client, tenant):
    draft = create_template(client, tenant, "SMS", publish=False)
    published = create_template(client, tenant, "EMAIL")
    # Drafts go together: a draft workflow may name a draft template.
    workflow = create_workflow(client, tenant, f"drafts-{uuid.uuid4().hex[:6]}", SMS=draft)
    before = client.get(f"/api/workflows/{workflow['id']}", headers=tenant.headers).json()

    refused = client.post(f"/api/workflows/{workflow['id']}/publish", headers=tenant.headers)
    error = api_error(refused, 422, "invalid_workflow")
    assert [d["message"] for d in error["details"]] == [
        f"smsTemplateId {draft['id']} is not published (DRAFT): publish it before the workflow"
    ]
    # Refused as a whole: still a draft, and triggers still answer 404.
    after = client.get(f"/api/workflows/{workflow['id']}", headers=tenant.headers).json()
    assert after == before and after["publish_status"] == "DRAFT"
    trigger = {"workflowId": workflow["workflow_key"], "payload": {"message": "hi"}}
    api_error(
        client.post("/api/trigger", json=trigger, headers=tenant.headers), 404, "workflow_not_found"
    )

    assert client.post(f"/api/templates/{draft['id']}/publish", headers=tenant.headers).is_success
    published_now = client.post(f"/api/workflows/{workflow['id']}/publish", headers=tenant.headers)
    assert published_now.status_code == 200, published_now.text

    # A published workflow cannot be changed to name a draft either.
    another_draft = create_template(client, tenant, "EMAIL", publish=False)
    for email in (another_draft, published):
        changed = client.patch(
            f"/api/workflows/{workflow['id']}",
            json={
                "default_channels": ["SMS", "EMAIL"],
                "template_overrides": {
                    "smsTemplateId": draft["id"],
                    "emailTemplateId": email["id"],
                },
            },
            headers=tenant.headers,
        )
        if email is another_draft:
            error = api_error(changed, 422, "invalid_workflow")
            assert f"emailTemplateId {email['id']} is not published" in str(error["details"])
        else:
            assert changed.status_code == 200, changed.text
            assert changed.json()["template_overrides"]["emailTemplateId"] == email["id"]


def test_invalid_payload_schema_is_422(client, tenant):
    email = create_template(client, tenant, "EMAIL")
    response = client.post(
        "/api/workflows",
        json={
            "workflow_key": "bad-schema",
            "name": "Bad",
            "default_channels": ["EMAIL"],
            "template_overrides": {"emailTemplateId": email["id"]},
            "payload_schema": {"type": "no-such-type"},
        },
        headers=tenant.headers,
    )
    assert response.status_code == 422
    assert "payload_schema" in response.text


def test_duplicate_key_is_409_but_the_same_key_in_another_enterprise_is_fine(client, tenant):
    email = create_template(client, tenant, "EMAIL")
    create_workflow(client, tenant, "twice", EMAIL=email)
    again = client.post(
        "/api/workflows",
        json={
            "workflow_key": "twice",
            "name": "Again",
            "default_channels": ["EMAIL"],
            "template_overrides": {"emailTemplateId": email["id"]},
        },
        headers=tenant.headers,
    )
    assert again.status_code == 409
    other = make_tenant()
    other_email = create_template(client, other, "EMAIL")
    assert create_workflow(client, other, "twice", EMAIL=other_email)["workflow_key"] == "twice"


def test_another_enterprise_gets_404_for_workflows(client, tenant):
    email = create_template(client, tenant, "EMAIL")
    workflow = create_workflow(client, tenant, "private-flow", EMAIL=email, publish=True)
    other = make_tenant()
    wid = workflow["id"]
    for method, path in (
        ("GET", f"/api/workflows/{wid}"),
        ("PATCH", f"/api/workflows/{wid}"),
        ("POST", f"/api/workflows/{wid}/publish"),
        ("POST", f"/api/workflows/{wid}/unpublish"),
        ("POST", f"/api/workflows/{wid}/deactivate"),
    ):
        kwargs = {"json": {"name": "stolen"}} if method == "PATCH" else {}
        response = client.request(method, path, headers=other.headers, **kwargs)
        assert response.status_code == 404, (method, path, response.text)
    listed = client.get("/api/workflows", headers=other.headers).json()
    assert listed["items"] == []
    assert "user-signup" in listed["static"]
    trigger = {"workflowId": "private-flow", "payload": {}, "subscriberId": "s"}
    assert client.post("/api/trigger", json=trigger, headers=other.headers).status_code == 404
    assert client.get(f"/api/workflows/{wid}", headers=tenant.headers).json()["name"] != "stolen"


def test_dynamic_workflow_shadows_a_static_one_for_its_enterprise_only(client, tenant):
    email = create_template(client, tenant, "EMAIL")
    create_workflow(
        client,
        tenant,
        "user-signup",
        EMAIL=email,
        publish=True,
        payload_schema={"type": "object", "required": ["shadow"]},
    )
    mine = client.post(
        "/api/trigger",
        json={
            "workflowId": "user-signup",
            "payload": {"userId": "u", "email": "a@b.co", "name": "A"},
        },
        headers=tenant.headers,
    )
    assert mine.status_code == 422  # my dynamic workflow's schema wants `shadow`
    other = make_tenant()
    theirs = client.post(
        "/api/trigger",
        json={
            "workflowId": "user-signup",
            "payload": {"userId": "u", "email": "a@b.co", "name": "A"},
            "scheduledFor": "2999-01-01T00:00:00Z",
        },
        headers=other.headers,
    )
    assert theirs.status_code == 202


def test_reload_and_stats(client, tenant):
    email = create_template(client, tenant, "EMAIL")
    create_workflow(client, tenant, "stats-flow", EMAIL=email, publish=True)
    reloaded = client.post("/api/workflows/reload", headers=tenant.headers)
    assert reloaded.status_code == 200
    body = reloaded.json()
    assert body["workflows"] == ["stats-flow"] and body["generation"] >= 1
    stats = client.get("/api/stats", headers=tenant.headers).json()
    assert stats["registry"]["enterprise"]["dynamicWorkflows"] == ["stats-flow"]
    assert stats["registry"]["staticWorkflows"] >= 2
    assert set(stats["templateCache"]) == {"entries", "ttlSeconds"}


def _delayed_body(client, tenant, seconds: object) -> dict[str, object]:
    """A workflow body of one EMAIL channel with `delay_seconds`."""
    email = create_template(client, tenant, "EMAIL")
    return {
        "workflow_key": f"delay-{uuid.uuid4().hex[:8]}",
        "name": "Delay",
        "default_channels": ["EMAIL"],
        "template_overrides": {"emailTemplateId": email["id"]},
        "delay_seconds": seconds,
    }


@pytest.mark.parametrize("seconds", [0, -1, 2_592_001, "soon", 1.5])
def test_delay_seconds_out_of_range_is_422(client, tenant, seconds):
    body = _delayed_body(client, tenant, seconds)
    response = client.post("/api/workflows", json=body, headers=tenant.headers)
    assert response.status_code == 422, response.text
    assert "delay_seconds" in response.text


def test_delay_seconds_is_kept_and_read_back(client, tenant):
    body = _delayed_body(client, tenant, 2_592_000)
    created = client.post("/api/workflows", json=body, headers=tenant.headers)
    assert created.status_code == 201, created.text
    assert created.json()["delay_seconds"] == 2_592_000
    workflow_id = created.json()["id"]
    unchanged = client.patch(
        f"/api/workflows/{workflow_id}", json={"name": "Renamed"}, headers=tenant.headers
    )
    assert unchanged.json()["delay_seconds"] == 2_592_000
    read = client.get(f"/api/workflows/{workflow_id}", headers=tenant.headers)
    assert read.json()["delay_seconds"] == 2_592_000
    cleared = client.patch(
        f"/api/workflows/{workflow_id}", json={"delay_seconds": None}, headers=tenant.headers
    )
    assert cleared.status_code == 200 and cleared.json()["delay_seconds"] is None
