"""Templates of the original at send time, end to end (API → PostgreSQL → Redis → celery worker
→ the Novu emulator): a draft is never sent, the variant is chosen by the recipient's locale
then the payload's, and `overrides` are rendered (issue 14; docs/architecture.md, "Templates of
the original")."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.conftest import wait_for_status
from tests.factories import back_to_draft, create_template, create_workflow

pytestmark = pytest.mark.integration

ALERT = {"buildingId": "building-789", "message": "**HVAC** failure <script>x</script>"}


def _trigger(client: Any, tenant: Any, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post("/api/trigger", json=body, headers=tenant.headers)
    assert response.status_code == 202, response.text
    accepted: dict[str, Any] = response.json()
    return accepted


def _finished(client: Any, tenant: Any, emulator: Any, accepted: dict[str, Any]) -> Any:
    """The finished row and the events Novu received for it."""
    row = wait_for_status(client, tenant, accepted["notificationId"], {"SENT", "FAILED"}, 60)
    events = emulator.get(
        "/_emulator/events", params={"transactionId": accepted["transactionId"]}
    ).json()
    return row, events


def test_a_draft_template_fails_the_notification_and_reaches_no_one(
    client, tenant, worker, emulator
):
    # Publishing the workflow over a draft is refused (tests/api/test_workflows.py); a row
    # another service changes is what reaches the worker.
    draft = create_template(client, tenant, "SMS", body="{{ message }}")
    create_workflow(client, tenant, "draft-sms", SMS=draft, publish=True)
    back_to_draft(tenant, draft["id"])
    accepted = _trigger(client, tenant, {"workflowId": "draft-sms", "payload": ALERT})
    row, events = _finished(client, tenant, emulator, accepted)
    assert row["notification_status"] == "FAILED", row
    assert row["error_details"]["code"] == "template_not_published"
    assert (
        f"template {draft['template_key']!r} is not published" in (row["error_details"]["message"])
    )
    assert events == []


def test_the_original_tag_filters_locales_and_overrides_reach_novu(
    client, tenant, worker, emulator
):
    signature = f"sig-{uuid.uuid4().hex[:6]}"
    sig = create_template(client, tenant, "SMS", key=signature, body="-- team")
    patched = client.patch(
        f"/api/templates/{sig['id']}",
        json={"locales": {"fr": {"body_template": "-- équipe"}}},
        headers=tenant.headers,
    )
    assert patched.status_code == 200, patched.text
    client.post(f"/api/templates/{sig['id']}/publish", headers=tenant.headers)
    body = '{{ message | markdown_to_html | sanitize_inapp }}{% xnovu_render "' + signature + '" %}'
    in_app = create_template(client, tenant, "IN_APP", subject="Alert", body=body)
    patched = client.patch(
        f"/api/templates/{in_app['id']}",
        json={
            "locales": {
                "fr": {"subject_template": "Alerte", "body_template": "FR " + body},
                "de": {"subject_template": "Alarm", "body_template": "DE {{ buildingId }}"},
            }
        },
        headers=tenant.headers,
    )
    assert patched.status_code == 200, patched.text
    client.post(f"/api/templates/{in_app['id']}/publish", headers=tenant.headers)
    create_workflow(client, tenant, "localized", IN_APP=in_app, publish=True)

    def sent(recipients: list[Any], **extra: Any) -> dict[str, Any]:
        accepted = _trigger(
            client,
            tenant,
            {"workflowId": "localized", "payload": ALERT, "recipients": recipients, **extra},
        )
        row, events = _finished(client, tenant, emulator, accepted)
        assert row["notification_status"] == "SENT", row
        assert len(events) == 1, events
        event: dict[str, Any] = events[0]
        return event

    # The recipient's locale: fr-CA has no variant, so fr (and the nested signature's fr).
    event = sent(
        [{"subscriberId": "u1", "locale": "fr-CA"}],
        overrides={"email": {"subject": "Re {{ buildingId }}", "customData": {"n": 1}}},
    )
    rendered = event["payload"]["_xnovu"]["rendered"]["in_app"]
    assert rendered == {
        "subject": "Alerte",
        "body": "FR <p><strong>HVAC</strong> failure &lt;script&gt;x&lt;/script&gt;</p>-- équipe",
    }
    assert event["payload"]["_xnovu"]["locale"] == "fr-CA"
    assert event["overrides"] == {"email": {"subject": "Re building-789", "customData": {"n": 1}}}

    # Recipients that disagree: the payload's locale decides (de-AT → de).
    event = sent(
        [{"subscriberId": "u1", "locale": "fr"}, {"subscriberId": "u2", "locale": "en"}],
        payload={**ALERT, "locale": "de-AT"},
    )
    assert event["payload"]["_xnovu"]["rendered"]["in_app"] == {
        "subject": "Alarm",
        "body": "DE building-789",
    }
    # No locale anywhere: the template's own content.
    event = sent(["u3"])
    assert event["payload"]["_xnovu"]["rendered"]["in_app"]["subject"] == "Alert"
    assert "locale" not in event["payload"]["_xnovu"]


def test_an_override_that_does_not_render_fails_the_notification(client, tenant, worker, emulator):
    sms = create_template(client, tenant, "SMS", body="{{ message }}")
    create_workflow(client, tenant, "bad-override", SMS=sms, publish=True)
    accepted = _trigger(
        client,
        tenant,
        {
            "workflowId": "bad-override",
            "payload": ALERT,
            "overrides": {"sms": {"content": "{{ nope.x }}"}},
        },
    )
    row, events = _finished(client, tenant, emulator, accepted)
    assert row["notification_status"] == "FAILED", row
    assert row["error_details"]["code"] == "render_failed"
    assert "overrides.sms.content: 'nope' is undefined" in row["error_details"]["message"]
    assert events == []


def test_hostile_input_to_a_filter_fails_the_notification_alone(client, tenant, worker, emulator):
    sms = create_template(client, tenant, "SMS", body="{{ message | markdown_to_html }}")
    create_workflow(client, tenant, "markdown-bomb", SMS=sms, publish=True)
    bomb = _trigger(
        client, tenant, {"workflowId": "markdown-bomb", "payload": {"message": "* a\n" * 12_000}}
    )
    fine = _trigger(client, tenant, {"workflowId": "markdown-bomb", "payload": {"message": "ok"}})
    row, events = _finished(client, tenant, emulator, bomb)
    assert row["notification_status"] == "FAILED", row
    assert row["error_details"]["code"] == "render_memory_exceeded"
    assert "the markdown_to_html filter" in row["error_details"]["message"]
    assert events == []
    row, events = _finished(client, tenant, emulator, fine)
    assert row["notification_status"] == "SENT", row
    assert events[0]["payload"]["_xnovu"]["rendered"]["sms"]["body"] == "<p>ok</p>"
