"""Retention: finished notifications and their history (timeline, Novu's delivery events, status
webhook messages and attempts) are removed RETENTION_DAYS after they were created, finished
and due (docs/architecture.md, "Retention").

Beat runs `purge` every RETENTION_INTERVAL_SECONDS. It calls the database function
`notify.purge_finished` (migration 0011) in batches of RETENTION_BATCH_SIZE, each its own
short transaction that skips rows another transaction holds, so it never holds a lock for
long or waits on a delivery; it stops when a batch comes back short or after
PURGE_SECONDS, leaving the rest to the next run. The function runs with its owner's rights:
the timeline is append-only for the roles the services connect as, and this is the one way
they delete from it, only finished rows older than a day at least.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass

from sqlalchemy import text

from shared.db.session import transaction

log = logging.getLogger(__name__)

# One run's time budget: a run longer than this leaves the rest to the next one.
PURGE_SECONDS = 20.0
_PURGE = text("SELECT notify.purge_finished(:cutoff, :batch)")


@dataclass(frozen=True, slots=True)
class Purged:
    """What one run removed, and whether it stopped before the backlog was gone."""

    notifications: int
    batches: int
    more: bool


def purge(days: int, batch_size: int, *, time_budget: float = PURGE_SECONDS) -> Purged:
    """Remove finished notifications older than `days` (and their events), batch by batch,
    for at most `time_budget` seconds; nothing when `days` is 0 (retention off)."""
    if days <= 0:
        return Purged(0, 0, False)
    cutoff = dt.datetime.now(dt.UTC) - dt.timedelta(days=days)
    stop_at = time.monotonic() + time_budget
    removed = batches = 0
    while True:
        with transaction() as session:
            count = int(session.scalar(_PURGE, {"cutoff": cutoff, "batch": batch_size}) or 0)
        removed += count
        batches += 1
        if count < batch_size:
            more = False
            break
        if time.monotonic() >= stop_at:
            more = True
            break
    if removed:
        log.info(
            "retention: removed %d notifications finished before %s in %d batches%s",
            removed,
            cutoff.isoformat(timespec="seconds"),
            batches,
            "; more next run" if more else "",
        )
    return Purged(removed, batches, more)
