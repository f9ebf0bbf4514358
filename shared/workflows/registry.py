"""WorkflowRegistry: what a workflow key means for an enterprise, in this process.

Static workflows (code) are shared by every enterprise. Dynamic workflows (database rows) are
loaded per enterprise on first use and cached; an enterprise's dynamic workflow shadows a static
one of the same key, for that enterprise only. A reload anywhere bumps the enterprise's
generation (shared/generation.py); each process compares it at most every
REGISTRY_CHECK_INTERVAL_SECONDS and reloads that enterprise (and drops its cached templates)
when it moved.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from shared.db.session import transaction
from shared.generation import current_generation
from shared.process import PerProcess
from shared.settings import Settings, get_settings
from shared.workflows.config import DynamicWorkflowFactory, InvalidWorkflowConfig
from shared.workflows.instance import WorkflowInstance, from_static
from shared.workflows.service import WorkflowService

log = logging.getLogger(__name__)


@dataclass
class _EnterpriseWorkflows:
    workflows: dict[str, WorkflowInstance]
    generation: int
    checked_at: float
    invalid: dict[str, list[str]] = field(default_factory=dict)


class WorkflowRegistry:
    """Static workflows plus each enterprise's dynamic ones, loaded lazily and kept fresh."""

    def __init__(
        self,
        *,
        check_interval: float = 2.0,
        on_enterprise_reload: Callable[[uuid.UUID], None] | None = None,
    ) -> None:
        self._static: dict[str, WorkflowInstance] = {}
        self._enterprises: dict[uuid.UUID, _EnterpriseWorkflows] = {}
        self._lock = threading.RLock()
        self._check_interval = check_interval
        self._on_enterprise_reload = on_enterprise_reload
        self._counters = {"loads": 0, "reloads": 0, "generation_checks": 0, "invalid_skipped": 0}

    # -- registration -----------------------------------------------------------------------

    def register_static_workflow(self, workflow_key: str, instance: WorkflowInstance) -> None:
        """Register a code-defined workflow for every enterprise."""
        with self._lock:
            existing = self._static.get(workflow_key)
            if existing is not None and existing is not instance:
                raise ValueError(f"duplicate static workflow key {workflow_key!r}")
            self._static[workflow_key] = instance

    # -- loading ----------------------------------------------------------------------------

    def load_enterprise_workflows(self, enterprise_id: uuid.UUID) -> dict[str, WorkflowInstance]:
        """Load the enterprise's published dynamic workflows from the database, replacing what
        was cached. An invalid row is logged and skipped; it never stops the others."""
        with transaction(enterprise_id) as session:
            generation = current_generation(session, enterprise_id)
            service = WorkflowService(session)
            rows = [
                row
                for row in service.get_published_workflows(enterprise_id)
                if row.workflow_type.value == "DYNAMIC"
            ]
            configs = [service.parse_workflow_config(row) for row in rows]
        workflows: dict[str, WorkflowInstance] = {}
        invalid: dict[str, list[str]] = {}
        for config in configs:
            try:
                workflows[config.workflow_key] = DynamicWorkflowFactory.create_dynamic_workflow(
                    config, enterprise_id
                )
            except InvalidWorkflowConfig as exc:
                invalid[config.workflow_key] = exc.problems
                log.warning("skipping invalid workflow of enterprise %s: %s", enterprise_id, exc)
        with self._lock:
            self._enterprises[enterprise_id] = _EnterpriseWorkflows(
                workflows=workflows,
                generation=generation,
                checked_at=time.monotonic(),
                invalid=invalid,
            )
            self._counters["loads"] += 1
            self._counters["invalid_skipped"] += len(invalid)
        return dict(workflows)

    def reload_enterprise_workflows(self, enterprise_id: uuid.UUID) -> dict[str, WorkflowInstance]:
        """Drop and reload the enterprise's workflows (and its cached templates) here."""
        with self._lock:
            self._counters["reloads"] += 1
        if self._on_enterprise_reload is not None:
            self._on_enterprise_reload(enterprise_id)
        return self.load_enterprise_workflows(enterprise_id)

    def _fresh(self, enterprise_id: uuid.UUID) -> _EnterpriseWorkflows:
        """The enterprise's cached workflows, reloaded when another process bumped them."""
        entry = self._enterprises.get(enterprise_id)
        if entry is None:
            self.load_enterprise_workflows(enterprise_id)
            return self._enterprises[enterprise_id]
        if time.monotonic() - entry.checked_at < self._check_interval:
            return entry
        with transaction() as session:
            generation = current_generation(session, enterprise_id)
        with self._lock:
            self._counters["generation_checks"] += 1
            entry.checked_at = time.monotonic()
        if generation != entry.generation:
            self.reload_enterprise_workflows(enterprise_id)
            return self._enterprises[enterprise_id]
        return entry

    def is_fresh(self, enterprise_id: uuid.UUID) -> bool:
        """Whether lookups for the enterprise answer from memory now, with no database read
        (an async caller reads through a worker thread otherwise)."""
        entry = self._enterprises.get(enterprise_id)
        return entry is not None and time.monotonic() - entry.checked_at < self._check_interval

    def observe_generation(self, enterprise_id: uuid.UUID, generation: int) -> None:
        """Reload the enterprise now if `generation` (read elsewhere, e.g. with a claim) is
        not the one its cached workflows and templates came from."""
        entry = self._enterprises.get(enterprise_id)
        if entry is None:
            self.load_enterprise_workflows(enterprise_id)
        elif entry.generation != generation:
            self.reload_enterprise_workflows(enterprise_id)
        else:
            entry.checked_at = time.monotonic()

    # -- lookups ----------------------------------------------------------------------------

    def get_workflow(
        self, workflow_key: str, enterprise_id: uuid.UUID | None = None
    ) -> WorkflowInstance | None:
        """The workflow a key means for an enterprise (its dynamic one first), or None."""
        if enterprise_id is not None:
            dynamic = self._fresh(enterprise_id).workflows.get(workflow_key)
            if dynamic is not None:
                return dynamic
        return self._static.get(workflow_key)

    def get_static_workflows(self) -> dict[str, WorkflowInstance]:
        """The code-defined workflows."""
        return dict(self._static)

    def get_stats(self, enterprise_id: uuid.UUID | None = None) -> dict[str, Any]:
        """Counts of what is registered and of loads, reloads and generation checks."""
        with self._lock:
            stats: dict[str, Any] = {
                "staticWorkflows": len(self._static),
                "enterprisesLoaded": len(self._enterprises),
                "dynamicWorkflows": sum(len(e.workflows) for e in self._enterprises.values()),
                **self._counters,
            }
            if enterprise_id is not None and enterprise_id in self._enterprises:
                entry = self._enterprises[enterprise_id]
                stats["enterprise"] = {
                    "dynamicWorkflows": sorted(entry.workflows),
                    "invalidWorkflows": entry.invalid,
                    "generation": entry.generation,
                }
        return stats


def _drop_cached_templates(enterprise_id: uuid.UUID) -> None:
    from shared.templates.renderer import get_template_renderer

    get_template_renderer().invalidate_enterprise(enterprise_id)


def build_registry(settings: Settings) -> WorkflowRegistry:
    """A registry with the static workflows of the built-in and configured directories."""
    from shared.workflows.discovery import discover_all_static_workflows, static_workflow_dirs

    registry = WorkflowRegistry(
        check_interval=settings.registry_check_interval_seconds,
        on_enterprise_reload=_drop_cached_templates,
    )
    # Built-in directory first: a configured directory cannot replace a built-in key.
    for workflow in discover_all_static_workflows(static_workflow_dirs(settings)):
        registry.register_static_workflow(workflow.key, from_static(workflow))
    return registry


_registry = PerProcess(lambda: build_registry(get_settings()))


def get_registry() -> WorkflowRegistry:
    """The process's registry; a forked child builds its own (its locks are not inherited)."""
    return _registry.get()
