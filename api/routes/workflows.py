"""Managing the caller's enterprise's workflows, and reloading them everywhere."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Path
from sqlalchemy.orm import Session

from api.deps import EnterpriseDep, PrincipalDep, SessionDep
from api.errors import ApiError, not_found
from api.schemas.workflows import (
    ReloadResult,
    WorkflowCreate,
    WorkflowList,
    WorkflowRead,
    WorkflowUpdate,
)
from shared.db.enums import PublishStatus
from shared.db.models import NotificationWorkflow
from shared.generation import bump_generation
from shared.novu.sync import workflow_sync_states
from shared.workflows.config import DynamicWorkflowFactory
from shared.workflows.registry import get_registry
from shared.workflows.service import DuplicateWorkflowKey, WorkflowService

router = APIRouter(prefix="/api/workflows", tags=["workflows"])

WorkflowId = Annotated[int, Path(ge=1, le=2**63 - 1)]


def _check_config(session: Session, row: NotificationWorkflow, enterprise_id: Any) -> None:
    """Refuse a workflow that could not run: missing templates, wrong channel, bad schema, and
    for a published one, a template still in draft (its every notification would FAIL)."""
    service = WorkflowService(session)
    config = service.parse_workflow_config(row)
    problems = DynamicWorkflowFactory.validate_workflow_config(config)
    published = row.publish_status is PublishStatus.PUBLISH
    problems += service.template_problems(config, enterprise_id, published=published)
    if problems:
        raise ApiError(
            422,
            "invalid_workflow",
            "the workflow configuration is invalid",
            [{"field": "workflow", "message": p} for p in problems],
        )


def _read(session: Session, row: NotificationWorkflow) -> WorkflowRead:
    """The workflow as the API shows it, with what Novu knows of its key."""
    return WorkflowRead.of(
        row, workflow_sync_states(session, [row.workflow_key]).get(row.workflow_key)
    )


def _refresh_here(enterprise_id: Any) -> None:
    # Other processes see the bumped generation within REGISTRY_CHECK_INTERVAL_SECONDS.
    get_registry().reload_enterprise_workflows(enterprise_id)


@router.get("", response_model=WorkflowList)
def list_workflows(
    session: SessionDep, enterprise_id: EnterpriseDep, include_deactivated: bool = False
) -> WorkflowList:
    """The enterprise's workflows, and the keys of the static ones it can also trigger."""
    rows = WorkflowService(session).get_all_workflows(
        enterprise_id, include_deactivated=include_deactivated
    )
    synced = workflow_sync_states(session, (r.workflow_key for r in rows))
    return WorkflowList(
        items=[WorkflowRead.of(r, synced.get(r.workflow_key)) for r in rows],
        static=sorted(get_registry().get_static_workflows()),
    )


@router.post("", response_model=WorkflowRead, status_code=201)
def create_workflow(
    body: WorkflowCreate, session: SessionDep, enterprise_id: EnterpriseDep, principal: PrincipalDep
) -> WorkflowRead:
    """Create a workflow as DRAFT; publish it to make it triggerable."""
    data = body.model_dump(exclude_none=True)
    data["template_overrides"] = body.template_overrides.model_dump(exclude_none=True)
    try:
        row = WorkflowService(session).create_workflow(
            enterprise_id, data, created_by=principal.actor
        )
    except DuplicateWorkflowKey as exc:
        raise ApiError(
            409, "duplicate_workflow_key", f"workflow_key {body.workflow_key!r} already exists"
        ) from exc
    _check_config(session, row, enterprise_id)
    session.commit()
    return _read(session, row)


@router.get("/{workflow_id}", response_model=WorkflowRead)
def get_workflow(
    workflow_id: WorkflowId, session: SessionDep, enterprise_id: EnterpriseDep
) -> WorkflowRead:
    """One workflow of the enterprise."""
    row = WorkflowService(session).get_workflow(workflow_id, enterprise_id)
    if row is None:
        raise not_found("workflow")
    return _read(session, row)


@router.patch("/{workflow_id}", response_model=WorkflowRead)
def update_workflow(
    workflow_id: WorkflowId,
    body: WorkflowUpdate,
    session: SessionDep,
    enterprise_id: EnterpriseDep,
    principal: PrincipalDep,
) -> WorkflowRead:
    """Change a workflow; a published one takes effect everywhere within seconds."""
    changes = body.model_dump(exclude_unset=True)
    if body.template_overrides is not None:
        changes["template_overrides"] = body.template_overrides.model_dump(exclude_none=True)
    row = WorkflowService(session).update_workflow(
        workflow_id, changes, enterprise_id, updated_by=principal.actor
    )
    if row is None:
        raise not_found("workflow")
    _check_config(session, row, enterprise_id)
    session.commit()
    _refresh_here(enterprise_id)
    return _read(session, row)


# Each POST /{workflow_id}/<name>: the service method it applies and what it does.
_TRANSITIONS: dict[str, tuple[Callable[..., NotificationWorkflow | None], str]] = {
    "publish": (WorkflowService.publish_workflow, "Make the workflow triggerable."),
    "unpublish": (WorkflowService.unpublish_workflow, "Back to DRAFT: triggers answer 404."),
    "deactivate": (WorkflowService.deactivate_workflow, "Switch the workflow off."),
}


def _transition(name: str) -> Any:
    apply, description = _TRANSITIONS[name]

    def handler(
        workflow_id: WorkflowId, session: SessionDep, enterprise_id: EnterpriseDep
    ) -> WorkflowRead:
        row = apply(WorkflowService(session), workflow_id, enterprise_id)
        if row is None:
            raise not_found("workflow")
        if name == "publish":
            _check_config(session, row, enterprise_id)
        session.commit()
        _refresh_here(enterprise_id)
        return _read(session, row)

    handler.__name__ = f"{name}_workflow"
    handler.__doc__ = description
    return handler


for _name in _TRANSITIONS:
    router.add_api_route(
        f"/{{workflow_id}}/{_name}",
        _transition(_name),
        methods=["POST"],
        response_model=WorkflowRead,
    )


@router.post("/reload", response_model=ReloadResult)
def reload_workflows(session: SessionDep, enterprise_id: EnterpriseDep) -> ReloadResult:
    """Reload the enterprise's workflows and templates in every API and worker process."""
    generation = bump_generation(session, enterprise_id)
    session.commit()
    registry = get_registry()
    workflows = registry.reload_enterprise_workflows(enterprise_id)
    invalid = registry.get_stats(enterprise_id).get("enterprise", {}).get("invalidWorkflows", {})
    return ReloadResult(
        enterpriseId=enterprise_id,
        generation=generation,
        workflows=sorted(workflows),
        invalid=invalid,
    )
