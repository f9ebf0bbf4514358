"""Managing the caller's enterprise's scheduled (CRON) rules (docs/architecture.md, "Rules")."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Path, Query

from api.deps import EnterpriseDep, PrincipalDep, SessionDep
from api.errors import not_found
from api.routes.notifications import _decode_cursor, _encode_cursor
from api.schemas.rules import (
    FireTime,
    RuleCreate,
    RulePage,
    RulePreview,
    RuleRead,
    RuleUpdate,
)
from shared.db.models import NotificationRule
from shared.errors import StateConflict
from shared.rules.schedule import parse_schedule
from shared.rules.service import RuleService
from shared.settings import get_settings

router = APIRouter(prefix="/api/rules", tags=["rules"])

RuleId = Annotated[int, Path(ge=1, le=2**63 - 1)]
MAX_PREVIEW = 100


def _rule(service: RuleService, rule_id: int, enterprise_id: EnterpriseDep) -> NotificationRule:
    row = service.get_rule(rule_id, enterprise_id)
    if row is None:
        raise not_found("rule")
    return row


def _committed(session: SessionDep, row: NotificationRule) -> RuleRead:
    """The rule as committed: migration 0012's trigger may have disarmed it on the way."""
    session.commit()
    session.refresh(row)
    return RuleRead.of(row)


@router.post("", response_model=RuleRead, status_code=201)
def create_rule(
    body: RuleCreate, session: SessionDep, enterprise_id: EnterpriseDep, principal: PrincipalDep
) -> RuleRead:
    """Create a rule as DRAFT, checked against its workflow; publish it to make it fire."""
    values = body.model_dump(exclude_none=True)
    values["rule_payload"] = body.rule_payload.model_dump(exclude_none=True)
    row = RuleService(session).create_rule(enterprise_id, values, created_by=principal.actor)
    return _committed(session, row)


@router.get("", response_model=RulePage)
def list_rules(
    session: SessionDep,
    enterprise_id: EnterpriseDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    cursor: Annotated[str | None, Query(max_length=100)] = None,
) -> RulePage:
    """Newest first, in keyset pages: pass `nextCursor` back as `cursor` for the next page."""
    limit = min(limit, get_settings().max_page_size)
    rows = RuleService(session).list_rules(
        enterprise_id, limit=limit + 1, before_id=_decode_cursor(cursor) if cursor else None
    )
    page = rows[:limit]
    next_cursor = _encode_cursor(page[-1].id) if len(rows) > limit else None
    return RulePage(items=[RuleRead.of(r) for r in page], nextCursor=next_cursor)


@router.get("/{rule_id}", response_model=RuleRead)
def get_rule(rule_id: RuleId, session: SessionDep, enterprise_id: EnterpriseDep) -> RuleRead:
    """One rule of the enterprise; another enterprise's id answers 404."""
    return RuleRead.of(_rule(RuleService(session), rule_id, enterprise_id))


@router.patch("/{rule_id}", response_model=RuleRead)
def update_rule(
    rule_id: RuleId,
    body: RuleUpdate,
    session: SessionDep,
    enterprise_id: EnterpriseDep,
    principal: PrincipalDep,
) -> RuleRead:
    """Change a rule, checked as a whole; a new schedule applies from the scheduler's next
    tick (the fire times after the change)."""
    changes = body.model_dump(exclude_unset=True)
    for name in ("trigger_config", "rule_payload", "notification_workflow_id"):
        if name in changes and changes[name] is None:
            changes.pop(name)  # the columns the scheduler needs are kept, never nulled
    # A nested object given replaces the stored one whole, its defaults included.
    if body.trigger_config is not None:
        changes["trigger_config"] = body.trigger_config.model_dump()
    if body.rule_payload is not None:
        changes["rule_payload"] = body.rule_payload.model_dump(exclude_none=True)
    service = RuleService(session)
    row = service.update_rule(
        _rule(service, rule_id, enterprise_id), changes, updated_by=principal.actor
    )
    return _committed(session, row)


def _transition(
    session: SessionDep,
    enterprise_id: EnterpriseDep,
    rule_id: int,
    apply: Callable[[RuleService, NotificationRule], NotificationRule],
) -> RuleRead:
    service = RuleService(session)
    row = apply(service, _rule(service, rule_id, enterprise_id))
    return _committed(session, row)


@router.post("/{rule_id}/publish", response_model=RuleRead)
def publish_rule(rule_id: RuleId, session: SessionDep, enterprise_id: EnterpriseDep) -> RuleRead:
    """Make the rule fire (a deactivated one too), checked against its workflow as it is now."""
    return _transition(session, enterprise_id, rule_id, RuleService.publish_rule)


@router.post("/{rule_id}/deactivate", response_model=RuleRead)
def deactivate_rule(rule_id: RuleId, session: SessionDep, enterprise_id: EnterpriseDep) -> RuleRead:
    """Stop the rule firing; publishing it again makes it fire from then on."""
    return _transition(session, enterprise_id, rule_id, RuleService.deactivate_rule)


@router.get("/{rule_id}/preview", response_model=RulePreview)
def preview_rule(
    rule_id: RuleId,
    session: SessionDep,
    enterprise_id: EnterpriseDep,
    count: Annotated[int, Query(ge=1, le=MAX_PREVIEW)] = 5,
) -> RulePreview:
    """The rule's next `count` fire times from now, in UTC and in its time zone."""
    row = _rule(RuleService(session), rule_id, enterprise_id)
    schedule = parse_schedule(row.trigger_config)
    if schedule is None:
        raise StateConflict("rule_disabled", "the rule's trigger_config says enabled: false")
    times = schedule.upcoming(dt.datetime.now(dt.UTC), count)
    return RulePreview(
        cron=schedule.cron,
        timezone=schedule.timezone,
        fireTimes=[FireTime(utc=t, local=t.astimezone(schedule.zone)) for t in times],
    )
