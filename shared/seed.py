"""The demo data `make run` seeds, idempotently."""

from __future__ import annotations

from sqlalchemy.orm import Session

from shared.apikeys import ensure_api_key
from shared.settings import Settings


def seed_demo(session: Session, settings: Settings) -> None:
    """The demo enterprise's API key (XNOVU_DEV_API_KEY for XNOVU_DEV_ENTERPRISE_ID)."""
    ensure_api_key(
        session,
        plaintext=settings.dev_api_key,
        enterprise_id=settings.dev_enterprise_id,
        name="development key (seeded by xnovu dev)",
    )
