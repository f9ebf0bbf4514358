"""Novu's delivery events (issue 13, part H2)

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-27

Reserved while the part is built; its tables come with it.
"""

from collections.abc import Sequence

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
