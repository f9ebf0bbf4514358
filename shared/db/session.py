"""Engine and session factory, one per process (safe across Celery's prefork)."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, create_engine
from sqlalchemy.orm import Session, sessionmaker

from shared.settings import Settings, get_settings

_lock = threading.Lock()
_engine: Engine | None = None
_engine_pid: int | None = None
_factory: sessionmaker[Session] | None = None


def build_engine(settings: Settings) -> Engine:
    """An engine with a bounded pool, liveness checks and a statement timeout."""
    return create_engine(
        settings.require_database_url(),
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_pool_size,
        pool_pre_ping=True,
        pool_recycle=1800,
        pool_timeout=2,
        connect_args={
            "connect_timeout": 2,
            "options": f"-c statement_timeout={settings.db_statement_timeout_ms}",
            "application_name": f"xnovu-{os.getpid()}",
        },
    )


def get_engine() -> Engine:
    """The engine of this process; a forked child builds its own instead of sharing sockets."""
    global _engine, _engine_pid, _factory
    pid = os.getpid()
    if _engine is None or _engine_pid != pid:
        with _lock:
            if _engine is None or _engine_pid != pid:
                if _engine is not None:
                    # Inherited from the parent: drop the pool without closing its sockets.
                    _engine.dispose(close=False)
                _engine = build_engine(get_settings())
                _engine_pid = pid
                _factory = sessionmaker(bind=_engine, expire_on_commit=False, autoflush=False)
    return _engine


def session_factory() -> sessionmaker[Session]:
    """The process's session factory."""
    get_engine()
    assert _factory is not None
    return _factory


def reset_engine() -> None:
    """Forget the engine (tests that change DATABASE_URL, and process shutdown)."""
    global _engine, _engine_pid, _factory
    with _lock:
        if _engine is not None:
            _engine.dispose()
        _engine = None
        _engine_pid = None
        _factory = None


@contextmanager
def transaction() -> Iterator[Session]:
    """One unit of work: commits on success, rolls back on any error. For task and CLI edges."""
    session = session_factory()()
    try:
        with session.begin():
            yield session
    finally:
        session.close()
