"""Dynamic workflows delivered by the real worker: the original design's walkthrough, two
enterprises with the same key, template edits reaching a worker with a warm cache, fallbacks."""

from __future__ import annotations

import pytest

from tests.conftest import make_tenant, wait_for_status
from tests.factories import create_template, create_workflow

pytestmark = pytest.mark.integration

ALERT = {
    "buildingId": "building-789",
    "message": "HVAC system failure detected",
    "priority": "high",
}


def _rendered(emulator, transaction_id):
    events = emulator.get("/_emulator/events", params={"transactionId": transaction_id}).json()
    assert len(events) == 1
    return events[0]["payload"]["_xnovu"]["rendered"]


def _trigger(client, tenant, key, payload):
    response = client.post(
        "/api/trigger",
        json={"workflowId": key, "enterpriseId": str(tenant.enterprise_id), "payload": payload},
        headers=tenant.headers,
    )
    assert response.status_code == 202, response.text
    accepted = response.json()
    row = wait_for_status(client, tenant, accepted["notificationId"], {"SENT", "FAILED"})
    assert row["notification_status"] == "SENT", row
    return accepted, row


def test_walkthrough_of_the_original_design(client, tenant, worker, emulator):
    email = create_template(
        client,
        tenant,
        "EMAIL",
        subject="[{{ priority | upper }}] Building {{ buildingId }}",
        body="<h1>{{ message }}</h1><p>Building {{ buildingId }}</p>",
    )
    in_app = create_template(client, tenant, "IN_APP", body="{{ priority }}: {{ message }}")
    create_workflow(
        client,
        tenant,
        "building-alert",
        EMAIL=email,
        IN_APP=in_app,
        publish=True,
        payload_schema={
            "type": "object",
            "required": ["buildingId", "message"],
            "properties": {"priority": {"enum": ["low", "medium", "high"]}},
        },
    )
    accepted, row = _trigger(client, tenant, "building-alert", ALERT)
    assert row["workflow_key"] == "building-alert"
    assert row["notification_workflow_id"] is not None
    rendered = _rendered(emulator, accepted["transactionId"])
    assert rendered["email"] == {
        "subject": "[HIGH] Building building-789",
        "body": "<h1>HVAC system failure detected</h1><p>Building building-789</p>",
    }
    assert rendered["in_app"]["body"] == "high: HVAC system failure detected"

    bad = client.post(
        "/api/trigger",
        json={"workflowId": "building-alert", "payload": {"priority": "urgent"}},
        headers=tenant.headers,
    )
    assert bad.status_code == 422
    assert {d["field"] for d in bad.json()["error"]["details"]} >= {
        "buildingId",
        "message",
        "priority",
    }


def test_two_enterprises_with_the_same_key_get_their_own_content(client, worker, emulator):
    a, b = make_tenant(), make_tenant()
    for tenant, word in ((a, "Alpha"), (b, "Beta")):
        email = create_template(
            client, tenant, "EMAIL", subject=word, body=f"<p>{word} {{{{ message }}}}</p>"
        )
        create_workflow(client, tenant, "shared-key", EMAIL=email, publish=True)
    accepted_a, _ = _trigger(client, a, "shared-key", ALERT)
    accepted_b, _ = _trigger(client, b, "shared-key", ALERT)
    assert _rendered(emulator, accepted_a["transactionId"])["email"]["subject"] == "Alpha"
    assert _rendered(emulator, accepted_b["transactionId"])["email"]["subject"] == "Beta"
    assert "Beta" in _rendered(emulator, accepted_b["transactionId"])["email"]["body"]


def test_template_edit_then_reload_reaches_a_worker_with_the_old_template_cached(
    client, tenant, worker, emulator
):
    email = create_template(client, tenant, "EMAIL", subject="Old subject", body="<p>old</p>")
    create_workflow(client, tenant, "editable", EMAIL=email, publish=True)
    first, _ = _trigger(client, tenant, "editable", ALERT)
    assert _rendered(emulator, first["transactionId"])["email"]["subject"] == "Old subject"
    patched = client.patch(
        f"/api/templates/{email['id']}",
        json={"subject_template": "New subject", "body_template": "<p>new</p>"},
        headers=tenant.headers,
    )
    assert patched.status_code == 200, patched.text
    assert client.post("/api/workflows/reload", headers=tenant.headers).status_code == 200
    # Both worker pool processes may hold the old template: send enough to reach both.
    for _ in range(4):
        again, _ = _trigger(client, tenant, "editable", ALERT)
        assert _rendered(emulator, again["transactionId"])["email"] == {
            "subject": "New subject",
            "body": "<p>new</p>",
        }


def test_missing_template_falls_back_to_default_content_and_is_recorded(
    client, tenant, worker, emulator
):
    email = create_template(client, tenant, "EMAIL")
    in_app = create_template(client, tenant, "IN_APP")
    create_workflow(client, tenant, "fragile", EMAIL=email, IN_APP=in_app, publish=True)
    # The in-app template disappears after the workflow was published.
    from sqlalchemy import update

    from shared.db.models import NotificationTemplate
    from shared.db.session import transaction

    with transaction() as session:
        session.execute(
            update(NotificationTemplate)
            .where(NotificationTemplate.id == in_app["id"])
            .values(deactivated=True)
        )
    client.post("/api/workflows/reload", headers=tenant.headers)
    accepted, row = _trigger(client, tenant, "fragile", ALERT)
    rendered = _rendered(emulator, accepted["transactionId"])
    assert rendered["in_app"]["body"] == ALERT["message"]
    assert [f["channel"] for f in row["render_fallbacks"]] == ["IN_APP"]
    assert rendered["email"]["subject"].startswith("[HIGH]")


def test_template_that_fails_to_render_fails_the_notification_with_the_reason(
    client, tenant, worker, emulator
):
    email = create_template(
        client,
        tenant,
        "EMAIL",
        body="{% for i in range(99999) %}{% for j in range(99999) %}{% endfor %}{% endfor %}",
    )
    create_workflow(client, tenant, "slow-render", EMAIL=email, publish=True)
    response = client.post(
        "/api/trigger",
        json={"workflowId": "slow-render", "payload": ALERT},
        headers=tenant.headers,
    )
    row = wait_for_status(client, tenant, response.json()["notificationId"], {"SENT", "FAILED"}, 30)
    assert row["notification_status"] == "FAILED"
    assert row["error_details"]["code"] == "render_failed"
    assert "time" in row["error_details"]["message"].lower()
    events = emulator.get("/_emulator/events", params={"transactionId": row["transaction_id"]})
    assert events.json() == []


def test_template_rendering_over_1_mb_fails_the_notification_with_the_reason(
    client, tenant, worker, emulator
):
    email = create_template(
        client, tenant, "EMAIL", body="{% for i in range(5000) %}{{ message * 100 }}{% endfor %}"
    )
    create_workflow(client, tenant, "huge-render", EMAIL=email, publish=True)
    response = client.post(
        "/api/trigger", json={"workflowId": "huge-render", "payload": ALERT}, headers=tenant.headers
    )
    row = wait_for_status(client, tenant, response.json()["notificationId"], {"SENT", "FAILED"}, 30)
    assert row["notification_status"] == "FAILED"
    assert row["error_details"]["code"] == "render_failed"
    assert "bytes" in row["error_details"]["message"] or "MB" in row["error_details"]["message"]
    events = emulator.get("/_emulator/events", params={"transactionId": row["transaction_id"]})
    assert events.json() == []
