"""`POST /api/novu/webhooks`: Novu's message webhooks (delivery events), verified by signature.

No API key: Novu cannot send one. Each request must carry a Standard Webhooks signature made
with NOVU_WEBHOOK_SECRET (shared/novu/delivery_events.py); the answers are JSON errors as
elsewhere: 413 for a body over 256 KB, 403 while no secret is configured, 401 for a missing,
wrong or stale signature, 400 for a signed body that is not Novu's shape. A verified webhook
is answered 200 whatever became of it (`recorded`, `duplicate`, `ignored`,
`unknown_transaction`, `foreign_subscriber`): Svix retries any other answer.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from api.errors import ApiError
from shared.db.session import connection
from shared.novu import delivery_events
from shared.novu.delivery_events import Outcome, WebhookRefused
from shared.settings import get_settings

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api/novu", tags=["novu"])


class NovuWebhookAnswer(BaseModel):
    """What became of a verified webhook: recorded, a duplicate of one recorded (a retry or a
    replay), or not recorded and why."""

    status: Outcome


async def _bounded_body(request: Request, limit: int) -> bytes:
    """The request body, or 413 as soon as it is known to be over `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "payload_too_large", f"a webhook body is at most {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "payload_too_large", f"a webhook body is at most {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _receive(secret: str, body: bytes, headers: dict[str, str]) -> Outcome:
    signed = delivery_events.verify(secret, body, headers)
    event = delivery_events.parse(body, signed)
    if event is None:
        return Outcome.IGNORED
    with connection() as conn:
        outcome = delivery_events.record(conn, event)
    if outcome in (Outcome.UNKNOWN_TRANSACTION, Outcome.FOREIGN_SUBSCRIBER):
        log.warning(
            "Novu webhook %s (%s, transaction %s, subscriber %s) not recorded: %s",
            signed.webhook_id,
            event.event_type,
            event.transaction_id,
            event.subscriber_id,
            outcome.value,
        )
    return outcome


# The errors it answers, for the OpenAPI document (which gives each the Error schema).
_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "A signed body that is not one of Novu's webhooks"},
    401: {"description": "Missing, malformed or wrong signature, or a stale svix-timestamp"},
    403: {"description": "NOVU_WEBHOOK_SECRET is not set"},
    413: {"description": "The body is over 256 KB"},
    503: {"description": "The database is unavailable (Svix retries)"},
}


@router.post("/webhooks", response_model=NovuWebhookAnswer, responses=_ERRORS)
async def novu_webhook(request: Request) -> NovuWebhookAnswer:
    """Record one of Novu's message webhooks (`message.sent`, `message.failed`, ...) on the
    notification it names by transactionId."""
    body = await _bounded_body(request, delivery_events.MAX_BODY_BYTES)
    secret = get_settings().novu_webhook_secret
    if secret is None:
        raise ApiError(
            403, "novu_webhooks_disabled", "NOVU_WEBHOOK_SECRET is not set: webhooks are refused"
        )
    headers = {name.lower(): value for name, value in request.headers.items()}
    try:
        outcome = await run_in_threadpool(_receive, secret.get_secret_value(), body, headers)
    except WebhookRefused as exc:
        raise ApiError(exc.status, exc.code, exc.message) from exc
    return NovuWebhookAnswer(status=outcome)
