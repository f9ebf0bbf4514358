"""XNovu's client for Novu's REST API: trigger, bulk trigger, cancel; the worker owns retries."""

from shared.novu.client import (
    NovuClient,
    NovuRequest,
    bulk_idempotency_key,
    trigger_idempotency_key,
)
from shared.novu.errors import (
    NovuError,
    NovuPermanentError,
    NovuRetryableError,
    parse_retry_after,
    result_error,
)
from shared.novu.retry import backoff_delay
from shared.novu.schemas import (
    RateLimit,
    Recipient,
    Subscriber,
    Tenant,
    Topic,
    TriggerEvent,
    TriggerResult,
    TriggerStatus,
)

__all__ = [
    "NovuClient",
    "NovuError",
    "NovuPermanentError",
    "NovuRequest",
    "NovuRetryableError",
    "RateLimit",
    "Recipient",
    "Subscriber",
    "Tenant",
    "Topic",
    "TriggerEvent",
    "TriggerResult",
    "TriggerStatus",
    "backoff_delay",
    "bulk_idempotency_key",
    "parse_retry_after",
    "result_error",
    "trigger_idempotency_key",
]
