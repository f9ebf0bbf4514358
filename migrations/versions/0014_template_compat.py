"""template compat: undefined-variable mode and locale variants of a template

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-27

- `ent_notification_template.undefined_mode`: `strict` (an undefined variable fails the
  render; every template so far rendered this way, and rows written by other services get it)
  or `blank` (it prints as "", as the original XNovu's Liquid did).
- `ent_notification_template.locales`: the template's variants per locale, an object keyed by
  locale tag (`fr`, `fr-CA`) whose values hold `body_template` and, where the channel has one,
  `subject_template`; NULL (or JSON null) when it has none. The row's own subject and body are
  the default. The API bounds the variants' number and sizes; the database holds their shape.

Both are columns of the template row, so the template cache loads a template with its
variants in the one query it already makes (docs/architecture.md, "Templates of the
original").
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLE = "ent_notification_template"


def upgrade() -> None:
    op.add_column(
        TABLE,
        sa.Column("undefined_mode", sa.Text(), nullable=False, server_default="strict"),
        schema="notify",
    )
    op.create_check_constraint(
        op.f("ck_ent_notification_template_undefined_mode_known"),
        TABLE,
        "undefined_mode IN ('strict', 'blank')",
        schema="notify",
    )
    op.add_column(TABLE, sa.Column("locales", JSONB(), nullable=True), schema="notify")
    op.create_check_constraint(
        op.f("ck_ent_notification_template_locales_object"),
        TABLE,
        "jsonb_typeof(locales) IN ('object', 'null')",
        schema="notify",
    )


def downgrade() -> None:
    op.drop_constraint(
        op.f("ck_ent_notification_template_locales_object"), TABLE, schema="notify", type_="check"
    )
    op.drop_column(TABLE, "locales", schema="notify")
    op.drop_constraint(
        op.f("ck_ent_notification_template_undefined_mode_known"),
        TABLE,
        schema="notify",
        type_="check",
    )
    op.drop_column(TABLE, "undefined_mode", schema="notify")
