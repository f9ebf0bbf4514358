"""WorkflowService: `ent_notification_workflow` rows of one enterprise.

Takes a session and never commits. Every mutation bumps the enterprise's registry generation,
so every process drops its cached workflows within seconds; one that changes what the bridge
declares to Novu requests a Novu sync once the session commits (docs/architecture.md, "Novu").
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from shared.db.enums import ChannelType, PublishStatus, WorkflowType
from shared.db.models import NotificationTemplate, NotificationWorkflow
from shared.generation import bump_generation
from shared.novu.sync import request_sync_after_commit
from shared.workflows.config import TEMPLATE_OVERRIDE_KEYS, WorkflowConfig

W = NotificationWorkflow
UNUSABLE_TEMPLATE_STATUSES = (PublishStatus.DELETED, PublishStatus.DISCARD)
EDITABLE_FIELDS = frozenset(
    {
        "name",
        "description",
        "default_channels",
        "template_overrides",
        "payload_schema",
        "control_schema",
        "tags",
        "business_id",
        "delay_seconds",
    }
)

# Fields whose change alters what the bridge's discover says of a published workflow (its name,
# steps, schemas, tags), or whether it is declared at all (a channel losing its template).
DISCOVER_FIELDS = EDITABLE_FIELDS - {"business_id"}


def _declared(row: NotificationWorkflow) -> bool:
    """Whether the bridge declares the row to Novu (api/bridge/catalog.py lists the same)."""
    return (
        row.workflow_type is WorkflowType.DYNAMIC
        and row.publish_status is PublishStatus.PUBLISH
        and not row.deactivated
    )


class DuplicateWorkflowKey(Exception):
    """The enterprise already has a workflow with this key."""


class WorkflowService:
    """Enterprise-scoped reads and writes of workflows."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def _scoped(self, enterprise_id: uuid.UUID) -> Select[NotificationWorkflow]:
        return select(W).where(W.enterprise_id == enterprise_id)

    def get_workflow(
        self, workflow_id: int, enterprise_id: uuid.UUID
    ) -> NotificationWorkflow | None:
        """One workflow of this enterprise."""
        return self.session.scalars(
            self._scoped(enterprise_id).where(W.id == workflow_id)
        ).one_or_none()

    def get_all_workflows(
        self, enterprise_id: uuid.UUID, *, include_deactivated: bool = False
    ) -> Sequence[NotificationWorkflow]:
        """The enterprise's workflows (active ones unless asked otherwise), by key."""
        stmt = self._scoped(enterprise_id)
        if not include_deactivated:
            stmt = stmt.where(W.deactivated.is_(False))
        return self.session.scalars(stmt.order_by(W.workflow_key)).all()

    def get_published_workflows(self, enterprise_id: uuid.UUID) -> Sequence[NotificationWorkflow]:
        """Active, published workflows: the ones that can be triggered."""
        return self.session.scalars(
            self._scoped(enterprise_id)
            .where(W.deactivated.is_(False), W.publish_status == PublishStatus.PUBLISH)
            .order_by(W.workflow_key)
        ).all()

    def create_workflow(
        self, enterprise_id: uuid.UUID, data: Mapping[str, Any], *, created_by: str | None = None
    ) -> NotificationWorkflow:
        """A new workflow (DRAFT unless `publish_status` says otherwise)."""
        row = W(
            enterprise_id=enterprise_id,
            workflow_key=data["workflow_key"],
            workflow_type=data.get("workflow_type", WorkflowType.DYNAMIC),
            publish_status=data.get("publish_status", PublishStatus.DRAFT),
            created_by=created_by,
            updated_by=created_by,
            **{k: v for k, v in data.items() if k in EDITABLE_FIELDS},
        )
        try:
            with self.session.begin_nested():
                self.session.add(row)
                self.session.flush()
        except IntegrityError as exc:
            raise DuplicateWorkflowKey(data["workflow_key"]) from exc
        bump_generation(self.session, enterprise_id)
        if _declared(row):
            request_sync_after_commit(self.session, f"workflow {row.workflow_key} created")
        return row

    def update_workflow(
        self,
        workflow_id: int,
        changes: Mapping[str, Any],
        enterprise_id: uuid.UUID,
        *,
        updated_by: str | None = None,
    ) -> NotificationWorkflow | None:
        """Apply changes to editable fields; None when the workflow is not the enterprise's."""
        row = self.get_workflow(workflow_id, enterprise_id)
        if row is None:
            return None
        declared_before = _declared(row)
        discover_changed = False
        for name, value in changes.items():
            if name not in EDITABLE_FIELDS:
                raise ValueError(f"{name} cannot be changed")
            discover_changed |= name in DISCOVER_FIELDS and getattr(row, name) != value
            setattr(row, name, value)
        row.updated_by = updated_by
        self.session.flush()
        bump_generation(self.session, enterprise_id)
        if discover_changed and (declared_before or _declared(row)):
            request_sync_after_commit(self.session, f"workflow {row.workflow_key} updated")
        return row

    def publish_workflow(
        self, workflow_id: int, enterprise_id: uuid.UUID
    ) -> NotificationWorkflow | None:
        """Make a workflow triggerable."""
        return self._set(workflow_id, enterprise_id, publish_status=PublishStatus.PUBLISH)

    def unpublish_workflow(
        self, workflow_id: int, enterprise_id: uuid.UUID
    ) -> NotificationWorkflow | None:
        """Back to DRAFT: triggers answer 404 again."""
        return self._set(workflow_id, enterprise_id, publish_status=PublishStatus.DRAFT)

    def deactivate_workflow(
        self, workflow_id: int, enterprise_id: uuid.UUID
    ) -> NotificationWorkflow | None:
        """Switch a workflow off without deleting it."""
        return self._set(workflow_id, enterprise_id, deactivated=True)

    def _set(
        self, workflow_id: int, enterprise_id: uuid.UUID, **values: Any
    ) -> NotificationWorkflow | None:
        row = self.get_workflow(workflow_id, enterprise_id)
        if row is None:
            return None
        declared_before = _declared(row)
        for name, value in values.items():
            setattr(row, name, value)
        self.session.flush()
        bump_generation(self.session, enterprise_id)
        if _declared(row) != declared_before:
            state = "published" if _declared(row) else "withdrawn"
            request_sync_after_commit(self.session, f"workflow {row.workflow_key} {state}")
        return row

    @staticmethod
    def parse_workflow_config(workflow: NotificationWorkflow) -> WorkflowConfig:
        """The configuration a database row describes."""
        overrides = workflow.template_overrides or {}

        def template(channel: ChannelType) -> int | None:
            value = overrides.get(TEMPLATE_OVERRIDE_KEYS[channel])
            return int(value) if isinstance(value, int | str) and str(value).isdigit() else None

        return WorkflowConfig(
            workflow_key=workflow.workflow_key,
            workflow_type=workflow.workflow_type,
            channels=list(workflow.default_channels or []),
            email_template_id=template(ChannelType.EMAIL),
            in_app_template_id=template(ChannelType.IN_APP),
            sms_template_id=template(ChannelType.SMS),
            push_template_id=template(ChannelType.PUSH),
            payload_schema=workflow.payload_schema,
            control_schema=workflow.control_schema,
            tags=list(workflow.tags or []),
            name=workflow.name,
            description=workflow.description,
            workflow_id=workflow.id,
            delay_seconds=workflow.delay_seconds,
        )

    def template_problems(
        self, config: WorkflowConfig, enterprise_id: uuid.UUID, *, published: bool = False
    ) -> list[str]:
        """Templates a configuration names that the enterprise does not have for that channel;
        with `published`, also those not published yet (a published workflow sends with them,
        and a draft is never sent: docs/architecture.md, "Templates")."""
        wanted = {
            channel: config.template_id(channel)
            for channel in config.channels
            if config.template_id(channel) is not None
        }
        if not wanted:
            return []
        T = NotificationTemplate
        found = {
            row.id: (row.channel_type, row.publish_status)
            for row in self.session.execute(
                select(T.id, T.channel_type, T.publish_status).where(
                    T.enterprise_id == enterprise_id,
                    T.id.in_([t for t in wanted.values() if t is not None]),
                    T.deactivated.is_(False),
                    T.publish_status.not_in(UNUSABLE_TEMPLATE_STATUSES),
                )
            )
        }
        problems = []
        for channel, template_id in wanted.items():
            name = f"{TEMPLATE_OVERRIDE_KEYS[channel]} {template_id}"
            if template_id not in found:
                problems.append(f"{name} does not exist")
                continue
            channel_type, status = found[template_id]
            if channel_type is not channel:
                problems.append(f"{name} is a {channel_type.value} template, not {channel.value}")
            elif published and status is not PublishStatus.PUBLISH:
                problems.append(
                    f"{name} is not published ({status.value}): publish it before the workflow"
                )
        return problems
