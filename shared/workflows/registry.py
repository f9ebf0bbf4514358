"""Which workflow a key means for an enterprise."""

from __future__ import annotations

import importlib
import logging
import pkgutil
import threading
import uuid

from shared.workflows import static as static_package
from shared.workflows.definition import StaticWorkflow

log = logging.getLogger(__name__)


class WorkflowRegistry:
    """Static workflows shared by all enterprises."""

    def __init__(self) -> None:
        self._static: dict[str, StaticWorkflow] = {}
        self._lock = threading.Lock()

    def register_static_workflow(self, workflow: StaticWorkflow) -> None:
        """Register a code-defined workflow under its key."""
        with self._lock:
            if workflow.key in self._static and self._static[workflow.key] is not workflow:
                raise ValueError(f"duplicate static workflow key {workflow.key!r}")
            self._static[workflow.key] = workflow

    def get_workflow(self, workflow_key: str, enterprise_id: uuid.UUID) -> StaticWorkflow | None:
        """The workflow a key means for this enterprise, or None."""
        return self._static.get(workflow_key)

    def has_workflow(self, workflow_key: str, enterprise_id: uuid.UUID) -> bool:
        """Whether the key resolves for this enterprise."""
        return self.get_workflow(workflow_key, enterprise_id) is not None

    def static_keys(self) -> list[str]:
        """Keys of every registered static workflow."""
        return sorted(self._static)


def load_builtin_static_workflows(registry: WorkflowRegistry) -> None:
    """Import each package under shared/workflows/static and register its `workflow`."""
    for module in pkgutil.iter_modules(static_package.__path__):
        if module.name.startswith(("_", ".")) or not module.ispkg:
            continue
        mod = importlib.import_module(f"{static_package.__name__}.{module.name}")
        workflow = getattr(mod, "workflow", None)
        if isinstance(workflow, StaticWorkflow):
            registry.register_static_workflow(workflow)
        else:
            log.warning("static workflow package %s defines no `workflow`", module.name)


_registry: WorkflowRegistry | None = None
_registry_lock = threading.Lock()


def get_registry() -> WorkflowRegistry:
    """The process-wide registry, with the built-in static workflows loaded."""
    global _registry
    if _registry is None:
        with _registry_lock:
            if _registry is None:
                registry = WorkflowRegistry()
                load_builtin_static_workflows(registry)
                _registry = registry
    return _registry
