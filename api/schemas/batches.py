"""Response body of `GET /api/batches/{id}`."""

from __future__ import annotations

import datetime as dt
import uuid

from pydantic import BaseModel

from shared.db.enums import NotificationStatus
from shared.notifications.service import BatchSummary


class BatchRead(BaseModel):
    """The notifications one bulk request created in the caller's enterprise: how many, how
    many in each status (every status present, 0 when none), when they were recorded."""

    batchId: uuid.UUID
    total: int
    byStatus: dict[NotificationStatus, int]
    createdAt: dt.datetime

    @classmethod
    def of(cls, summary: BatchSummary) -> BatchRead:
        return cls(
            batchId=summary.batch_id,
            total=summary.total,
            byStatus=summary.by_status,
            createdAt=summary.created_at,
        )
