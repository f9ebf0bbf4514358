"""Registry and template-cache statistics of this API process."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from api.deps import EnterpriseDep
from shared.templates.renderer import get_template_renderer
from shared.workflows.registry import get_registry

router = APIRouter(tags=["stats"])


@router.get("/api/stats")
def stats(enterprise_id: EnterpriseDep) -> dict[str, Any]:
    """What this process has registered and cached (counts; the enterprise's own details)."""
    return {
        "registry": get_registry().get_stats(enterprise_id),
        "templateCache": get_template_renderer().get_cache_stats(),
    }
