"""Reading, cancelling and retrying notifications of the caller's enterprise."""

from __future__ import annotations

import base64
import binascii
import uuid
from typing import Annotated

from fastapi import APIRouter, Path, Query
from pydantic import AwareDatetime, Field

from api.deps import EnterpriseDep, SessionDep
from api.errors import ApiError, not_found
from api.schemas.notifications import (
    CancelRequest,
    NotificationEventPage,
    NotificationEventRead,
    NotificationPage,
    NotificationRead,
)
from shared.db.enums import NotificationStatus
from shared.notifications.publisher import publish_enterprise
from shared.notifications.schemas import SUBSCRIBER_ID_PATTERN
from shared.notifications.service import CancelResult, NotificationService
from shared.notifications.timeline import list_events
from shared.novu.budget import METERED_WAIT_SECONDS, metered_call
from shared.novu.client import get_novu_client
from shared.novu.delivery_events import delivery_summary
from shared.novu.errors import NovuError
from shared.settings import get_settings

router = APIRouter(prefix="/api/notifications", tags=["notifications"])

# Ids are BIGINT: anything outside that range cannot exist and is a 422, not a database error.
NotificationId = Annotated[int, Path(ge=1, le=2**63 - 1)]


def _encode_cursor(last_id: int) -> str:
    return base64.urlsafe_b64encode(f"id:{last_id}".encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        prefix, _, value = raw.partition(":")
        if prefix != "id":
            raise ValueError(raw)
        return int(value)
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise ApiError(400, "invalid_cursor", "the cursor is not one this API issued") from exc


@router.get("", response_model=NotificationPage)
def list_notifications(
    session: SessionDep,
    enterprise_id: EnterpriseDep,
    status: NotificationStatus | None = None,
    workflowId: Annotated[str | None, Query(max_length=255)] = None,
    tag: Annotated[
        list[Annotated[str, Field(min_length=1, max_length=100)]] | None,
        Query(max_length=20, description="only notifications carrying every tag given"),
    ] = None,
    transactionId: Annotated[str | None, Query(min_length=1, max_length=255)] = None,
    recipient: Annotated[
        str | None,
        Query(
            max_length=255,
            pattern=SUBSCRIBER_ID_PATTERN,
            description="a subscriberId or topicKey among the notification's recipients",
        ),
    ] = None,
    batchId: Annotated[uuid.UUID | None, Query(description="a bulk request's batchId")] = None,
    createdAfter: Annotated[
        AwareDatetime | None, Query(description="created at or after (ISO 8601 with offset)")
    ] = None,
    createdBefore: Annotated[
        AwareDatetime | None, Query(description="created before (ISO 8601 with offset)")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    cursor: Annotated[str | None, Query(max_length=100)] = None,
) -> NotificationPage:
    """Newest first, in keyset pages: pass `nextCursor` back as `cursor`, with the same
    filters, for the next page. Filters combine (every one must match)."""
    if createdAfter is not None and createdBefore is not None and createdAfter > createdBefore:
        raise ApiError(422, "invalid_range", "createdAfter must not be later than createdBefore")
    limit = min(limit, get_settings().max_page_size)
    rows = NotificationService(session).list_notifications(
        enterprise_id,
        status=status,
        workflow_key=workflowId,
        tags=tag,
        transaction_id=transactionId,
        recipient=recipient,
        batch_id=batchId,
        created_after=createdAfter,
        created_before=createdBefore,
        limit=limit + 1,
        before_id=_decode_cursor(cursor) if cursor else None,
    )
    page = rows[:limit]
    next_cursor = _encode_cursor(page[-1].id) if len(rows) > limit else None
    return NotificationPage(items=[NotificationRead.of(r) for r in page], nextCursor=next_cursor)


@router.get("/{notification_id}", response_model=NotificationRead)
def get_notification(
    notification_id: NotificationId, session: SessionDep, enterprise_id: EnterpriseDep
) -> NotificationRead:
    """One notification, with its per-channel delivery as Novu's webhooks reported it;
    another enterprise's id answers 404."""
    row = NotificationService(session).get_notification(notification_id, enterprise_id)
    if row is None:
        raise not_found("notification")
    return NotificationRead.of(row, delivery_summary(session, enterprise_id, row.id))


def cancel_hold_seconds() -> float:
    """How long a cancel holds a row of unknown outcome from the workers: longer than its Novu
    call can take (the wait for a rate-limit token, then httpx's pool, connect, write and read
    timeouts one after another), with a margin."""
    settings = get_settings()
    call = 2 * settings.novu_connect_timeout_seconds + 2 * settings.novu_timeout_seconds
    return METERED_WAIT_SECONDS + call + 5.0


@router.post("/{notification_id}/cancel", response_model=NotificationRead)
def cancel_notification(
    notification_id: NotificationId,
    session: SessionDep,
    enterprise_id: EnterpriseDep,
    body: CancelRequest | None = None,
) -> NotificationRead:
    """PENDING → RETRACTED; SENT, or PENDING after an attempt whose answer was lost, →
    RETRACTED only when Novu confirms it cancelled the transaction."""

    def cancel_at_novu(transaction_id: str) -> bool:
        # A cancel costs an Events token of Novu's rate limit, as a trigger does.
        return metered_call(lambda: get_novu_client().cancel(transaction_id))

    try:
        outcome, row = NotificationService(session).cancel_notification(
            notification_id,
            enterprise_id,
            reason=body.reason if body else None,
            cancel_at_novu=cancel_at_novu,
            commit=session.commit,
            hold_seconds=cancel_hold_seconds(),
        )
    except NovuError as exc:  # a SENT row's cancel: nothing changed
        raise ApiError(
            502, "novu_unavailable", f"Novu could not cancel the transaction: {exc}"
        ) from exc
    session.commit()
    if outcome is CancelResult.NOT_FOUND or row is None:
        raise not_found("notification")
    if outcome is CancelResult.ALREADY_DELIVERED:
        raise ApiError(
            409, "already_delivered", "Novu has already delivered this notification's steps"
        )
    if outcome is CancelResult.DELIVERY_UNKNOWN:
        raise ApiError(
            409,
            "delivery_unknown",
            "the notification may have been delivered: an earlier attempt's answer from Novu "
            "was lost, so Novu may hold it, and Novu did not confirm the cancel (or could not "
            "be reached); the notification is left as it was and delivered as usual",
            details={"notification_status": row.notification_status.value},
        )
    if outcome is CancelResult.INVALID_STATE:
        raise ApiError(
            409,
            "invalid_state",
            f"a {row.notification_status.value} notification cannot be cancelled",
        )
    return NotificationRead.of(row)


@router.post("/{notification_id}/retry", response_model=NotificationRead, status_code=202)
def retry_notification(
    notification_id: NotificationId, session: SessionDep, enterprise_id: EnterpriseDep
) -> NotificationRead:
    """FAILED → PENDING with a fresh attempt budget, and publish its delivery."""
    moved, row = NotificationService(session).retry_notification(notification_id, enterprise_id)
    session.commit()
    if row is None:
        raise not_found("notification")
    if not moved:
        raise ApiError(
            409,
            "invalid_state",
            f"a {row.notification_status.value} notification cannot be retried",
        )
    publish_enterprise(enterprise_id, [row.id])
    return NotificationRead.of(row)


@router.get("/{notification_id}/events", response_model=NotificationEventPage)
def list_notification_events(
    notification_id: NotificationId,
    session: SessionDep,
    enterprise_id: EnterpriseDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(max_length=100)] = None,
) -> NotificationEventPage:
    """The notification's timeline, oldest first, in keyset pages: pass `nextCursor` back as
    `cursor` for the next page. Another enterprise's id answers 404."""
    if NotificationService(session).get_notification(notification_id, enterprise_id) is None:
        raise not_found("notification")
    limit = min(limit, get_settings().max_page_size)
    rows = list_events(
        session,
        enterprise_id,
        notification_id,
        after_id=_decode_cursor(cursor) if cursor else None,
        limit=limit + 1,
    )
    page = rows[:limit]
    next_cursor = _encode_cursor(page[-1].id) if len(rows) > limit else None
    return NotificationEventPage(
        items=[NotificationEventRead.of(r) for r in page], nextCursor=next_cursor
    )
