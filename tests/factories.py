"""Factories for test data created through the API, as a user would."""

from __future__ import annotations

import time
import uuid
from typing import Any

from sqlalchemy import update

from shared.db.enums import PublishStatus
from shared.db.models import NotificationTemplate
from shared.db.session import transaction
from shared.generation import bump_generation
from shared.settings import get_settings

CHANNEL_SOURCES = {
    "EMAIL": ("[{{ priority | default('low') | upper }}] {{ buildingId }}", "<p>{{ message }}</p>"),
    "IN_APP": ("Building {{ buildingId }}", "{{ message }}"),
    "SMS": (None, "{{ message }}"),
    "PUSH": ("Alert", "{{ message }}"),
}


def create_template(
    client: Any,
    tenant: Any,
    channel: str,
    *,
    key: str | None = None,
    subject: str | None = None,
    body: str | None = None,
    publish: bool = True,
) -> dict[str, Any]:
    """A template of the tenant's enterprise (201 asserted), published unless `publish` is
    False (a draft is never used at send time)."""
    default_subject, default_body = CHANNEL_SOURCES[channel]
    response = client.post(
        "/api/templates",
        json={
            "template_key": key or f"{channel.lower().replace('_', '-')}-{uuid.uuid4().hex[:8]}",
            "name": f"{channel} template",
            "channel_type": channel,
            "subject_template": subject if subject is not None else default_subject,
            "body_template": body or default_body,
        },
        headers=tenant.headers,
    )
    assert response.status_code == 201, response.text
    if publish:
        template_id = response.json()["id"]
        response = client.post(f"/api/templates/{template_id}/publish", headers=tenant.headers)
        assert response.status_code == 200, response.text
    return dict(response.json())


def create_workflow(
    client: Any,
    tenant: Any,
    key: str,
    *,
    publish: bool = False,
    payload_schema: dict[str, Any] | None = None,
    **templates: dict[str, Any],
) -> dict[str, Any]:
    """A DYNAMIC workflow with one template per channel given (EMAIL=…, IN_APP=…)."""
    override_keys = {
        "EMAIL": "emailTemplateId",
        "IN_APP": "inAppTemplateId",
        "SMS": "smsTemplateId",
        "PUSH": "pushTemplateId",
    }
    body: dict[str, Any] = {
        "workflow_key": key,
        "name": key.replace("-", " ").title(),
        "workflow_type": "DYNAMIC",
        "default_channels": list(templates),
        "template_overrides": {override_keys[c]: t["id"] for c, t in templates.items()},
    }
    if payload_schema is not None:
        body["payload_schema"] = payload_schema
    response = client.post("/api/workflows", json=body, headers=tenant.headers)
    assert response.status_code == 201, response.text
    workflow = dict(response.json())
    if publish:
        published = client.post(f"/api/workflows/{workflow['id']}/publish", headers=tenant.headers)
        assert published.status_code == 200, published.text
        workflow = dict(published.json())
    return workflow


def api_error(response: Any, status: int, code: str) -> dict[str, Any]:
    """The `error` object of a JSON error answer, after checking its status, type and code."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == code and error["message"], error
    return error


def trigger_signup(client: Any, tenant: Any, **extra: Any) -> dict[str, Any]:
    """POST /api/trigger of the static `user-signup` workflow (signup_payload), checked 202;
    `extra` adds to the body (scheduledFor, recipients, ...)."""
    from tests.conftest import signup_payload

    response = client.post(
        "/api/trigger",
        json={"workflowId": "user-signup", "payload": signup_payload(), **extra},
        headers=tenant.headers,
    )
    assert response.status_code == 202, response.text
    accepted: dict[str, Any] = response.json()
    return accepted


def back_to_draft(tenant: Any, template_id: int) -> None:
    """Put a published template back to DRAFT in the database, as another service writing the
    original's tables may (the API has no way back from PUBLISH), and wait until every process
    has seen the change (REGISTRY_CHECK_INTERVAL_SECONDS)."""
    with transaction(tenant.enterprise_id) as session:
        changed = session.execute(
            update(NotificationTemplate)
            .where(NotificationTemplate.id == template_id)
            .values(publish_status=PublishStatus.DRAFT)
        )
        assert changed.rowcount == 1  # type: ignore[attr-defined]
        bump_generation(session, tenant.enterprise_id)
    time.sleep(get_settings().registry_check_interval_seconds + 0.5)
