"""ScopedMessage (shared/db/session.py): a statement and its enterprise scope as one message,
one implicit transaction, with the same rows, the same row-level security and the same
SQLAlchemy errors as `enterprise_transaction` + `conn.execute`, and nothing left behind."""

from __future__ import annotations

import psycopg
import pytest
from sqlalchemy import exc, text

from shared.db.session import ScopedMessage, connection, enterprise_transaction, get_engine
from tests.conftest import Stack, Tenant, make_tenant
from tests.rows import insert_notification

_MINE = text(
    "SELECT id, workflow_key, payload FROM notify.ent_notification"
    " WHERE id = ANY(CAST(:ids AS bigint[])) ORDER BY id"
)
_STATE = text("SELECT current_user, current_setting('xnovu.enterprise_id', true)")


def test_it_answers_the_rows_a_scoped_transaction_answers(tenant: Tenant) -> None:
    ids = [insert_notification(tenant.enterprise_id).notification_id for _ in range(3)]
    other = make_tenant()
    theirs = insert_notification(other.enterprise_id).notification_id
    with connection() as conn:
        with enterprise_transaction(conn, tenant.enterprise_id):
            expected = [tuple(row) for row in conn.execute(_MINE, {"ids": [*ids, theirs]})]
        got = ScopedMessage(conn, tenant.enterprise_id).execute(_MINE, {"ids": [*ids, theirs]})
    assert got.all() == expected
    assert [row[0] for row in expected] == ids  # the other enterprise's row is not visible


def test_its_scope_ends_with_its_transaction(tenant: Tenant) -> None:
    with connection() as conn:
        ScopedMessage(conn, tenant.enterprise_id).execute(_MINE, {"ids": [1]})
        raw = conn.connection.driver_connection
        assert raw.autocommit is False
        assert raw.info.transaction_status is psycopg.pq.TransactionStatus.IDLE
        user, scope = conn.execute(_STATE).one()
        conn.rollback()
    assert user != "xnovu_app" and not scope


def test_a_failed_statement_raises_sqlalchemys_error_and_leaves_the_connection_usable(
    tenant: Tenant,
) -> None:
    with connection() as conn:
        message = ScopedMessage(conn, tenant.enterprise_id)
        with pytest.raises(exc.DataError):
            message.execute(text("SELECT CAST(:n AS int) / 0"), {"n": 1})
        assert message.execute(text("SELECT CAST(:n AS int) + 1"), {"n": 1}).all() == [(2,)]


def test_a_lost_connection_is_invalidated_and_the_next_statement_reconnects(
    stack: Stack, tenant: Tenant
) -> None:
    with connection() as conn:
        message = ScopedMessage(conn, tenant.enterprise_id)
        message.execute(_MINE, {"ids": [1]})
        pid = conn.connection.driver_connection.info.backend_pid
        with psycopg.connect(stack.database_url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        with pytest.raises(exc.OperationalError) as raised:
            message.execute(_MINE, {"ids": [1]})
        assert raised.value.connection_invalidated
        assert message.execute(_MINE, {"ids": [1]}).all() == []
        assert conn.connection.driver_connection.info.backend_pid != pid


def test_it_refuses_a_connection_inside_a_transaction(tenant: Tenant) -> None:
    with get_engine().connect() as conn, conn.begin(), pytest.raises(RuntimeError):
        ScopedMessage(conn, tenant.enterprise_id).execute(_MINE, {"ids": [1]})
