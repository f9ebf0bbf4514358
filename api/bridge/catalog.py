"""What the bridge declares to Novu: `discover`, `health-check` and `code`.

Every static workflow, and every distinct workflow key of the published, active dynamic
workflows of all enterprises, each with one channel step per channel (step ids `email`,
`in_app`, `sms`, `push`, `chat`, always in that order), after a `delay` step when any definition
of the key has a delay.

Shapes are those of @novu/framework 2.13.2's discover output (client.ts `discover()`, the
`DiscoverWorkflowOutput`/`DiscoverStepOutput` types and the channel step factory): per workflow
`workflowId, severity, steps, code, payload, controls, env, tags, preferences` (plus `name`
and `description` when known); per step `stepId, type, controls, outputs, results, code,
options, providers`; every schema as `{schema, unknownSchema}`; and `agents: []` beside
`workflows`, which 2.13.2 adds.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from api.bridge import errors
from api.bridge.protocol import FRAMEWORK_VERSION, SDK_VERSION, STEP_ORDER
from api.bridge.schemas import (
    DELAY_OUTPUT,
    DELAY_RESULT,
    EMPTY_SCHEMA,
    OUTPUT_SCHEMAS,
    RESULT_SCHEMAS,
    XNOVU_PROPERTY,
    schema_pair,
)
from shared.db.enums import ChannelType, PublishStatus, WorkflowType
from shared.db.models import NotificationWorkflow
from shared.db.session import transaction
from shared.workflows.config import DynamicWorkflowFactory
from shared.workflows.instance import DELAY_STEP_ID, STEP_IDS, WorkflowInstance
from shared.workflows.registry import get_registry
from shared.workflows.service import WorkflowService

# A payload or control schema that admits anything: declared when the enterprises using a key
# disagree, or when a workflow has none (its payload is then not checked at all).
OPEN_SCHEMA: dict[str, Any] = {"type": "object", "properties": {}, "additionalProperties": True}


@dataclass
class _Variant:
    """One definition of a key: the static workflow, or one enterprise's dynamic one."""

    channels: tuple[ChannelType, ...]
    payload_schema: dict[str, Any] | None
    control_schema: dict[str, Any] | None
    tags: tuple[str, ...]
    name: str | None
    description: str | None
    delay_seconds: int | None = None


@dataclass
class DeclaredWorkflow:
    """One Novu workflow as the bridge declares it."""

    workflow_id: str
    static: _Variant | None = None
    dynamic: list[_Variant] = field(default_factory=list)

    @property
    def variants(self) -> list[_Variant]:
        return ([self.static] if self.static is not None else []) + self.dynamic

    @property
    def channels(self) -> tuple[ChannelType, ...]:
        """Every channel any definition of the key enables, in step order."""
        enabled = {channel for variant in self.variants for channel in variant.channels}
        return tuple(channel for channel in STEP_ORDER if channel in enabled)

    @property
    def has_delay(self) -> bool:
        """Whether any definition of the key delays: the delay step is then declared."""
        return any(variant.delay_seconds is not None for variant in self.variants)

    @property
    def step_ids(self) -> tuple[str, ...]:
        """The declared steps' ids, in order: the delay first, then the channels."""
        delay = (DELAY_STEP_ID,) if self.has_delay else ()
        return delay + tuple(STEP_IDS[channel] for channel in self.channels)

    def declares(self, step_id: str) -> bool:
        return step_id in self.step_ids

    def discover(self) -> dict[str, Any]:
        """The workflow's entry in `discover`."""
        payload = _merged_schema([v.payload_schema for v in self.variants], OPEN_SCHEMA)
        document: dict[str, Any] = {
            "workflowId": self.workflow_id,
            "severity": "none",
            "steps": ([self._delay_step()] if self.has_delay else [])
            + [self._step(channel) for channel in self.channels],
            "code": self.code(),
            "payload": schema_pair(_with_xnovu(payload)),
            "controls": schema_pair(
                _merged_schema([v.control_schema for v in self.variants], EMPTY_SCHEMA)
            ),
            "env": schema_pair(EMPTY_SCHEMA),
            "tags": _union(tag for v in self.variants for tag in v.tags),
            "preferences": {},
        }
        for key, values in (
            ("name", [v.name for v in self.variants]),
            ("description", [v.description for v in self.variants]),
        ):
            value = _agreed(values)
            if value is not None:
                document[key] = value
        return document

    def code(self, step_id: str | None = None) -> str:
        """What stands in for the framework's function source: how the step is produced."""
        kinds = []
        if self.static is not None:
            kinds.append("static (Python, shared by every enterprise)")
        if self.dynamic:
            kinds.append(f"dynamic (templates of {len(self.dynamic)} enterprise(s))")
        head = f"# XNovu workflow '{self.workflow_id}': " + " and ".join(kinds)
        if step_id is None:
            return f"{head}\n# steps: {', '.join(self.step_ids)}"
        if step_id == DELAY_STEP_ID:
            return (
                f"{head}\n# step '{DELAY_STEP_ID}': {{type: 'regular', amount: <the enterprise's "
                "delay_seconds>, unit: 'seconds'}; skipped for an enterprise whose workflow has "
                "no delay"
            )
        channel = next(c for c in self.channels if STEP_IDS[c] == step_id)
        return (
            f"{head}\n# step '{STEP_IDS[channel]}': the {channel.value} content XNovu rendered "
            f"(payload._xnovu.rendered.{STEP_IDS[channel]}); skipped for an enterprise whose "
            "workflow does not enable this channel"
        )

    def _step(self, channel: ChannelType) -> dict[str, Any]:
        step_id = STEP_IDS[channel]
        return {
            "stepId": step_id,
            "type": step_id,
            "controls": schema_pair(EMPTY_SCHEMA),
            "outputs": schema_pair(OUTPUT_SCHEMAS[channel]),
            "results": schema_pair(RESULT_SCHEMAS[channel]),
            "code": self.code(step_id),
            "options": {},
            "providers": [],
        }

    def _delay_step(self) -> dict[str, Any]:
        return {
            "stepId": DELAY_STEP_ID,
            "type": "delay",
            "controls": schema_pair(EMPTY_SCHEMA),
            "outputs": schema_pair(DELAY_OUTPUT),
            "results": schema_pair(DELAY_RESULT),
            "code": self.code(DELAY_STEP_ID),
            "options": {},
            "providers": [],
        }


@dataclass(frozen=True)
class Catalog:
    """Every workflow the bridge declares, by workflow id."""

    workflows: Mapping[str, DeclaredWorkflow]

    def discover(self) -> dict[str, Any]:
        """The `discover` answer."""
        return {"workflows": [w.discover() for w in self.workflows.values()], "agents": []}

    def health_check(self) -> dict[str, Any]:
        """The `health-check` answer."""
        return {
            "status": "ok",
            "sdkVersion": SDK_VERSION,
            "frameworkVersion": FRAMEWORK_VERSION,
            "discovered": {
                "workflows": len(self.workflows),
                "steps": sum(len(w.step_ids) for w in self.workflows.values()),
            },
        }

    def code(self, workflow_id: str, step_id: str | None) -> dict[str, str]:
        """The `code` answer for a workflow or one of its steps."""
        workflow = self.workflows.get(workflow_id)
        if workflow is None:
            raise errors.workflow_not_found(workflow_id)
        if not step_id:
            return {"code": workflow.code()}
        if not workflow.declares(step_id):
            raise errors.step_not_found(workflow_id, step_id)
        return {"code": workflow.code(step_id)}


def build_catalog(session: Session, static: Mapping[str, WorkflowInstance]) -> Catalog:
    """The catalog of the static workflows given and the dynamic workflows in the database.

    A workflow key belongs to one enterprise, but a Novu workflow id belongs to the whole Novu
    environment, and several enterprises may use the same key with different channels. The
    bridge declares one Novu workflow per key whose steps are the union of the channels every
    enterprise (and a static workflow of that key) enables; at `execute` time the enterprise
    named in the payload decides, and a step its workflow does not enable answers
    `options.skip`. So the trigger name stays the workflow key, no enterprise id leaks into
    Novu's workflow ids, and each enterprise still receives only its own channels. When the
    definitions disagree on the payload (or control) schema, the declared one admits any object
    and `execute` checks the payload against the enterprise's own schema.
    """
    declared: dict[str, DeclaredWorkflow] = {}
    for key, instance in static.items():
        declared.setdefault(key, DeclaredWorkflow(key)).static = _Variant(
            channels=instance.channels,
            payload_schema=instance.payload_schema,
            control_schema=instance.control_schema,
            tags=instance.tags,
            name=instance.name,
            description=instance.description,
            delay_seconds=instance.delay_seconds,
        )
    for row in _published_dynamic_rows(session):
        config = WorkflowService.parse_workflow_config(row)
        if DynamicWorkflowFactory.validate_workflow_config(config):
            continue  # the registry skips it too: it cannot run
        declared.setdefault(
            config.workflow_key, DeclaredWorkflow(config.workflow_key)
        ).dynamic.append(
            _Variant(
                channels=tuple(config.channels),
                payload_schema=config.payload_schema,
                control_schema=config.control_schema,
                tags=tuple(config.tags),
                name=config.name,
                description=config.description,
                delay_seconds=config.delay_seconds,
            )
        )
    return Catalog({key: declared[key] for key in sorted(declared)})


def _published_dynamic_rows(session: Session) -> Iterable[NotificationWorkflow]:
    W = NotificationWorkflow
    return session.scalars(
        select(W)
        .where(
            W.workflow_type == WorkflowType.DYNAMIC,
            W.publish_status == PublishStatus.PUBLISH,
            W.deactivated.is_(False),
            W.enterprise_id.is_not(None),
        )
        .order_by(W.workflow_key, W.enterprise_id)
    ).all()


def load_catalog() -> Catalog:
    """The catalog as the database and this process's static workflows have it now."""
    static = get_registry().get_static_workflows()
    with transaction() as session:
        return build_catalog(session, static)


class CatalogCache:
    """The catalog, rebuilt when older than `max_age` seconds, for the per-step checks of
    `execute` (which never trust a stale answer to refuse a step: see `declares`)."""

    def __init__(self, max_age: float) -> None:
        self._max_age = max_age
        self._lock = threading.Lock()
        self._catalog: Catalog | None = None
        self._built_at = 0.0

    def get(self, *, fresh: bool = False) -> Catalog:
        """The cached catalog, or a new one when asked or when it is too old."""
        with self._lock:
            stale = time.monotonic() - self._built_at > self._max_age
            if fresh or stale or self._catalog is None:
                self._catalog = load_catalog()
                self._built_at = time.monotonic()
            return self._catalog

    def peek(self) -> Catalog | None:
        """The cached catalog while it is young enough, without ever building one."""
        if self._catalog is None or time.monotonic() - self._built_at > self._max_age:
            return None
        return self._catalog

    def declares(self, workflow_id: str, step_id: str) -> bool:
        """Whether the workflow declares the step; a 'no' is confirmed afresh."""
        for fresh in (False, True):
            workflow = self.get(fresh=fresh).workflows.get(workflow_id)
            if workflow is not None and workflow.declares(step_id):
                return True
        return False

    def has_workflow(self, workflow_id: str) -> bool:
        """Whether the workflow id is declared (confirmed afresh when it is not)."""
        return any(workflow_id in self.get(fresh=fresh).workflows for fresh in (False, True))


def _merged_schema(schemas: list[dict[str, Any] | None], default: dict[str, Any]) -> dict[str, Any]:
    """The one schema every definition agrees on; `default` when none has one; otherwise an
    open object schema (the enterprise's own schema is applied at execute time)."""
    distinct = {
        json.dumps(schema, sort_keys=True) if schema is not None else None: schema
        for schema in schemas
    }
    if len(distinct) == 1:
        only = next(iter(distinct.values()))
        return only if only is not None else default
    if not distinct:
        return default
    return {
        **OPEN_SCHEMA,
        "description": "Differs between the enterprises using this workflow key; each "
        "enterprise's own schema is checked when a step executes.",
    }


def _with_xnovu(schema: dict[str, Any]) -> dict[str, Any]:
    """The payload schema with XNovu's own `_xnovu` property allowed beside the caller's."""
    if schema.get("type", "object") != "object":
        return schema
    properties = dict(schema.get("properties") or {})
    properties.setdefault("_xnovu", XNOVU_PROPERTY)
    return {**schema, "properties": properties}


def _agreed(values: list[str | None]) -> str | None:
    distinct = {v for v in values if v}
    return distinct.pop() if len(distinct) == 1 else None


def _union(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))
