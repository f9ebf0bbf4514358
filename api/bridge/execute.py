"""`execute` and `preview` of one step: the outputs Novu delivers for a channel.

What @novu/framework 2.13.2 does (client.ts `executeWorkflow`), and what the bridge does in its
place:
- `execute` without `payload` is ExecutionEventPayloadInvalidError with
  `data: {message}`; a payload failing the workflow's schema is the same error with
  `data: [{path, message}]` (`path` a JSON Pointer).
- Steps before the requested one are "hydrated" from `state`; one missing there is
  ExecutionStateCorruptError (`execute` only: `preview` makes up missing state).
- A skipped step answers `outputs: {}, options: {skip: true}`; skip conditions are not
  evaluated in `preview`.
- The step's outputs are checked against its output schema
  (ExecutionStateOutputInvalidError), and a failure of the step's own code is
  StepExecutionFailedError (the framework's 502; 400 here, where the step's code is a template
  that cannot render the event's data, and no input gets a 5xx).

XNovu's steps are channels, after a `delay` step when the workflow has one. The enterprise comes
from `payload._xnovu.enterpriseId` (or a top-level `payload.enterpriseId`), the workflow from
the registry as the worker resolves it, and the outputs from `payload._xnovu.rendered[stepId]`:
the content the worker rendered before triggering. When that is absent (a trigger that did not
come from XNovu's worker) the step is rendered here from the workflow's inline content or the
enterprise's template. A declared step the enterprise's workflow does not have (a channel it
does not enable, a delay it does not set) is skipped. The delay step answers
`{type: "regular", amount: <delay_seconds>, unit: "seconds"}`, and the channel steps after it
need it in `state` as they need the channels before them.

`preview` lays the payload over placeholders of the workflow's schema (mock.py), as the
framework does, so a partial or empty payload still previews; what it was given is still
checked against the schema.

Called on the event loop (`on_loop=True`), a step raises WouldBlock instead of doing anything
that may wait or run long: a database read (a registry or catalog that is not fresh), a
template render, the first check against a schema (compiling it takes milliseconds), or a
payload check against a tenant's schema with regular expressions (its pattern must not stall
every other request). The caller then runs it again on a thread.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Mapping
from typing import Any

from api.bridge import errors
from api.bridge.catalog import CatalogCache
from api.bridge.mock import PLACEHOLDER, mock_payload
from api.bridge.protocol import CHANNEL_BY_STEP_ID, PostAction, step_rank
from api.bridge.schemas import DELAY_OUTPUT, OUTPUT_SCHEMAS, compiled, loop_affordable, problems
from shared.db.enums import ChannelType, WorkflowType
from shared.notifications.novu_trigger import FALLBACK_BODY, FALLBACK_SUBJECT, XNOVU_PAYLOAD_KEY
from shared.templates.cache import usable_locale
from shared.templates.renderer import RenderedContent, TemplateNotFound, get_template_renderer
from shared.templates.sandbox import RenderError
from shared.workflows.instance import DELAY_STEP_ID, ChannelStep, WorkflowInstance
from shared.workflows.registry import get_registry

log = logging.getLogger(__name__)

PAYLOAD_REQUIRED = "Event `payload` is required"


class WouldBlock(Exception):
    """The step cannot be answered on the event loop: run it on a thread."""


def execute_step(
    *,
    action: PostAction,
    workflow_id: str,
    step_id: str,
    event: Mapping[str, Any],
    catalog: CatalogCache,
    on_loop: bool = False,
) -> dict[str, Any]:
    """The answer to `execute` (or `preview`) of `step_id` of `workflow_id` for this event."""
    started = time.perf_counter()
    payload = event.get("payload")
    if payload is None:
        if action is PostAction.EXECUTE:
            raise errors.payload_invalid(workflow_id, {"message": PAYLOAD_REQUIRED})
        payload = {}
    if not isinstance(payload, dict):
        raise errors.payload_invalid(workflow_id, [{"path": "", "message": "must be object"}])
    xnovu = payload.get(XNOVU_PAYLOAD_KEY)
    xnovu = xnovu if isinstance(xnovu, dict) else {}
    variables = {k: v for k, v in payload.items() if k != XNOVU_PAYLOAD_KEY}
    enterprise_id = _enterprise(workflow_id, xnovu, payload)

    workflow = _workflow(workflow_id, enterprise_id, catalog, on_loop)
    if workflow is None:  # a per-enterprise key, and the event names no enterprise
        if action is PostAction.PREVIEW:
            return _placeholder_step(workflow_id, step_id, catalog, started)
        raise errors.payload_invalid(
            workflow_id,
            [
                {
                    "path": f"/{XNOVU_PAYLOAD_KEY}/enterpriseId",
                    "message": "is required: the workflow is defined per enterprise",
                }
            ],
        )
    is_delay = step_id == DELAY_STEP_ID
    channel = CHANNEL_BY_STEP_ID.get(step_id)
    step = workflow.step(channel) if channel is not None else None
    present = workflow.delay_seconds is not None if is_delay else step is not None
    if not present and (
        (channel is None and not is_delay) or not _declares(catalog, workflow_id, step_id, on_loop)
    ):
        raise errors.step_not_found(workflow_id, step_id)

    if action is PostAction.EXECUTE:
        _check_state(workflow_id, workflow, channel, event.get("state"))
        _check_payload(workflow_id, workflow, variables, on_loop)
    else:
        given = variables
        variables = mock_payload(workflow.payload_schema, given)
        _check_payload(workflow_id, workflow, variables, on_loop, only=set(given))

    if not present:
        return _result({}, skip=True, started=started)
    if is_delay:
        outputs: dict[str, Any] = {
            "type": "regular",
            "amount": workflow.delay_seconds,
            "unit": "seconds",
        }
        schema = DELAY_OUTPUT
    else:
        assert channel is not None and step is not None
        rendered = xnovu.get("rendered")
        carried = rendered.get(step_id) if isinstance(rendered, dict) else None
        if isinstance(carried, dict):
            outputs = _outputs(channel, carried.get("subject"), carried.get("body"))
        elif on_loop:
            raise WouldBlock
        else:
            locale = usable_locale(xnovu.get("locale"))
            content = _render(action, workflow, step, enterprise_id, variables, locale)
            outputs = _outputs(channel, content.subject, content.body)
        schema = OUTPUT_SCHEMAS[channel]
    if on_loop and not compiled(schema):
        raise WouldBlock
    failures = problems(schema, outputs)
    if failures:
        raise errors.output_invalid(workflow_id, step_id, failures)
    return _result(outputs, skip=False, started=started)


def _workflow(
    workflow_id: str, enterprise_id: uuid.UUID | None, catalog: CatalogCache, on_loop: bool
) -> WorkflowInstance | None:
    """The workflow the key means for the enterprise; None for a key only enterprises define
    when none is named; WorkflowNotFoundError when there is no such key."""
    registry = get_registry()
    if on_loop and enterprise_id is not None and not registry.is_fresh(enterprise_id):
        raise WouldBlock
    workflow = registry.get_workflow(workflow_id, enterprise_id)
    if workflow is not None:
        return workflow
    if on_loop:
        raise WouldBlock  # the catalog decides which error, and may need the database
    if enterprise_id is None and catalog.has_workflow(workflow_id):
        return None
    raise errors.workflow_not_found(
        workflow_id, str(enterprise_id) if enterprise_id is not None else None
    )


def _placeholder_step(
    workflow_id: str, step_id: str, catalog: CatalogCache, started: float
) -> dict[str, Any]:
    """`preview` of a per-enterprise key without an enterprise (Novu's dashboard knows none):
    placeholder outputs in the step's shape, as the framework mocks what it cannot run."""
    if not catalog.declares(workflow_id, step_id):
        raise errors.step_not_found(workflow_id, step_id)
    channel = CHANNEL_BY_STEP_ID.get(step_id)
    if channel is None:
        return _result(mock_payload(DELAY_OUTPUT, {}), skip=False, started=started)
    return _result(_outputs(channel, PLACEHOLDER, PLACEHOLDER), skip=False, started=started)


def _declares(catalog: CatalogCache, workflow_id: str, step_id: str, on_loop: bool) -> bool:
    """Whether the key declares a step the enterprise's workflow lacks (to skip it, not 404)."""
    if not on_loop:
        return catalog.declares(workflow_id, step_id)
    cached = catalog.peek()
    declared = cached.workflows.get(workflow_id) if cached is not None else None
    if declared is None or not declared.declares(step_id):
        raise WouldBlock  # a "no" is confirmed against the database
    return True


def _check_payload(
    workflow_id: str,
    workflow: WorkflowInstance,
    variables: dict[str, Any],
    on_loop: bool,
    *,
    only: set[str] | None = None,
) -> None:
    """The payload against the workflow's schema; with `only`, failures of other top-level
    keys (preview's placeholders, which cannot honour every pattern) are not reported."""
    schema = workflow.payload_schema
    if not schema:
        return
    if on_loop and (
        not compiled(schema)
        or (
            workflow.workflow_type is not WorkflowType.STATIC
            and not loop_affordable(schema, variables)
        )
    ):
        raise WouldBlock
    failures = problems(schema, variables)
    if only is not None:
        failures = [f for f in failures if _top_key(f["path"]) in only | {""}]
    if failures:
        raise errors.payload_invalid(workflow_id, failures)


def _top_key(pointer: str) -> str:
    """The top-level property a JSON Pointer is in ("" for the document itself)."""
    return pointer.split("/", 2)[1].replace("~1", "/").replace("~0", "~") if pointer else ""


def _enterprise(
    workflow_id: str, xnovu: Mapping[str, Any], payload: Mapping[str, Any]
) -> uuid.UUID | None:
    """The enterprise the event is for: `_xnovu.enterpriseId`, else `enterpriseId`."""
    for path, source in ((f"/{XNOVU_PAYLOAD_KEY}/enterpriseId", xnovu), ("/enterpriseId", payload)):
        value = source.get("enterpriseId")
        if value is None:
            continue
        parsed = _as_uuid(value)
        if parsed is None:
            raise errors.payload_invalid(
                workflow_id, [{"path": path, "message": "must be a UUID string"}]
            )
        return parsed
    return None


def _as_uuid(value: Any) -> uuid.UUID | None:
    if not isinstance(value, str):
        return None
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


def _check_state(
    workflow_id: str, workflow: WorkflowInstance, channel: ChannelType | None, state: Any
) -> None:
    """Every step of the workflow before this one must be in `state`, as Novu sends the results
    of the steps it ran before; a missing one means the event lost part of its history. The
    delay comes first; `channel` None is the delay step itself."""
    if channel is None:
        return
    reported = (
        {entry.get("stepId") for entry in state if isinstance(entry, dict)}
        if isinstance(state, list)
        else set()
    )
    if workflow.delay_seconds is not None and DELAY_STEP_ID not in reported:
        raise errors.state_corrupt(workflow_id, DELAY_STEP_ID)
    for earlier in workflow.steps:
        if step_rank(earlier.channel) < step_rank(channel) and earlier.step_id not in reported:
            raise errors.state_corrupt(workflow_id, earlier.step_id)


def _outputs(channel: ChannelType, subject: Any, body: Any) -> dict[str, Any]:
    """A channel's content in the shape its step type outputs."""
    if channel is ChannelType.EMAIL:
        return {"subject": subject, "body": body}
    if channel is ChannelType.PUSH:
        return {"subject": subject if subject is not None else "", "body": body}
    if channel is ChannelType.IN_APP:
        # An empty optional subject is left out: the schema wants a non-empty one or none.
        return {"subject": subject, "body": body} if subject else {"body": body}
    return {"body": body}


def _render(
    action: PostAction,
    workflow: WorkflowInstance,
    step: ChannelStep,
    enterprise_id: uuid.UUID | None,
    variables: dict[str, Any],
    locale: str | None,
) -> RenderedContent:
    """Render one step now, as the worker would have (fallback content for a missing template,
    the worker's locale)."""
    renderer = get_template_renderer()
    try:
        if step.content is not None:
            return renderer.render_source(
                step.channel,
                step.content.subject,
                step.content.body,
                variables,
                enterprise_id=enterprise_id,
            )
        assert step.template_id is not None and enterprise_id is not None
        try:
            # Novu's preview (its dashboard) shows drafts too, as our preview does; a step
            # Novu executes is a send.
            return renderer.render_template(
                step.template_id,
                enterprise_id,
                variables,
                locale=locale,
                drafts=action is PostAction.PREVIEW,
            )
        except TemplateNotFound as exc:
            log.warning("bridge: %s; %s falls back to default content", exc, step.step_id)
            return renderer.render_source(
                step.channel,
                FALLBACK_SUBJECT,
                FALLBACK_BODY,
                {**variables, "_workflow_name": workflow.name or workflow.key},
                enterprise_id=enterprise_id,
            )
    except RenderError as exc:
        raise errors.step_failed(workflow.key, step.step_id, action.value, str(exc)) from exc


def _result(outputs: dict[str, Any], *, skip: bool, started: float) -> dict[str, Any]:
    return {
        "outputs": outputs,
        "providers": {},
        "options": {"skip": skip},
        "metadata": {
            "status": "success",
            "error": False,
            "duration": (time.perf_counter() - started) * 1000,
        },
    }
