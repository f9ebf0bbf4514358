"""The pool's liveness check (shared/db/session.py, `_check_alive`): a connection the server
closed while it was pooled is replaced at checkout, as a pre-ping would, without a round trip
for a live one."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator

import psycopg
import pytest
from sqlalchemy import Engine, text

from shared.db.session import build_engine
from shared.settings import get_settings
from tests.conftest import Stack

_PID = text("SELECT pg_backend_pid()")


@pytest.fixture()
def engine(stack: Stack) -> Iterator[Engine]:
    """An engine of its own: its pool holds this test's connections only."""
    own = build_engine(get_settings())
    yield own
    own.dispose()


def _terminate(stack: Stack, *pids: int) -> None:
    with psycopg.connect(stack.env["DATABASE_URL"], autocommit=True) as admin:
        for pid in pids:
            assert admin.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone() == (True,)


def test_connections_the_server_closed_while_pooled_are_replaced_at_checkout(
    stack: Stack, engine: Engine
) -> None:
    with engine.connect() as first, engine.connect() as second:
        pooled = {first.execute(_PID).scalar_one(), second.execute(_PID).scalar_one()}
    assert engine.pool.checkedin() == 2  # type: ignore[attr-defined]
    _terminate(stack, *pooled)
    time.sleep(0.2)  # the server's goodbye reaches the pooled sockets
    with engine.connect() as conn:
        fresh = conn.execute(_PID).scalar_one()
        assert conn.execute(text("SELECT 1")).scalar_one() == 1
    assert fresh not in pooled
    # The other closed connection was dropped with it, as after a failed pre-ping.
    with engine.connect() as one, engine.connect() as two:
        assert not {one.execute(_PID).scalar_one(), two.execute(_PID).scalar_one()} & pooled


def test_a_live_pooled_connection_is_checked_out_without_asking_the_server(
    engine: Engine,
) -> None:
    with engine.connect() as conn:
        backend = conn.execute(_PID).scalar_one()
    # The backend stopped: a round trip at checkout (a pre-ping) would wait for it.
    os.kill(backend, signal.SIGSTOP)
    try:
        checked_out = threading.Event()

        def checkout() -> None:
            with engine.connect() as conn:
                checked_out.set()
                del conn

        thread = threading.Thread(target=checkout, daemon=True)
        thread.start()
        assert checked_out.wait(2.0), "the checkout waited for the stopped backend"
    finally:
        os.kill(backend, signal.SIGCONT)
    thread.join(5.0)
