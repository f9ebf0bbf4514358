"""Engine and session factory, one per process (safe across Celery's prefork)."""

from __future__ import annotations

import logging
import os
import select
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, cast

import psycopg
from psycopg.rows import RowFactory, tuple_row
from sqlalchemy import Connection, Dialect, Engine, TextClause, create_engine, event
from sqlalchemy.exc import DBAPIError, InvalidatePoolError
from sqlalchemy.orm import Session, SessionTransaction, sessionmaker

from shared.process import PerProcess
from shared.settings import Settings, get_settings

# Row-level security (migration 0003): an enterprise-scoped transaction runs as APP_ROLE with
# the enterprise in `xnovu.enterprise_id`, and sees only that enterprise's ent_* rows. A
# session scoped to no enterprise ("") sees none; an unscoped session (no key in info) is a
# system session and runs as the connecting role, e.g. the reconciler.
_log = logging.getLogger(__name__)
APP_ROLE = "xnovu_app"
_SCOPE = "xnovu_enterprise_scope"


def build_engine(settings: Settings) -> Engine:
    """An engine with a bounded pool, liveness checks and a statement timeout.

    Every statement is planned for its own parameters (plan_cache_mode=force_custom_plan).
    psycopg prepares a statement on its fifth execution, and PostgreSQL then switches to a
    generic plan that ignores the values: for the delivery claim and record (`id = ANY(...)`
    over a handful of ids) that generic plan scanned the whole table, and at 100 single
    triggers a second the database spent ~10 ms of CPU per notification (docs/performance.md).
    Planning these short statements costs far less than one such scan."""
    connect_args: dict[str, Any] = {
        "connect_timeout": 2,
        "application_name": f"xnovu-{os.getpid()}",
    }
    if settings.db_transaction_pooler:
        # Behind a pooler in transaction mode consecutive transactions may run on different
        # server sessions, and other clients' transactions on ours: no prepared statements
        # (psycopg's, after a statement's fifth run), and no startup options (PgBouncer refuses
        # them). The two settings below come from the database role instead (docs/scaling.md).
        connect_args["prepare_threshold"] = None
    else:
        connect_args["options"] = " ".join(f"-c {k}={v}" for k, v in session_defaults(settings))
    engine = create_engine(
        settings.require_database_url(),
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_pool_size,
        pool_recycle=1800,
        pool_timeout=2,
        connect_args=connect_args,
    )
    event.listen(engine, "checkout", _check_alive)
    if settings.db_transaction_pooler:

        def check(dbapi_connection: Any, _record: Any) -> None:
            _check_session_defaults(dbapi_connection, settings)

        event.listen(engine, "first_connect", check)
    return engine


def session_defaults(settings: Settings) -> list[tuple[str, str]]:
    """What every server session of the service runs with: the statement timeout, and a plan
    made for each statement's values (build_engine)."""
    return [
        ("statement_timeout", str(settings.db_statement_timeout_ms)),
        ("plan_cache_mode", "force_custom_plan"),
    ]


def _check_session_defaults(dbapi_connection: Any, settings: Settings) -> None:
    """Behind a transaction pooler the session's settings are the role's (or the pooler's
    `connect_query`): say so, once per process, when they are not the service's."""
    connection = cast("psycopg.Connection[Any]", dbapi_connection)
    differ = []
    for name, wanted in session_defaults(settings):
        row = connection.execute(
            "SELECT setting FROM pg_settings WHERE name = %s", (name,)
        ).fetchone()
        if row is None or row[0] != wanted:
            differ.append(f"{name} is {row[0] if row else 'unknown'}, not {wanted}")
    connection.rollback()
    if differ:
        _log.error(
            "DB_TRANSACTION_POOLER: the database sessions' %s; set them on the database role"
            " (docs/scaling.md)",
            "; ".join(differ),
        )


def _check_alive(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
    """What SQLAlchemy's pre-ping finds, without its round trip: a pooled connection the server
    closed while it sat idle (PostgreSQL restarted, the backend terminated, an idle timeout)
    has a readable socket, the server's last words and the end of the stream, where a live
    idle connection has nothing to read (none of ours LISTENs). The pre-ping's `;` cost each
    delivery a round trip (docs/performance.md). As after a failed pre-ping, every connection
    pooled before this one is dropped and this checkout connects afresh."""
    connection = cast("psycopg.Connection[Any]", dbapi_connection)
    if connection.closed or connection.broken or _readable(connection.fileno()):
        raise InvalidatePoolError("the server closed the connection while it was pooled")


def _readable(fd: int) -> bool:
    poller = select.poll()
    poller.register(fd, select.POLLIN | select.POLLPRI)
    return bool(poller.poll(0))


@dataclass(frozen=True, slots=True)
class _Database:
    engine: Engine
    sessions: sessionmaker[Session]


def _connect() -> _Database:
    engine = build_engine(get_settings())
    return _Database(engine, sessionmaker(bind=engine, expire_on_commit=False, autoflush=False))


def _drop_inherited(database: _Database) -> None:
    # The parent's pool: drop it without closing its sockets, which the parent still uses.
    database.engine.dispose(close=False)


_database = PerProcess(_connect, inherited=_drop_inherited)


def get_engine() -> Engine:
    """The engine of this process; a forked child builds its own instead of sharing sockets."""
    return _database.get().engine


def session_factory() -> sessionmaker[Session]:
    """The process's session factory."""
    return _database.get().sessions


def scope_session(session: Session, enterprise_id: uuid.UUID | None) -> None:
    """Confine the session's next transactions to one enterprise (None: to no enterprise)."""
    session.info[_SCOPE] = str(enterprise_id) if enterprise_id is not None else ""


def unscope_session(session: Session) -> None:
    """Make the session's next transactions system transactions (cross-enterprise)."""
    session.info.pop(_SCOPE, None)


# What scopes a transaction (its parameters: `scope_parameters`); also the first statement of a
# one-message transaction (scoped_message), its parameters named so that the statements after
# it can bind their own, and run on the trigger recorder's plain psycopg connection
# (shared/notifications/recorder.py).
SCOPE_SQL = (
    "SELECT set_config('role', %(scope_role)s, true) AS scope_role,"
    " set_config('xnovu.enterprise_id', %(scope_enterprise)s, true) AS scope_enterprise"
)


def scope_parameters(enterprise_id: uuid.UUID | str) -> dict[str, str]:
    """SCOPE_SQL's parameters: the application role, and the enterprise ("" for a system
    transaction)."""
    return {"scope_role": APP_ROLE, "scope_enterprise": str(enterprise_id)}


@event.listens_for(Session, "after_begin")
def _apply_scope(
    session: Session, _transaction: SessionTransaction, connection: Connection
) -> None:
    scope = session.info.get(_SCOPE)
    if scope is not None:
        connection.exec_driver_sql(SCOPE_SQL, scope_parameters(scope))


def reset_engine() -> None:
    """Forget the engine (tests that change DATABASE_URL, and process shutdown)."""
    database = _database.forget()
    if database is not None:
        database.engine.dispose()


@contextmanager
def connection() -> Iterator[Connection]:
    """A pooled Core connection, for code that runs many small transactions in a row (the
    delivery tasks): one checkout (and one liveness check) for all of them, and no ORM session."""
    with get_engine().connect() as conn:
        yield conn


@contextmanager
def enterprise_transaction(conn: Connection, enterprise_id: uuid.UUID) -> Iterator[Connection]:
    """One transaction on `conn`, confined to the enterprise by row-level security as an
    enterprise-scoped `transaction()` is; commits on success, rolls back on any error.

    After a disconnect SQLAlchemy invalidates `conn`; the next transaction on it reconnects."""
    with conn.begin():
        conn.exec_driver_sql(SCOPE_SQL, scope_parameters(enterprise_id))
        yield conn


def scoped_message(
    raw: psycopg.Connection[Any],
    enterprise_id: uuid.UUID,
    statements: Sequence[str],
    parameters: dict[str, Any],
    *,
    row_factory: RowFactory[Any] = tuple_row,
) -> list[list[Any]]:
    """Send the enterprise's scope and `statements` (psycopg's `%(name)s` placeholders, all
    bound from `parameters`) as one simple-query message on `raw`, in autocommit mode and idle;
    each statement's rows.

    PostgreSQL runs the statements of one simple-query message as one implicit transaction:
    all committed when the last succeeds, none when any fails, the scope's `set_config(...,
    true)` ending with it. The parameters are bound into the text by psycopg's ClientCursor
    (quoted as literals), which is what lets several statements share the message: one round
    trip where BEGIN, the scope, each statement and COMMIT took one each."""
    cursor = psycopg.ClientCursor(raw, row_factory=row_factory)
    cursor.execute(
        ";\n".join([SCOPE_SQL, *statements]),
        {**parameters, **scope_parameters(enterprise_id)},
    )
    results = []
    for _ in statements:
        cursor.nextset()
        results.append(cursor.fetchall())
    return results


class ScopedMessage:
    """Runs a statement as `with enterprise_transaction(conn, enterprise_id): conn.execute(...)`
    does, as one message (`scoped_message`) on the connection behind `conn`. The delivery
    engine's claim and outcome statements run this way; measured, a claim costs the worker
    about two fifths of the CPU it did (docs/performance.md).

    `execute(...).all()` answers the statement's rows as tuples. Errors are SQLAlchemy's, as
    `conn.execute` raises them; after a lost connection `conn` is invalidated, and its next use
    reconnects, as after any disconnect."""

    def __init__(self, conn: Connection, enterprise_id: uuid.UUID) -> None:
        self.conn = conn
        self.enterprise_id = enterprise_id

    def execute(self, statement: TextClause, parameters: dict[str, Any]) -> _Rows:
        conn = self.conn
        if conn.in_transaction():
            raise RuntimeError("a ScopedMessage needs a connection outside any transaction")
        sql = _compiled(statement, conn.dialect)
        raw = cast("psycopg.Connection[Any]", conn.connection.driver_connection)
        raw.autocommit = True
        try:
            [rows] = scoped_message(raw, self.enterprise_id, [sql], parameters)
            return _Rows(rows)
        except psycopg.Error as exc:
            lost = raw.broken or raw.closed
            if lost:
                conn.invalidate(exc)
            raise DBAPIError.instance(
                sql,
                parameters,
                exc,
                psycopg.Error,
                connection_invalidated=lost,
                dialect=conn.dialect,
            ) from exc
        finally:
            if raw.closed:
                pass
            elif raw.info.transaction_status is psycopg.pq.TransactionStatus.IDLE:
                raw.autocommit = False
            else:  # interrupted mid-message (a time limit): the connection's state is unknown
                conn.invalidate()


@dataclass(frozen=True, slots=True)
class _Rows:
    rows: list[tuple[Any, ...]]

    def all(self) -> list[tuple[Any, ...]]:
        return self.rows


@lru_cache(maxsize=64)
def _compiled(statement: TextClause, dialect: Dialect) -> str:
    """The statement's SQL with psycopg's `%(name)s` placeholders."""
    return str(statement.compile(dialect=dialect))


@contextmanager
def transaction(enterprise_id: uuid.UUID | None = None) -> Iterator[Session]:
    """One unit of work: commits on success, rolls back on any error. For task and CLI edges.

    With an enterprise, row-level security confines it to that enterprise's rows; without, it
    is a system transaction (reconciler, CLI, seed) that sees every enterprise."""
    session = session_factory()()
    if enterprise_id is not None:
        scope_session(session, enterprise_id)
    try:
        with session.begin():
            yield session
    finally:
        session.close()
