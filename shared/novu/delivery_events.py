"""Novu's delivery events in: verify, read and record Novu's message webhooks.

Novu reports what each channel step did with outbound webhooks sent through Svix
(https://docs.novu.co/platform/developer/webhooks and .../webhooks/event-types; Novu's source,
libs/application-generic/src/webhooks: `SendWebhookMessage` and `messageWebhookMapper`).

- **Signature** (Standard Webhooks, Svix's scheme): headers `svix-id` (the message id, the
  same on every retry of one message), `svix-timestamp` (Unix seconds of this attempt) and
  `svix-signature` (`v1,<base64 HMAC-SHA256 of "<id>.<timestamp>.<raw body>">`, the key being
  the base64 after `whsec_` of the endpoint's secret; several, space separated, while a secret
  rotates). Checked by the `standardwebhooks` package, with its 5 minutes of tolerance either
  way for the timestamp; `webhook-*` headers are taken too, `svix-*` first.
- **Body**: `{id: "evt_...", type, object: "message", timestamp (ISO 8601), environmentId,
  data: {object: <message>, error?}}`. The fields of the message we rely on:
  `transactionId` (our notification's, which we set on the trigger), `subscriberId` (the
  subscriber's external id: ours is `<enterprise uuid>_<id>` while NOVU_NAMESPACE_SUBSCRIBERS
  is on), `channel` (`email`, `sms`, `in_app`, `push`, `chat`), and, kept as given when
  present: `stepId`, `workflowId` / `templateIdentifier`, `providerId`, `_id` (Novu's message
  id), `status`, `errorId`, `errorText`, `providerResponseId`, and `data.error` (an excerpt).
- **Types**: every `message.*` event (`message.sent`, `message.delivered`, `message.failed`,
  `message.seen`, `message.read`, `message.unread`, `message.archived`, `message.snoozed`,
  ...) naming one of our notifications is recorded, new ones as they come; other objects
  (`workflow.*`, `preference.*`) are answered 200 and ignored.

What a verified message event becomes (`record`), in one transaction: the notification is
found by its transactionId across enterprises (a system read: the request names no
enterprise), the event's subscriberId must be in that enterprise's namespace (else it is
ignored: an event about another enterprise's subscriber never lands on this notification),
then, as that enterprise under row-level security, one `novu_delivery_event` row (unique by
`svix-id`: a message delivered twice is recorded once) and one timeline event
`delivery.<type>` (shared/notifications/timeline.py).
"""

from __future__ import annotations

import datetime as dt
import enum
import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from shared.db.models import Notification, NovuDeliveryEvent
from shared.db.session import SCOPE_SQL, scope_parameters
from shared.notifications.novu_trigger import subscriber_namespace
from shared.notifications.timeline import NewEvent, append_events, excerpt
from shared.payloads import json_depth

# A webhook body larger than this is refused (413) before it is read further: Novu's message
# events are a few KB.
MAX_BODY_BYTES = 256 * 1024
# How deeply a webhook's JSON may nest: Novu's message object is 3 to 5 levels, a provider's
# error a few more.
MAX_DEPTH = 32
# The longest `svix-id` kept (Svix's are `msg_` and 27 characters).
MAX_ID_CHARS = 200
# Each text field is kept to this many characters; errorText and the error excerpt to more.
FIELD_CHARS = 255
ERROR_CHARS = 1000
# Timeline kinds are at most 64 characters (migration 0007): `delivery.` + the event type.
_EVENT_TYPE = re.compile(r"[a-z][a-z0-9_]*(\.[a-z0-9_]+)+")
MAX_TYPE_CHARS = 64 - len("delivery.")
TIMELINE_PREFIX = "delivery."


class WebhookRefused(Exception):
    """A webhook we answer with a 4xx: `status`, a stable `code` and a message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


class Outcome(enum.StrEnum):
    """What became of a verified webhook (all answered 200: Svix retries anything else)."""

    RECORDED = "recorded"
    DUPLICATE = "duplicate"
    # Not a message event (workflow.*, preference.*), or one without a transactionId.
    IGNORED = "ignored"
    UNKNOWN_TRANSACTION = "unknown_transaction"
    FOREIGN_SUBSCRIBER = "foreign_subscriber"


@dataclass(frozen=True, slots=True)
class MessageEvent:
    """The fields of one of Novu's message webhooks that we keep."""

    svix_id: str
    event_type: str
    occurred_at: dt.datetime
    transaction_id: str
    channel: str | None
    # As Novu sent it: in the enterprise's namespace when NOVU_NAMESPACE_SUBSCRIBERS is on.
    subscriber_id: str | None
    step_id: str | None
    provider_id: str | None
    novu_message_id: str | None
    detail: dict[str, Any]


def _header(headers: Mapping[str, str], name: str) -> str | None:
    return headers.get(f"svix-{name}") or headers.get(f"webhook-{name}")


@dataclass(frozen=True, slots=True)
class Signed:
    """What a verified signature vouches for besides the body: the message id and when."""

    webhook_id: str
    timestamp: str


def verify(secret: str, body: bytes, headers: Mapping[str, str]) -> Signed:
    """Check the Standard Webhooks signature of a webhook (lower-case `headers`), or raise
    WebhookRefused (401) for a missing, malformed, stale or wrong signature."""
    webhook_id = _header(headers, "id")
    timestamp = _header(headers, "timestamp")
    signature = _header(headers, "signature")
    if not (webhook_id and timestamp and signature):
        raise WebhookRefused(
            401, "signature_missing", "svix-id, svix-timestamp and svix-signature are required"
        )
    standard = {
        "webhook-id": webhook_id,
        "webhook-timestamp": timestamp,
        "webhook-signature": signature,
    }
    try:
        Webhook(secret).verify(body, standard, json_parse=False)
    except WebhookVerificationError as exc:
        if "timestamp" in str(exc).lower():
            raise WebhookRefused(
                401,
                "timestamp_out_of_tolerance",
                "svix-timestamp is not within 5 minutes of our clock (a stale or replayed webhook)",
            ) from exc
        raise WebhookRefused(401, "signature_invalid", "the signature does not match") from exc
    except (ValueError, TypeError) as exc:
        # The library assumes well-formed headers and a UTF-8 body: a signature without its
        # `v1,` part, bad base64 or other bytes raise these instead.
        raise WebhookRefused(401, "signature_invalid", "the signature is malformed") from exc
    if len(webhook_id) > MAX_ID_CHARS:
        raise WebhookRefused(400, "invalid_webhook", "svix-id is too long")
    return Signed(webhook_id, timestamp)


def _text(value: Any, limit: int = FIELD_CHARS) -> str | None:
    if not isinstance(value, str) or not value:
        return None
    return value[:limit]


def _timestamp(value: Any, fallback: str) -> dt.datetime:
    """The event's ISO 8601 timestamp (Novu's clock), else the signed svix-timestamp."""
    if isinstance(value, str):
        try:
            parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            parsed = None
        if parsed is not None:
            return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=dt.UTC)
    return dt.datetime.fromtimestamp(int(float(fallback)), dt.UTC)


def parse(body: bytes, signed: Signed) -> MessageEvent | None:
    """A verified webhook body as a MessageEvent; None for what we ignore (not a message
    event, no transactionId); WebhookRefused (400) for a body that is not Novu's shape."""
    try:
        document = json.loads(body)
    except (ValueError, RecursionError) as exc:  # RecursionError: nested past the parser
        raise WebhookRefused(400, "invalid_json", "the body is not JSON") from exc
    if json_depth(document) > MAX_DEPTH:
        raise WebhookRefused(400, "invalid_webhook", f"the body nests over {MAX_DEPTH} levels")
    if not isinstance(document, dict) or not isinstance(document.get("type"), str):
        raise WebhookRefused(400, "invalid_webhook", "the body is not an object with a `type`")
    event_type = document["type"]
    if not event_type.startswith("message."):
        return None
    if len(event_type) > MAX_TYPE_CHARS or not _EVENT_TYPE.fullmatch(event_type):
        raise WebhookRefused(400, "invalid_webhook", "`type` is not an event type")
    data = document.get("data")
    if not isinstance(data, dict):
        raise WebhookRefused(400, "invalid_webhook", "`data` is not an object")
    inner = data.get("object")
    message: dict[str, Any] = inner if isinstance(inner, dict) else data
    transaction_id = _text(message.get("transactionId"))
    if transaction_id is None:
        return None
    detail = {
        key: value
        for key, value in {
            "eventId": _text(document.get("id")),
            "workflowId": _text(message.get("workflowId") or message.get("templateIdentifier")),
            "status": _text(message.get("status")),
            "errorId": _text(message.get("errorId")),
            "errorText": _text(message.get("errorText"), ERROR_CHARS),
            "providerResponseId": _text(message.get("providerResponseId")),
            "error": excerpt(data.get("error"), ERROR_CHARS),
        }.items()
        if value is not None
    }
    return MessageEvent(
        svix_id=signed.webhook_id,
        event_type=event_type,
        occurred_at=_timestamp(document.get("timestamp"), signed.timestamp),
        transaction_id=transaction_id,
        channel=_text(message.get("channel")),
        subscriber_id=_text(message.get("subscriberId"), 2 * FIELD_CHARS),
        step_id=_text(message.get("stepId")),
        provider_id=_text(message.get("providerId")),
        novu_message_id=_text(message.get("_id")),
        detail=detail,
    )


def _callers_subscriber(subscriber_id: str | None, enterprise_id: uuid.UUID) -> str | None:
    """The caller's subscriberId of a namespaced one; ValueError when it is not in the
    enterprise's namespace (or missing while namespacing is on)."""
    namespace = subscriber_namespace(enterprise_id)
    if not namespace:
        return subscriber_id
    if subscriber_id is None or not subscriber_id.startswith(namespace):
        raise ValueError(subscriber_id)
    return subscriber_id[len(namespace) :]


def record(connection: Connection, event: MessageEvent) -> Outcome:
    """Record a verified message event on its notification, with its timeline event, in one
    transaction on `connection` (see the module docstring)."""
    with connection.begin():
        # A system read (the request names no enterprise): transactionIds are unique across
        # enterprises (ent_notification's constraint), so this finds at most one row.
        found = connection.execute(
            select(Notification.id, Notification.enterprise_id).where(
                Notification.transaction_id == event.transaction_id
            )
        ).one_or_none()
        if found is None:
            return Outcome.UNKNOWN_TRANSACTION
        notification_id, enterprise_id = found
        assert enterprise_id is not None  # ent_notification's enterprise_required check
        try:
            subscriber = _callers_subscriber(event.subscriber_id, enterprise_id)
        except ValueError:
            return Outcome.FOREIGN_SUBSCRIBER
        # From here on as the enterprise, under row-level security, as every enterprise write.
        connection.exec_driver_sql(SCOPE_SQL, scope_parameters(enterprise_id))
        inserted = connection.execute(
            insert(NovuDeliveryEvent)
            .values(
                enterprise_id=enterprise_id,
                notification_id=notification_id,
                svix_id=event.svix_id,
                event_type=event.event_type,
                channel=event.channel,
                subscriber_id=subscriber,
                step_id=event.step_id,
                provider_id=event.provider_id,
                novu_message_id=event.novu_message_id,
                occurred_at=event.occurred_at,
                detail=event.detail,
            )
            .on_conflict_do_nothing(index_elements=["svix_id"])
            .returning(NovuDeliveryEvent.id)
        ).scalar_one_or_none()
        if inserted is None:
            return Outcome.DUPLICATE
        timeline = {
            "channel": event.channel,
            "subscriberId": subscriber,
            "stepId": event.step_id,
            "providerId": event.provider_id,
            "occurredAt": event.occurred_at.isoformat(),
            **event.detail,
        }
        append_events(
            connection,
            enterprise_id,
            [
                NewEvent(
                    notification_id,
                    TIMELINE_PREFIX + event.event_type,
                    detail={k: v for k, v in timeline.items() if v is not None},
                )
            ],
        )
    return Outcome.RECORDED


@dataclass(frozen=True, slots=True)
class ChannelDelivery:
    """The delivery summary of one channel: its latest event, and how many of each type."""

    status: str
    at: dt.datetime
    events: int
    by_type: dict[str, int]


def delivery_summary(
    session: Session, enterprise_id: uuid.UUID, notification_id: int
) -> dict[str, ChannelDelivery]:
    """Per channel (`unknown` when Novu named none): the type of its latest event by Novu's
    clock (ties: the last received) without `message.`, when, and counts by type."""
    groups = session.execute(
        select(
            NovuDeliveryEvent.channel,
            NovuDeliveryEvent.event_type,
            func.count(),
            func.max(NovuDeliveryEvent.occurred_at),
            func.max(NovuDeliveryEvent.id),
        )
        .where(
            NovuDeliveryEvent.enterprise_id == enterprise_id,
            NovuDeliveryEvent.notification_id == notification_id,
        )
        .group_by(NovuDeliveryEvent.channel, NovuDeliveryEvent.event_type)
    ).all()
    latest: dict[str, tuple[dt.datetime, int, str]] = {}
    counts: dict[str, dict[str, int]] = {}
    for channel, event_type, count, at, last_id in groups:
        key = channel or "unknown"
        counts.setdefault(key, {})[event_type] = count
        if key not in latest or (at, last_id) > latest[key][:2]:
            latest[key] = (at, last_id, event_type)
    return {
        key: ChannelDelivery(
            status=event_type.removeprefix("message."),
            at=at,
            events=sum(counts[key].values()),
            by_type=counts[key],
        )
        for key, (at, _, event_type) in sorted(latest.items())
    }
