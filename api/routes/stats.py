"""Statistics: an enterprise's own (`/api/stats`, any key acting for it) and the process's
(`/api/operator/stats`, the operator credential only): one enterprise never sees another's
ids or counts (docs/architecture.md, "Operator credential")."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import AwareDatetime

from api.deps import EnterpriseDep, SessionDep
from api.errors import ApiError
from api.operator import OperatorDep
from shared.notifications.statistics import MAX_RANGE, delivery_figures
from shared.novu.budget import Usage, novu_usage
from shared.templates.renderer import get_template_renderer
from shared.workflows.registry import get_registry

router = APIRouter(tags=["stats"])


@router.get("/api/stats")
def stats(enterprise_id: EnterpriseDep) -> dict[str, Any]:
    """The enterprise's own figures in this process (its workflows as loaded, its cached
    templates) and what its deliveries cost in Novu's rate limit."""
    registry = get_registry().get_stats(enterprise_id)
    cache = get_template_renderer().get_cache_stats()
    own: dict[str, Any] = {"staticWorkflows": registry["staticWorkflows"]}
    if "enterprise" in registry:
        own["enterprise"] = registry["enterprise"]
    return {
        "registry": own,
        "templateCache": {
            "entries": cache["enterprises"].get(str(enterprise_id), 0),
            "ttlSeconds": cache["ttlSeconds"],
        },
        "novu": _novu(novu_usage(enterprise_id)),
    }


@router.get("/api/stats/notifications")
def notification_stats(
    session: SessionDep,
    enterprise_id: EnterpriseDep,
    createdAfter: Annotated[
        AwareDatetime | None, Query(description="from (inclusive); default: a day before the end")
    ] = None,
    createdBefore: Annotated[
        AwareDatetime | None, Query(description="to (exclusive); default: now")
    ] = None,
) -> dict[str, Any]:
    """The enterprise's notifications created in a range of at most 31 days: counts by status
    and by workflow and status, and the latency from due to SENT (p50, p90, p99, max, in
    milliseconds) of those sent."""
    try:
        end = (createdBefore or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
        start = createdAfter.astimezone(dt.UTC) if createdAfter else end - dt.timedelta(days=1)
    except OverflowError:  # beyond what a datetime holds once in UTC, or a day before it
        raise ApiError(
            422, "invalid_range", "createdAfter and createdBefore must lie in years 1 to 9999, UTC"
        ) from None
    if start >= end:
        raise ApiError(422, "invalid_range", "createdAfter must be before createdBefore")
    if end - start > MAX_RANGE:
        raise ApiError(422, "range_too_large", f"the range may span at most {MAX_RANGE.days} days")
    return delivery_figures(session, enterprise_id, start, end).as_json()


@router.get("/api/operator/stats")
def operator_stats(_operator: OperatorDep) -> dict[str, Any]:
    """The whole process: registry and template-cache counters with every enterprise's
    entries, and the Novu usage of all enterprises together."""
    return {
        "registry": get_registry().get_stats(),
        "templateCache": get_template_renderer().get_cache_stats(),
        "novu": _novu(novu_usage()),
    }


def _novu(usage: Usage | None) -> dict[str, Any]:
    """The Events tokens Novu charged, per notification it accepted, since the counters began
    (every worker adds to them). The tokens come from one budget per Novu environment that all
    enterprises share (`eventsTokensPerSecond`); each Novu call carries one enterprise's
    notifications, so an enterprise's counts are its own. Nulls when Redis cannot say."""
    return {
        "eventsTokensPerSecond": usage.per_second if usage else None,
        "tokensSpent": usage.tokens if usage else None,
        "notificationsSent": usage.sent if usage else None,
        "tokensPerNotification": usage.tokens_per_notification if usage else None,
    }
