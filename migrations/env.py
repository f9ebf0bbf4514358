"""Alembic environment: online migrations against MIGRATIONS_DATABASE_URL (else DATABASE_URL),
schema `notify`."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, text

from shared.db.models import SCHEMA, Base
from shared.settings import get_settings, to_sqlalchemy_url

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    configured = config.get_main_option("sqlalchemy.url")
    if configured:
        return to_sqlalchemy_url(configured)
    return get_settings().require_migrations_database_url()


def run_migrations_online() -> None:
    engine = create_engine(_url())
    with engine.connect() as connection:
        # The version table lives in the schema, so the schema must exist before Alembic looks.
        connection.execute(text(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}"))
        connection.commit()
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            version_table_schema=SCHEMA,
            include_schemas=True,
            include_name=lambda name, type_, _parent: type_ != "schema" or name == SCHEMA,
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


run_migrations_online()
