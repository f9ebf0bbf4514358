"""Per-enterprise registry generations: how a reload in one process reaches every process.

A reload (or an edit of a workflow or template) bumps the enterprise's generation in the same
transaction as the change. Every process remembers the generation its cached workflows and
templates came from and compares it at most every REGISTRY_CHECK_INTERVAL_SECONDS; a newer
one drops that enterprise's caches. No broker or background thread is involved, so it also
works in Celery's forked pool processes and while Redis is down.
"""

from __future__ import annotations

import uuid

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from shared.db.models import RegistryGeneration


def bump_generation(session: Session, enterprise_id: uuid.UUID) -> int:
    """Advance the enterprise's generation; returns the new value. Does not commit."""
    stmt = insert(RegistryGeneration).values(enterprise_id=enterprise_id, generation=1)
    stmt = stmt.on_conflict_do_update(
        index_elements=[RegistryGeneration.enterprise_id],
        set_={"generation": RegistryGeneration.generation + 1, "updated_at": func.now()},
    )
    return int(session.scalars(stmt.returning(RegistryGeneration.generation)).one())


def current_generation(session: Session, enterprise_id: uuid.UUID) -> int:
    """The enterprise's generation; 0 when it was never bumped."""
    value = session.scalar(
        select(RegistryGeneration.generation).where(
            RegistryGeneration.enterprise_id == enterprise_id
        )
    )
    return int(value or 0)
