"""An enterprise's delivery figures over a time range, from the database: counts by status
and workflow, and trigger->SENT latency percentiles (`GET /api/stats/notifications`).

Both are aggregates over the rows created in the range, found through the
(enterprise_id, created_at) index and confined by row-level security to the session's
enterprise. The range is bounded (MAX_RANGE) so that one request reads at most that many
days of one enterprise's rows, within the statement timeout. Latency is from when a
notification was due (its `scheduledFor`, else its creation) to Novu's acceptance
(`processed_at`), for those SENT.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

MAX_RANGE = dt.timedelta(days=31)
PERCENTILES = (0.5, 0.9, 0.99)

_COUNTS = text(
    """
    SELECT workflow_key, notification_status::text AS status, count(*) AS n
    FROM notify.ent_notification
    WHERE enterprise_id = :enterprise AND created_at >= :start AND created_at < :end
    GROUP BY workflow_key, notification_status
    """
)
_LATENCY = text(
    """
    SELECT count(*) AS n,
           percentile_cont(CAST(:percentiles AS double precision[]))
               WITHIN GROUP (ORDER BY ms) AS at,
           max(ms) AS slowest
    FROM (
        SELECT 1000 * extract(epoch FROM processed_at - greatest(created_at,
                   coalesce(scheduled_for, created_at))) AS ms
        FROM notify.ent_notification
        WHERE enterprise_id = :enterprise AND created_at >= :start AND created_at < :end
          AND notification_status = 'SENT' AND processed_at IS NOT NULL
    ) AS sent
    """
)


@dataclass
class DeliveryFigures:
    """What `delivery_figures` answers."""

    start: dt.datetime
    end: dt.datetime
    total: int = 0
    by_status: dict[str, int] = field(default_factory=dict)
    by_workflow: dict[str, dict[str, int]] = field(default_factory=dict)
    latency_ms: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        """The API's answer (camelCase)."""
        return {
            "createdAfter": self.start.isoformat(),
            "createdBefore": self.end.isoformat(),
            "total": self.total,
            "byStatus": self.by_status,
            "byWorkflow": self.by_workflow,
            "sentLatencyMs": self.latency_ms,
        }


def delivery_figures(
    session: Session, enterprise_id: uuid.UUID, start: dt.datetime, end: dt.datetime
) -> DeliveryFigures:
    """The enterprise's notifications created in [start, end): counts by status, by workflow
    and status, and the latency percentiles of those SENT (None when there are none)."""
    figures = DeliveryFigures(start, end)
    window = {"enterprise": enterprise_id, "start": start, "end": end}
    for workflow, status, count in session.execute(_COUNTS, window):
        figures.total += count
        figures.by_status[status] = figures.by_status.get(status, 0) + count
        figures.by_workflow.setdefault(workflow, {})[status] = count
    row = session.execute(_LATENCY, {**window, "percentiles": list(PERCENTILES)}).one()
    at = row.at or [None] * len(PERCENTILES)
    figures.latency_ms = {
        "count": row.n,
        **{f"p{round(p * 100)}": _ms(value) for p, value in zip(PERCENTILES, at, strict=True)},
        "max": _ms(row.slowest),
    }
    return figures


def _ms(value: Any) -> float | None:
    return None if value is None else round(float(value), 1)
