"""Registering a workflow by hand: what `PUT /_emulator/workflows/{workflowId}` accepts.

Novu knows a workflow made in its dashboard without any sync; this is how the emulator is
told of one (tests that have no bridge). The body, all optional:

    {
      "steps": [{"stepId": "in-app", "type": "in_app"}],   # the default; [] has no steps
      "active": true
    }

A workflow registered by hand has no bridge URL, and a sync never deletes it.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from novu_emulator.state import KnownWorkflow, WorkflowStep, iso_now

# The step a workflow registered without `steps` has.
DEFAULT_STEP = WorkflowStep("in-app", "in_app")


class _StepModel(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)

    step_id: str = Field(alias="stepId", min_length=1, max_length=255)
    type: str = Field(min_length=1, max_length=64)


class WorkflowRegistration(BaseModel):
    """A workflow to register by hand (`PUT /_emulator/workflows/{workflowId}`)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)

    steps: tuple[_StepModel, ...] | None = None
    active: bool = True

    def known(self, workflow_id: str) -> KnownWorkflow:
        """The workflow as the emulator keeps it."""
        steps = (
            (DEFAULT_STEP,)
            if self.steps is None
            else tuple(WorkflowStep(step.step_id, step.type) for step in self.steps)
        )
        return KnownWorkflow(
            workflow_id=workflow_id,
            steps=steps,
            bridge_url=None,
            synced_at=iso_now(),
            source=None,
            active=self.active,
        )


def parse_registration(document: Any) -> WorkflowRegistration:
    """Validate a `PUT /_emulator/workflows/{id}` body; raises `pydantic.ValidationError`."""
    return WorkflowRegistration.model_validate(document)


def registered(workflow_id: str) -> KnownWorkflow:
    """A workflow registered by hand with the default step (the server's `workflows`)."""
    return WorkflowRegistration().known(workflow_id)
