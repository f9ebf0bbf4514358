"""Names and numbers of the bridge protocol, as @novu/framework 2.13.2 uses them.

Read off the framework's source (packages/framework/src/constants/*.constants.ts,
handler.ts) and checked against the published 2.13.2 package.
"""

from __future__ import annotations

import enum

from shared.db.enums import ChannelType
from shared.workflows.instance import STEP_IDS

# The framework release whose protocol this bridge speaks; reported as `sdkVersion` so that Novu
# treats the bridge like that SDK. `frameworkVersion` is the protocol's own date-stamped version.
SDK_VERSION = "2.13.2"
FRAMEWORK_VERSION = "2024-06-26"
SERVER_NAME = "xnovu"

SIGNATURE_HEADER = "novu-signature"
# Sent by Novu's API next to the current header; framework 2.13.2 no longer reads it, older ones
# did, and a bridge behind an older Novu needs it.
LEGACY_SIGNATURE_HEADER = "x-novu-signature"
# A signature is accepted up to five minutes away from our clock, either way (2.13.2 rejects
# timestamps from the future too).
SIGNATURE_TOLERANCE_MS = 5 * 60 * 1000

# Step types in the order the bridge declares a workflow's steps. Channels are independent, so
# one fixed order keeps step ids and their order stable whatever order a workflow lists them in.
STEP_ORDER: tuple[ChannelType, ...] = (
    ChannelType.EMAIL,
    ChannelType.IN_APP,
    ChannelType.SMS,
    ChannelType.PUSH,
    ChannelType.CHAT,
)
CHANNEL_BY_STEP_ID: dict[str, ChannelType] = {STEP_IDS[c]: c for c in STEP_ORDER}


class GetAction(enum.StrEnum):
    DISCOVER = "discover"
    HEALTH_CHECK = "health-check"
    CODE = "code"


class PostAction(enum.StrEnum):
    EXECUTE = "execute"
    PREVIEW = "preview"


class ErrorCode(enum.StrEnum):
    """The framework's error codes this bridge answers with (framework ErrorCodeEnum)."""

    EXECUTION_EVENT_PAYLOAD_INVALID = "ExecutionEventPayloadInvalidError"
    EXECUTION_STATE_CORRUPT = "ExecutionStateCorruptError"
    EXECUTION_STATE_OUTPUT_INVALID = "ExecutionStateOutputInvalidError"
    INVALID_ACTION = "InvalidActionError"
    METHOD_NOT_ALLOWED = "MethodNotAllowedError"
    SIGNATURE_EXPIRED = "SignatureExpiredError"
    SIGNATURE_INVALID = "SignatureInvalidError"
    SIGNATURE_MISMATCH = "SignatureMismatchError"
    SIGNATURE_NOT_FOUND = "SignatureNotFoundError"
    STEP_EXECUTION_FAILED = "StepExecutionFailedError"
    STEP_NOT_FOUND = "StepNotFoundError"
    WORKFLOW_NOT_FOUND = "WorkflowNotFoundError"
    BRIDGE_ERROR = "BridgeError"


def step_rank(channel: ChannelType) -> int:
    """Position of a channel's step in a workflow's declared steps."""
    return STEP_ORDER.index(channel)


def response_headers() -> dict[str, str]:
    """Headers on every bridge answer, as the framework sends them (CORS and its version)."""
    return {
        "access-control-allow-origin": "*",
        "access-control-allow-methods": "GET, POST",
        "access-control-allow-headers": "*",
        "access-control-max-age": "604800",
        "novu-framework-version": FRAMEWORK_VERSION,
        "novu-framework-sdk": SDK_VERSION,
        "novu-framework-server": SERVER_NAME,
    }
