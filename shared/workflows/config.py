"""WorkflowConfig (a database row as configuration) and DynamicWorkflowFactory."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from shared.db.enums import ChannelType, WorkflowType
from shared.payloads import schema_problems
from shared.workflows.definition import MAX_DELAY_SECONDS
from shared.workflows.instance import ChannelStep, WorkflowInstance

log = logging.getLogger(__name__)

# template_overrides keys, as the original XNovu stores them, per channel.
TEMPLATE_OVERRIDE_KEYS: dict[ChannelType, str] = {
    ChannelType.EMAIL: "emailTemplateId",
    ChannelType.IN_APP: "inAppTemplateId",
    ChannelType.SMS: "smsTemplateId",
    ChannelType.PUSH: "pushTemplateId",
}
DELIVERABLE_CHANNELS = frozenset(TEMPLATE_OVERRIDE_KEYS)


class WorkflowConfig(BaseModel):
    """The configuration of a workflow, parsed from an `ent_notification_workflow` row."""

    model_config = ConfigDict(frozen=True)

    workflow_key: str
    workflow_type: WorkflowType
    channels: list[ChannelType] = Field(default_factory=list)
    email_template_id: int | None = None
    in_app_template_id: int | None = None
    sms_template_id: int | None = None
    push_template_id: int | None = None
    payload_schema: dict[str, Any] | None = None
    control_schema: dict[str, Any] | None = None
    tags: list[str] = Field(default_factory=list)
    name: str | None = None
    description: str | None = None
    workflow_id: int | None = None
    delay_seconds: int | None = None

    def template_id(self, channel: ChannelType) -> int | None:
        """The template configured for a channel."""
        return {
            ChannelType.EMAIL: self.email_template_id,
            ChannelType.IN_APP: self.in_app_template_id,
            ChannelType.SMS: self.sms_template_id,
            ChannelType.PUSH: self.push_template_id,
        }.get(channel)


class InvalidWorkflowConfig(ValueError):
    """A workflow configuration that cannot run; `problems` says every reason."""

    def __init__(self, workflow_key: str, problems: list[str]) -> None:
        super().__init__(f"workflow {workflow_key!r}: " + "; ".join(problems))
        self.problems = problems


class DynamicWorkflowFactory:
    """Builds runnable workflows from database configuration."""

    @staticmethod
    def validate_workflow_config(config: WorkflowConfig) -> list[str]:
        """Every problem with a configuration; an empty list means it is valid."""
        problems: list[str] = []
        if not config.channels:
            problems.append("no channels enabled")
        if len(set(config.channels)) != len(config.channels):
            problems.append("a channel is listed twice")
        for channel in config.channels:
            if channel not in DELIVERABLE_CHANNELS:
                problems.append(f"channel {channel.value} is not supported by dynamic workflows")
            elif config.template_id(channel) is None:
                problems.append(
                    f"channel {channel.value} needs {TEMPLATE_OVERRIDE_KEYS[channel]} "
                    "in template_overrides"
                )
        if config.delay_seconds is not None and not 1 <= config.delay_seconds <= MAX_DELAY_SECONDS:
            problems.append(f"delay_seconds must be from 1 to {MAX_DELAY_SECONDS}")
        if config.payload_schema is not None:
            problems.extend(schema_problems(config.payload_schema))
        return problems

    @classmethod
    def create_dynamic_workflow(
        cls, config: WorkflowConfig, enterprise_id: uuid.UUID
    ) -> WorkflowInstance:
        """The runnable workflow of a valid configuration; InvalidWorkflowConfig otherwise."""
        problems = cls.validate_workflow_config(config)
        if problems:
            raise InvalidWorkflowConfig(config.workflow_key, problems)
        return WorkflowInstance(
            key=config.workflow_key,
            workflow_type=config.workflow_type,
            steps=tuple(
                ChannelStep(channel=channel, template_id=config.template_id(channel))
                for channel in config.channels
            ),
            enterprise_id=enterprise_id,
            workflow_id=config.workflow_id,
            name=config.name,
            description=config.description,
            tags=tuple(config.tags),
            payload_schema=config.payload_schema,
            control_schema=config.control_schema,
            delay_seconds=config.delay_seconds,
        )
