"""Following a bulk request: its notifications' counts by status."""

from __future__ import annotations

import uuid

from fastapi import APIRouter

from api.deps import EnterpriseDep, SessionDep
from api.errors import not_found
from api.schemas.batches import BatchRead
from shared.notifications.service import NotificationService

router = APIRouter(prefix="/api/batches", tags=["notifications"])


@router.get("/{batch_id}", response_model=BatchRead)
def get_batch(batch_id: uuid.UUID, session: SessionDep, enterprise_id: EnterpriseDep) -> BatchRead:
    """The `batchId` of a bulk request: its notifications in this enterprise by status; 404
    for an unknown batch or another enterprise's. List them with
    `GET /api/notifications?batchId=`."""
    summary = NotificationService(session).batch_summary(batch_id, enterprise_id)
    if summary is None:
        raise not_found("batch")
    return BatchRead.of(summary)
