"""Registry, template-cache and Novu rate-limit statistics."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter

from api.deps import EnterpriseDep
from shared.novu.budget import novu_usage
from shared.templates.renderer import get_template_renderer
from shared.workflows.registry import get_registry

router = APIRouter(tags=["stats"])


@router.get("/api/stats")
def stats(enterprise_id: EnterpriseDep) -> dict[str, Any]:
    """What this process has registered and cached (counts; the enterprise's own details), and
    what the enterprise's deliveries cost in Novu's rate limit."""
    return {
        "registry": get_registry().get_stats(enterprise_id),
        "templateCache": get_template_renderer().get_cache_stats(),
        "novu": _novu(enterprise_id),
    }


def _novu(enterprise_id: uuid.UUID) -> dict[str, Any]:
    """The Events tokens Novu charged for this enterprise's notifications, per notification it
    accepted, since the counters began (every worker adds to them). The tokens come from one
    budget per Novu environment that all enterprises share (`eventsTokensPerSecond`); each
    Novu call carries one enterprise's notifications, so the counts are this enterprise's own.
    Nulls when Redis cannot say."""
    usage = novu_usage(enterprise_id)
    return {
        "eventsTokensPerSecond": usage.per_second if usage else None,
        "tokensSpent": usage.tokens if usage else None,
        "notificationsSent": usage.sent if usage else None,
        "tokensPerNotification": usage.tokens_per_notification if usage else None,
    }
