"""Python client for the XNovu notification API.

    from xnovu_client import XNovu

    with XNovu("http://127.0.0.1:8000", api_key) as xnovu:
        sent = xnovu.trigger("user-signup", {"userId": "u-1", "email": "ada@example.com"})
        print(xnovu.get(sent.notification_id).status)

`AsyncXNovu` is the same, awaited. Errors are `xnovu_client.errors` exceptions.
"""

from xnovu_client._core import NO_RETRIES, RetryPolicy, trigger_body
from xnovu_client.aio import AsyncXNovu
from xnovu_client.client import XNovu
from xnovu_client.errors import (
    APIError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    RateLimitedError,
    ServerError,
    ServiceUnavailableError,
    TransportError,
    ValidationError,
    XNovuError,
)
from xnovu_client.models import (
    Batch,
    BulkEventResult,
    BulkResult,
    Notification,
    NotificationEvent,
    Preview,
    Template,
    TriggerResult,
    Workflow,
    WorkflowList,
)

__all__ = [
    "NO_RETRIES",
    "APIError",
    "AsyncXNovu",
    "AuthenticationError",
    "BadRequestError",
    "Batch",
    "BulkEventResult",
    "BulkResult",
    "ConflictError",
    "NotFoundError",
    "Notification",
    "NotificationEvent",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "Preview",
    "RateLimitedError",
    "RetryPolicy",
    "ServerError",
    "ServiceUnavailableError",
    "Template",
    "TransportError",
    "TriggerResult",
    "ValidationError",
    "Workflow",
    "WorkflowList",
    "XNovu",
    "XNovuError",
    "trigger_body",
]
