"""Errors of the bridge protocol: `{message, code, data?}` with the framework's status codes.

These are not the API's `{error: {...}}` errors: Novu reads `code` to tell a framework error
(shown to the user, not retried) from an outage.
"""

from __future__ import annotations

from typing import Any

from api.bridge.protocol import ErrorCode, GetAction, PostAction


class BridgeError(Exception):
    """A failure answered to Novu as `{message, code, data?}` with `status_code`."""

    def __init__(self, status_code: int, code: ErrorCode, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.code = code
        self.message = message
        self.data = data

    def body(self) -> dict[str, Any]:
        """The JSON body; `data` only when there is some, as the framework leaves it out."""
        body: dict[str, Any] = {"message": self.message, "code": self.code.value}
        if self.data is not None:
            body["data"] = self.data
        return body


def signature_not_found() -> BridgeError:
    return BridgeError(
        401,
        ErrorCode.SIGNATURE_NOT_FOUND,
        "Signature not found: sign the request in the `novu-signature` header",
    )


def signature_invalid() -> BridgeError:
    return BridgeError(
        401,
        ErrorCode.SIGNATURE_INVALID,
        "Signature is invalid: expected `t=<unix ms>,v1=<hex HMAC-SHA256>` in the "
        "`novu-signature` header",
    )


def signature_expired() -> BridgeError:
    return BridgeError(
        401,
        ErrorCode.SIGNATURE_EXPIRED,
        "Signature expired: its timestamp must be within 5 minutes of the bridge's clock",
    )


def signature_mismatch() -> BridgeError:
    return BridgeError(
        401,
        ErrorCode.SIGNATURE_MISMATCH,
        "Signature does not match the request: check the secret key and send the body unchanged",
    )


def invalid_action(action: str, method: str) -> BridgeError:
    allowed = [a.value for a in (PostAction if method == "POST" else GetAction)]
    names = ", ".join(f"`{a}`" for a in allowed)
    return BridgeError(
        400,
        ErrorCode.INVALID_ACTION,
        f"Invalid query string: `action`=`{action}`; a {method} takes one of {names}",
        {"action": action, "allowed": allowed},
    )


def method_not_allowed(method: str) -> BridgeError:
    return BridgeError(
        405,
        ErrorCode.METHOD_NOT_ALLOWED,
        f"Method {method} is not allowed: use GET, POST or OPTIONS",
    )


def workflow_not_found(workflow_id: str, enterprise_id: str | None = None) -> BridgeError:
    data: dict[str, Any] = {"workflowId": workflow_id}
    if enterprise_id is not None:
        data["enterpriseId"] = enterprise_id
    return BridgeError(
        404,
        ErrorCode.WORKFLOW_NOT_FOUND,
        f"Workflow with id: `{workflow_id}` does not exist",
        data,
    )


def step_not_found(workflow_id: str, step_id: str) -> BridgeError:
    return BridgeError(
        404,
        ErrorCode.STEP_NOT_FOUND,
        f"Step with id: `{step_id}` does not exist in workflow `{workflow_id}`",
        {"workflowId": workflow_id, "stepId": step_id},
    )


def payload_invalid(workflow_id: str, data: Any) -> BridgeError:
    return BridgeError(
        400,
        ErrorCode.EXECUTION_EVENT_PAYLOAD_INVALID,
        f"Workflow with id: `{workflow_id}` has an invalid `payload`",
        data,
    )


def state_corrupt(workflow_id: str, step_id: str) -> BridgeError:
    return BridgeError(
        400,
        ErrorCode.EXECUTION_STATE_CORRUPT,
        f"Workflow with id: `{workflow_id}` has a corrupt state: step `{step_id}` ran before "
        "this one but is missing from `state`",
        {"workflowId": workflow_id, "stepId": step_id},
    )


def output_invalid(workflow_id: str, step_id: str, data: Any) -> BridgeError:
    return BridgeError(
        400,
        ErrorCode.EXECUTION_STATE_OUTPUT_INVALID,
        f"Step `{step_id}` of workflow `{workflow_id}` produced outputs that fail its schema",
        data,
    )


def step_failed(workflow_id: str, step_id: str, action: str, reason: str) -> BridgeError:
    # The framework answers 502 for a step whose own code throws. Here the step is a template
    # that cannot render this event's data: a client error (no input gets a 5xx from XNovu),
    # which Novu does not retry either.
    return BridgeError(
        400,
        ErrorCode.STEP_EXECUTION_FAILED,
        f"Failed to {action} step `{step_id}` of workflow `{workflow_id}`: {reason}",
        {"workflowId": workflow_id, "stepId": step_id, "reason": reason},
    )


def unavailable() -> BridgeError:
    return BridgeError(
        503, ErrorCode.BRIDGE_ERROR, "The bridge's database is unavailable; try again shortly"
    )


def unexpected() -> BridgeError:
    return BridgeError(500, ErrorCode.BRIDGE_ERROR, "Unknown BridgeError")
