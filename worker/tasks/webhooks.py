"""Status webhook tasks: beat's dispatch (maintenance queue) and the delivery of one claim
(webhooks queue, consumed by workers of its own: docs/architecture.md, "Status webhooks")."""

from __future__ import annotations

import uuid

from shared.queue import TaskName
from shared.webhooks.delivery import deliver_claim, dispatch
from worker.celery_app import app


# Periodic (every second): no task events, so Flower's task list keeps the deliveries.
@app.task(name=TaskName.DISPATCH_WEBHOOKS.value, acks_late=False, send_events=False)
def dispatch_webhooks() -> int:
    """Claim due webhook messages per endpoint and publish a delivery task per claim."""
    return dispatch()


# Not acked late: a task lost with its worker leaves its claim's lease to run out, and the next
# dispatch claims the messages again.
@app.task(name=TaskName.DELIVER_WEBHOOKS.value, acks_late=False)
def deliver_webhooks(enterprise_id: str, endpoint_id: int, claim_id: str) -> dict[str, int]:
    """Send one claim's messages to their endpoint and record each attempt."""
    return deliver_claim(uuid.UUID(enterprise_id), endpoint_id, uuid.UUID(claim_id))
