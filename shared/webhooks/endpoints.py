"""Webhook endpoints of one enterprise: register, read, change, rotate the secret, remove; and
the attempts made to them. Takes a session and never commits (the request edge does).

Every query names the enterprise as well as relying on row-level security (migration 0009).
"""

from __future__ import annotations

import base64
import datetime as dt
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from shared.db.models import WebhookAttempt, WebhookEndpoint, WebhookMessage
from shared.errors import InvalidInput, StateConflict
from shared.settings import get_settings
from shared.webhooks.addresses import UnsafeUrl, resolve
from shared.webhooks.events import EVENT_TYPES

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32
# After a rotation the old secret signs too for this long, so receivers can switch over.
PREVIOUS_SECRET_SECONDS = 24 * 3600
# Registration waits at most this long for the URL's host to resolve.
RESOLVE_TIMEOUT_SECONDS = 3.0


def new_secret() -> str:
    """`whsec_` + base64 of 32 random bytes (the Standard Webhooks format)."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def check_url(url: str) -> None:
    """Refuse (InvalidInput) a URL that is malformed or resolves to a non-public address while
    WEBHOOK_ALLOW_PRIVATE_NETWORKS is off; the check is made again at every delivery."""
    settings = get_settings()
    try:
        resolve(
            url,
            allow_private=settings.webhook_allow_private_networks,
            timeout=RESOLVE_TIMEOUT_SECONDS,
        )
    except UnsafeUrl as exc:
        raise InvalidInput(
            exc.code, exc.message, [{"field": "url", "message": exc.message}]
        ) from exc


def check_event_types(event_types: Sequence[str]) -> list[str]:
    """The event types, each known, without repeats."""
    unknown = [event for event in event_types if event not in EVENT_TYPES]
    if unknown:
        raise InvalidInput(
            "unknown_event_type",
            f"unknown event types: {', '.join(sorted(set(unknown)))[:500]}",
            {"known": list(EVENT_TYPES)},
        )
    return list(dict.fromkeys(event_types))


@dataclass(frozen=True, slots=True)
class EndpointChanges:
    """A PATCH: the fields given (None: unchanged)."""

    url: str | None = None
    event_types: Sequence[str] | None = None
    description: str | None = None
    enabled: bool | None = None


class WebhookEndpointService:
    """The endpoints of one enterprise."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def create(
        self,
        enterprise_id: uuid.UUID,
        *,
        url: str,
        event_types: Sequence[str],
        description: str | None,
    ) -> WebhookEndpoint:
        """Register an endpoint with a new secret; at most WEBHOOK_MAX_ENDPOINTS_PER_ENTERPRISE."""
        types = check_event_types(event_types)
        check_url(url)
        # Two registrations at once must not both pass the count: one waits for the other.
        self.session.execute(
            text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"),
            {"key": f"webhook-endpoints:{enterprise_id}"},
        )
        limit = get_settings().webhook_max_endpoints_per_enterprise
        count = self.session.scalar(
            select(func.count())
            .select_from(WebhookEndpoint)
            .where(WebhookEndpoint.enterprise_id == enterprise_id)
        )
        if (count or 0) >= limit:
            raise StateConflict(
                "too_many_endpoints", f"an enterprise may register at most {limit} endpoints"
            )
        row = WebhookEndpoint(
            enterprise_id=enterprise_id,
            url=url,
            event_types=types,
            description=description,
            secret=new_secret(),
        )
        self.session.add(row)
        self.session.flush()
        self.session.refresh(row)
        return row

    def list_endpoints(self, enterprise_id: uuid.UUID) -> Sequence[WebhookEndpoint]:
        """The enterprise's endpoints in id order (at most the per-enterprise limit)."""
        return self.session.scalars(
            select(WebhookEndpoint)
            .where(WebhookEndpoint.enterprise_id == enterprise_id)
            .order_by(WebhookEndpoint.id)
        ).all()

    def get(self, endpoint_id: int, enterprise_id: uuid.UUID) -> WebhookEndpoint | None:
        """One endpoint; another enterprise's is None."""
        return self.session.scalar(
            select(WebhookEndpoint).where(
                WebhookEndpoint.id == endpoint_id, WebhookEndpoint.enterprise_id == enterprise_id
            )
        )

    def update(
        self, endpoint_id: int, enterprise_id: uuid.UUID, changes: EndpointChanges
    ) -> WebhookEndpoint | None:
        """Change the fields given; enabling clears the failure record and the disable reason."""
        row = self.get(endpoint_id, enterprise_id)
        if row is None:
            return None
        if changes.url is not None and changes.url != row.url:
            check_url(changes.url)
            row.url = changes.url
        if changes.event_types is not None:
            row.event_types = check_event_types(changes.event_types)
        if changes.description is not None:
            row.description = changes.description
        if changes.enabled is True and not row.enabled:
            row.enabled = True
            row.disabled_reason = None
            row.disabled_at = None
            row.failing_since = None
            row.consecutive_failures = 0
        elif changes.enabled is False and row.enabled:
            row.enabled = False
            row.disabled_reason = "disabled through the API"
            row.disabled_at = func.now()
        self.session.flush()
        self.session.refresh(row)
        return row

    def rotate_secret(self, endpoint_id: int, enterprise_id: uuid.UUID) -> WebhookEndpoint | None:
        """A new secret; the old one still signs for PREVIOUS_SECRET_SECONDS."""
        row = self.get(endpoint_id, enterprise_id)
        if row is None:
            return None
        row.previous_secret = row.secret
        row.previous_secret_expires_at = dt.datetime.now(dt.UTC) + dt.timedelta(
            seconds=PREVIOUS_SECRET_SECONDS
        )
        row.secret = new_secret()
        self.session.flush()
        self.session.refresh(row)
        return row

    def delete(self, endpoint_id: int, enterprise_id: uuid.UUID) -> bool:
        """Remove the endpoint with its messages and attempts; False when there was none."""
        row = self.get(endpoint_id, enterprise_id)
        if row is None:
            return False
        self.session.delete(row)
        self.session.flush()
        return True

    def attempts(
        self,
        endpoint_id: int,
        enterprise_id: uuid.UUID,
        *,
        limit: int,
        before_id: int | None = None,
    ) -> Sequence[tuple[WebhookAttempt, WebhookMessage]]:
        """A keyset page of the endpoint's attempts, newest first, each with its message."""
        stmt = (
            select(WebhookAttempt, WebhookMessage)
            .join(WebhookMessage, WebhookMessage.id == WebhookAttempt.message_id)
            .where(
                WebhookAttempt.enterprise_id == enterprise_id,
                WebhookAttempt.endpoint_id == endpoint_id,
            )
        )
        if before_id is not None:
            stmt = stmt.where(WebhookAttempt.id < before_id)
        rows = self.session.execute(stmt.order_by(WebhookAttempt.id.desc()).limit(limit)).all()
        return [(attempt, message) for attempt, message in rows]

    def attempts_of_notification(
        self, notification_id: int, enterprise_id: uuid.UUID, *, limit: int = 200
    ) -> Sequence[tuple[WebhookAttempt, WebhookMessage]]:
        """The attempts of every webhook message about one notification, oldest first."""
        rows = self.session.execute(
            select(WebhookAttempt, WebhookMessage)
            .join(WebhookMessage, WebhookMessage.id == WebhookAttempt.message_id)
            .where(
                WebhookMessage.enterprise_id == enterprise_id,
                WebhookMessage.notification_id == notification_id,
            )
            .order_by(WebhookAttempt.id)
            .limit(limit)
        ).all()
        return [(attempt, message) for attempt, message in rows]
