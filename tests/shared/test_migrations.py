"""The Alembic migrations build the whole schema on an empty database and take it down again."""

from __future__ import annotations

import uuid

import psycopg
import pytest
from sqlalchemy import create_engine, inspect

from shared.db.models import SCHEMA, Base
from shared.migrate import downgrade, upgrade
from shared.settings import to_sqlalchemy_url


@pytest.fixture()
def empty_database(stack):
    name = f"migrations_{uuid.uuid4().hex[:8]}"
    admin = stack.database_url
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = admin.rsplit("/", 1)[0] + f"/{name}"
    yield url
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def _tables_and_types(url: str) -> tuple[set[str], set[str]]:
    engine = create_engine(to_sqlalchemy_url(url))
    try:
        inspector = inspect(engine)
        tables = set(inspector.get_table_names(schema=SCHEMA))
        types = {e["name"] for e in inspector.get_enums(schema=SCHEMA)}
    finally:
        engine.dispose()
    return tables, types


def test_upgrade_creates_every_table_then_downgrade_removes_them(empty_database):
    upgrade(empty_database)
    tables, types = _tables_and_types(empty_database)
    expected = {t.name for t in Base.metadata.sorted_tables}
    assert expected <= tables
    assert expected == {
        "ent_notification_template",
        "ent_notification_workflow",
        "ent_notification_rule",
        "ent_notification",
        "ent_api_key",
        "registry_generation",
        "novu_workflow_sync",
        "novu_sync_run",
        "ent_notification_event",
        "novu_delivery_event",
        "ent_notification_key",
        "webhook_endpoint",
        "webhook_message",
        "webhook_attempt",
    }
    assert {"notification_status", "channel_type", "publish_status"} <= types

    downgrade(empty_database)
    tables, types = _tables_and_types(empty_database)
    assert tables & expected == set()
    assert types == set()

    upgrade(empty_database)  # and up again, cleanly
    assert expected <= _tables_and_types(empty_database)[0]


def test_models_match_the_migrations(empty_database):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    upgrade(empty_database)
    engine = create_engine(to_sqlalchemy_url(empty_database))
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(
                conn,
                opts={
                    "include_schemas": True,
                    "include_name": lambda name, type_, _: (
                        name == SCHEMA if type_ == "schema" else name != "alembic_version"
                    ),
                },
            )
            diff = compare_metadata(context, Base.metadata)
    finally:
        engine.dispose()
    assert diff == []
