"""The demo data `make run` seeds, idempotently."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.apikeys import ensure_api_key
from shared.db.enums import ChannelType, PublishStatus, WorkflowType
from shared.db.models import NotificationTemplate, NotificationWorkflow
from shared.generation import bump_generation
from shared.settings import Settings

SEED_AUTHOR = "xnovu-dev-seed"

BUILDING_ALERT_PAYLOAD_SCHEMA = {
    "type": "object",
    "required": ["buildingId", "message"],
    "properties": {
        "buildingId": {"type": "string", "minLength": 1},
        "message": {"type": "string", "minLength": 1, "maxLength": 2000},
        "priority": {"type": "string", "enum": ["low", "medium", "high", "critical"]},
    },
}

BUILDING_ALERT_TEMPLATES = {
    ChannelType.EMAIL: {
        "template_key": "building-alert-email",
        "name": "Building alert (email)",
        "subject_template": "[{{ priority | upper }}] Building {{ buildingId }}: {{ message }}",
        "body_template": (
            "<h2>Alert for building {{ buildingId }}</h2>\n"
            "<p><strong>Priority:</strong> {{ priority }}</p>\n"
            "<p>{{ message }}</p>\n"
            "<p>Open the building dashboard for details.</p>"
        ),
        "variables_description": {"priority": "medium"},
    },
    ChannelType.IN_APP: {
        "template_key": "building-alert-in-app",
        "name": "Building alert (in-app)",
        "subject_template": "Building {{ buildingId }}",
        "body_template": "{{ priority | capitalize }} alert: {{ message }}",
        "variables_description": {"priority": "medium"},
    },
}


def seed_demo(session: Session, settings: Settings) -> None:
    """The demo enterprise's API key and its `building-alert` workflow with two templates."""
    ensure_api_key(
        session,
        plaintext=settings.dev_api_key,
        enterprise_id=settings.dev_enterprise_id,
        name="development key (seeded by xnovu dev)",
    )
    seed_building_alert(session, settings.dev_enterprise_id)


def seed_building_alert(session: Session, enterprise_id: uuid.UUID) -> NotificationWorkflow:
    """The original XNovu example: a DYNAMIC EMAIL + IN_APP workflow, published."""
    existing = session.scalar(
        select(NotificationWorkflow).where(
            NotificationWorkflow.enterprise_id == enterprise_id,
            NotificationWorkflow.workflow_key == "building-alert",
        )
    )
    if existing is not None:
        return existing
    template_ids: dict[ChannelType, int] = {}
    for channel, fields in BUILDING_ALERT_TEMPLATES.items():
        template = session.scalar(
            select(NotificationTemplate).where(
                NotificationTemplate.enterprise_id == enterprise_id,
                NotificationTemplate.template_key == fields["template_key"],
            )
        )
        if template is None:
            template = NotificationTemplate(
                enterprise_id=enterprise_id,
                channel_type=channel,
                publish_status=PublishStatus.PUBLISH,
                created_by=SEED_AUTHOR,
                **fields,
            )
            session.add(template)
            session.flush()
        template_ids[channel] = template.id
    workflow = NotificationWorkflow(
        enterprise_id=enterprise_id,
        workflow_key="building-alert",
        name="Building Alert",
        description="Alerts about a building, by email and in the app.",
        workflow_type=WorkflowType.DYNAMIC,
        publish_status=PublishStatus.PUBLISH,
        default_channels=[ChannelType.EMAIL, ChannelType.IN_APP],
        template_overrides={
            "emailTemplateId": template_ids[ChannelType.EMAIL],
            "inAppTemplateId": template_ids[ChannelType.IN_APP],
        },
        payload_schema=BUILDING_ALERT_PAYLOAD_SCHEMA,
        tags=["facilities", "alerts"],
        created_by=SEED_AUTHOR,
    )
    session.add(workflow)
    session.flush()
    bump_generation(session, enterprise_id)
    return workflow
