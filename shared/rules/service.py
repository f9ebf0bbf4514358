"""RuleService: reads and writes of one enterprise's rules, checked when saved.

Services take a session and never commit: the request edge owns the transaction. A saved
rule is disarmed by the database (migration 0012's trigger) whenever its schedule or status
changes; the scheduler arms it again at its next tick.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from shared.db.enums import PublishStatus, TriggerType
from shared.db.models import NotificationRule, NotificationWorkflow
from shared.errors import InvalidInput
from shared.rules.payload import checked_notification
from shared.rules.schedule import parse_schedule
from shared.settings import get_settings
from shared.workflows.registry import get_registry


class RuleService:
    """Enterprise-scoped reads and writes of `ent_notification_rule`."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def get_rule(self, rule_id: int, enterprise_id: uuid.UUID) -> NotificationRule | None:
        """One rule of this enterprise, or None (another enterprise's id is None too)."""
        return self.session.scalars(
            select(NotificationRule).where(
                NotificationRule.id == rule_id, NotificationRule.enterprise_id == enterprise_id
            )
        ).one_or_none()

    def list_rules(
        self, enterprise_id: uuid.UUID, *, limit: int, before_id: int | None = None
    ) -> Sequence[NotificationRule]:
        """A keyset page, newest first: rules with id below `before_id`."""
        stmt = select(NotificationRule).where(NotificationRule.enterprise_id == enterprise_id)
        if before_id is not None:
            stmt = stmt.where(NotificationRule.id < before_id)
        return self.session.scalars(stmt.order_by(NotificationRule.id.desc()).limit(limit)).all()

    def create_rule(
        self, enterprise_id: uuid.UUID, values: dict[str, Any], *, created_by: str
    ) -> NotificationRule:
        """A checked DRAFT rule; it fires once published."""
        row = NotificationRule(
            **values,
            enterprise_id=enterprise_id,
            publish_status=PublishStatus.DRAFT,
            created_by=created_by,
            updated_by=created_by,
        )
        self.check(row)
        self.session.add(row)
        self.session.flush()
        return row

    def update_rule(
        self, row: NotificationRule, changes: dict[str, Any], *, updated_by: str
    ) -> NotificationRule:
        """The rule with `changes`, checked as a whole."""
        for name, value in changes.items():
            setattr(row, name, value)
        row.updated_by = updated_by
        self.check(row)
        self.session.flush()
        return row

    def publish_rule(self, row: NotificationRule) -> NotificationRule:
        """Make the rule fire (again, if it was deactivated), after checking it against its
        workflow as it is now."""
        self.check(row)
        row.publish_status = PublishStatus.PUBLISH
        row.deactivated = False
        self.session.flush()
        return row

    def deactivate_rule(self, row: NotificationRule) -> NotificationRule:
        """Stop the rule firing; publish makes it fire again."""
        row.deactivated = True
        self.session.flush()
        return row

    def check(self, row: NotificationRule) -> None:
        """Every check a fire of the rule will meet, at save time: its schedule, its workflow
        (of the enterprise, published) and its payload and recipients against the workflow, by
        the trigger intake's own checks. Raises the DomainError to answer with."""
        assert row.enterprise_id is not None
        if row.trigger_type is not TriggerType.CRON:
            raise _invalid("trigger_type", "only CRON rules exist", "invalid_trigger_type")
        parse_schedule(row.trigger_config)
        workflow_row = self.session.scalars(
            select(NotificationWorkflow).where(
                NotificationWorkflow.id == row.notification_workflow_id,
                or_(
                    NotificationWorkflow.enterprise_id == row.enterprise_id,
                    NotificationWorkflow.enterprise_id.is_(None),
                ),
            )
        ).one_or_none()
        if workflow_row is None:
            raise _invalid("notification_workflow_id", "no such workflow", "workflow_not_found")
        workflow = get_registry().get_workflow(workflow_row.workflow_key, row.enterprise_id)
        if workflow is None:
            raise _invalid(
                "notification_workflow_id",
                f"workflow {workflow_row.workflow_key!r} is not published (or is deactivated):"
                " a rule is checked against the workflow it triggers",
                "workflow_not_published",
            )
        checked_notification(row.rule_payload, workflow, row.enterprise_id, get_settings())


def _invalid(field: str, message: str, code: str) -> InvalidInput:
    return InvalidInput(code, message, [{"field": field, "message": message}])
