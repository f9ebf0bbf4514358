"""`POST /v1/bridge/sync`: Novu's sync of code-first workflows from a Framework bridge.

As Novu's bridge sync use case: validate the body, call the bridge's `discover` once (signed,
no retry), keep every workflow it lists, delete the synced workflows it no longer lists, make
the URL the environment's bridge, and answer 201 with the stored workflows. A bridge that
cannot be reached, or answers with an error, makes the sync fail with Novu's 400 messages.
"""

from __future__ import annotations

import secrets
from typing import Any

import httpx

from novu_emulator.bridge import BridgeRunner
from novu_emulator.config import is_http_url
from novu_emulator.state import EmulatorState, KnownWorkflow, WorkflowStep, iso_now

SYNC_PATH = "/v1/bridge/sync"

# The `code` values @novu/framework gives its errors; Novu passes such an error's message on.
FRAMEWORK_ERROR_CODES = frozenset(
    {
        "BridgeError",
        "ExecutionEventControlInvalidError",
        "ExecutionEventPayloadInvalidError",
        "ExecutionProviderOutputInvalidError",
        "ExecutionStateControlInvalidError",
        "ExecutionStateCorruptError",
        "ExecutionStateOutputInvalidError",
        "ExecutionStateResultInvalidError",
        "InvalidActionError",
        "MethodNotAllowedError",
        "MissingSecretKeyError",
        "ProviderExecutionFailedError",
        "ProviderNotFoundError",
        "SignatureExpiredError",
        "SignatureInvalidError",
        "SignatureMismatchError",
        "SignatureNotFoundError",
        "SignatureVersionInvalidError",
        "SigningKeyNotFoundError",
        "StepAlreadyExistsError",
        "StepControlCompilationFailedError",
        "StepExecutionFailedError",
        "StepNotFoundError",
        "WorkflowAlreadyExistsError",
        "WorkflowNotFoundError",
        "WorkflowPayloadInvalidError",
    }
)


class SyncFailed(Exception):
    """A sync Novu refuses: the status and message of its answer."""

    def __init__(self, status: int, message: Any) -> None:
        super().__init__(str(message))
        self.status = status
        self.message = message


def sync_body_error(body: Any) -> tuple[int, Any] | None:
    """Novu's refusal of a sync body (status, message), or None when it is acceptable."""
    if not isinstance(body, dict):
        return 400, ["bridgeUrl must be a string", "bridgeUrl should not be null or undefined"]
    url = body.get("bridgeUrl")
    if url is None:
        # The DTO lets a missing bridgeUrl through; the sync command then refuses it.
        return 400, ["bridgeUrl must be a string", "bridgeUrl should not be null or undefined"]
    if not isinstance(url, str):
        return 422, ["bridgeUrl must be a string"]
    if not is_http_url(url):
        # Novu fails on `new URL(...)` with a 500 here; the emulator answers a permanent 400.
        return 400, f"Invalid bridge URL: {url}"
    return None


async def run_sync(
    state: EmulatorState, bridge: BridgeRunner, url: str, source: str | None
) -> list[dict[str, Any]]:
    """Discover the bridge's workflows and store them; the answer's `data`. Raises SyncFailed."""
    action_url = str(httpx.URL(url).copy_merge_params({"action": "discover"}))
    try:
        response = await bridge.discover(url)
    except httpx.TimeoutException as exc:
        raise SyncFailed(400, f"Bridge request timeout for `{action_url}`") from exc
    except httpx.TransportError as exc:
        raise SyncFailed(400, _unreachable(action_url)) from exc
    answer = _json_or_none(response)
    if response.status_code >= 300:
        raise SyncFailed(*_error_for(response.status_code, answer, action_url))
    if not isinstance(answer, dict):
        # Novu reports a 2xx answer that is not JSON with this (mislabelled) message.
        raise SyncFailed(400, f"Maximum redirects exceeded for `{action_url}`")
    listed = answer.get("workflows")
    if not isinstance(listed, list) or not all(_is_workflow(item) for item in listed):
        raise SyncFailed(400, "Invalid Bridge URL Response")
    synced_at = iso_now()
    discovered = [_known(item, url, synced_at, source) for item in listed]
    state.sync_workflows(url, source, discovered)
    return [_entity(workflow) for workflow in discovered]


def _unreachable(action_url: str) -> str:
    return (
        f"Unable to reach Bridge Endpoint at `{action_url}`. Run npx novu@latest dev in Local "
        "mode, or ensure your Bridge app deployment is available."
    )


def _json_or_none(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _error_for(status: int, answer: Any, action_url: str) -> tuple[int, Any]:
    """What Novu's sync answers for a bridge that answered `status` (not 2xx)."""
    if isinstance(answer, dict) and answer.get("code") in FRAMEWORK_ERROR_CODES:
        return 400, answer.get("message")
    if status == 502:
        return 400, (
            f"Could not connect to Bridge Endpoint at `{action_url}`. Make sure you are running "
            "your local app server."
        )
    if status == 404:
        return 400, _unreachable(action_url)
    if status == 405:
        return 400, (
            f"Bridge Endpoint at `{action_url}` is not correctly configured. Ensure your "
            "`@novu/framework` integration exposes the `POST`, `GET`, and `OPTIONS` methods."
        )
    # Any other failure escapes Novu's handler: its generic 500.
    return 500, "Internal server error, contact support and provide them with the errorId"


def _is_workflow(item: Any) -> bool:
    if not isinstance(item, dict) or not isinstance(item.get("workflowId"), str):
        return False
    steps = item.get("steps")
    return isinstance(steps, list) and all(
        isinstance(step, dict)
        and isinstance(step.get("stepId"), str)
        and isinstance(step.get("type"), str)
        for step in steps
    )


def _known(item: dict[str, Any], url: str, synced_at: str, source: str | None) -> KnownWorkflow:
    options = item.get("options")
    active = not (isinstance(options, dict) and options.get("active") is False)
    return KnownWorkflow(
        workflow_id=item["workflowId"],
        steps=tuple(WorkflowStep(step["stepId"], step["type"]) for step in item["steps"]),
        bridge_url=url,
        synced_at=synced_at,
        source=source,
        active=active,
    )


def _entity(workflow: KnownWorkflow) -> dict[str, Any]:
    """The part of Novu's stored workflow entity the emulator answers a sync with."""
    return {
        "_id": secrets.token_hex(12),  # a MongoDB ObjectId's 24 hex digits
        "name": workflow.workflow_id,
        "active": workflow.active,
        "type": "BRIDGE",
        "origin": "external",
        "triggers": [{"type": "event", "identifier": workflow.workflow_id, "variables": []}],
        "steps": [
            {
                "stepId": step.step_id,
                "name": step.step_id,
                "uuid": step.step_id,
                "template": {"type": step.type, "name": step.step_id},
            }
            for step in workflow.steps
        ],
    }
