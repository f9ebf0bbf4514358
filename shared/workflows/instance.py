"""What a workflow key resolves to for an enterprise: static (code) or dynamic (database)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from shared.db.enums import ChannelType, WorkflowType
from shared.workflows.definition import ChannelContent, StaticWorkflow, SubscriberBuilder

# Novu step ids of each channel, as the bridge declares them.
STEP_IDS: dict[ChannelType, str] = {
    ChannelType.EMAIL: "email",
    ChannelType.IN_APP: "in_app",
    ChannelType.SMS: "sms",
    ChannelType.PUSH: "push",
    ChannelType.CHAT: "chat",
}
# Novu step id of a workflow's delay, declared before its channel steps.
DELAY_STEP_ID = "delay"


@dataclass(frozen=True, slots=True)
class ChannelStep:
    """One channel of a workflow: inline content (static) or a template id (dynamic)."""

    channel: ChannelType
    content: ChannelContent | None = None
    template_id: int | None = None

    @property
    def step_id(self) -> str:
        return STEP_IDS[self.channel]


@dataclass(frozen=True)
class WorkflowInstance:
    """A runnable workflow: the channels to render and how to validate and address it."""

    key: str
    workflow_type: WorkflowType
    steps: tuple[ChannelStep, ...]
    enterprise_id: uuid.UUID | None = None
    workflow_id: int | None = None
    name: str | None = None
    description: str | None = None
    tags: tuple[str, ...] = ()
    payload_schema: dict[str, Any] | None = None
    control_schema: dict[str, Any] | None = None
    subscriber: SubscriberBuilder | None = field(default=None, repr=False)
    # Seconds Novu holds the notification in a delay step before the channel steps; None: none.
    delay_seconds: int | None = None

    @property
    def channels(self) -> tuple[ChannelType, ...]:
        return tuple(step.channel for step in self.steps)

    def step(self, channel: ChannelType) -> ChannelStep | None:
        return next((s for s in self.steps if s.channel is channel), None)

    def default_subscriber(self, payload: Mapping[str, Any]) -> dict[str, Any] | None:
        """The Novu subscriber the payload implies, if the workflow knows how to derive one."""
        return self.subscriber(payload) if self.subscriber is not None else None


def from_static(workflow: StaticWorkflow) -> WorkflowInstance:
    """The instance of a code-defined workflow, shared by every enterprise."""
    return WorkflowInstance(
        key=workflow.key,
        workflow_type=WorkflowType.STATIC,
        steps=tuple(
            ChannelStep(channel=channel, content=content)
            for channel, content in workflow.channels.items()
        ),
        name=workflow.name,
        description=workflow.description,
        tags=tuple(workflow.tags),
        payload_schema=workflow.payload_schema,
        subscriber=workflow.subscriber,
        delay_seconds=workflow.delay_seconds,
    )
