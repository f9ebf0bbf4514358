"""Behind PgBouncer in transaction mode (DB_TRANSACTION_POOLER=true, docs/scaling.md): consecutive
transactions of one client run on different server sessions, and several clients share a
session, so the service keeps nothing in a session. Against a real PgBouncer with two server
connections, shared by the recorders of two API processes and a worker's claims."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from devtools.devstack import PG_DATABASE, PG_SUPERUSER, free_port
from shared.db.enums import NotificationStatus as S
from shared.db.session import ScopedMessage, connection, reset_engine
from shared.notifications.recorder import _Connection
from shared.notifications.repository import (
    AttemptOutcome,
    NewNotification,
    claim_due,
    record_outcomes,
)
from shared.settings import get_settings
from tests.conftest import Stack, Tenant

pytestmark = pytest.mark.integration

# A login role whose sessions carry the service's settings, as docs/scaling.md has operators
# configure the role behind a pooler.
POOLED_ROLE = "xnovu_pooled"
PGBOUNCER = shutil.which("pgbouncer") or next(
    (p for p in ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer") if os.path.exists(p)), None
)


@dataclass(frozen=True)
class Pooler:
    port: int
    log: Path

    def url(self, database: str) -> str:
        return f"postgresql://{POOLED_ROLE}@127.0.0.1:{self.port}/{database}"


@pytest.fixture(scope="module")
def pooler(stack: Stack) -> Iterator[Pooler]:
    if PGBOUNCER is None:
        if os.environ.get("XNOVU_REQUIRE_PGBOUNCER"):
            pytest.fail("pgbouncer is not installed (CI installs Debian's package)")
        pytest.skip("pgbouncer is not installed (apt-get install pgbouncer)")
    with psycopg.connect(stack.database_url, autocommit=True) as admin:
        admin.execute(
            f"DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{POOLED_ROLE}')"
            f" THEN CREATE ROLE {POOLED_ROLE} LOGIN SUPERUSER; END IF; END $$"
        )
        settings = get_settings()
        admin.execute(
            f"ALTER ROLE {POOLED_ROLE} SET statement_timeout = {settings.db_statement_timeout_ms}"
        )
        admin.execute(f"ALTER ROLE {POOLED_ROLE} SET plan_cache_mode = force_custom_plan")
    pg_port = stack.database_url.rsplit(":", 1)[1].split("/")[0]
    # PgBouncer will not run as root: it switches to `nobody`, who must read the files.
    directory = Path(tempfile.mkdtemp(prefix="xnovu-pgbouncer-"))
    directory.chmod(0o777)
    port = free_port()
    backend = f"host=127.0.0.1 port={pg_port} dbname={PG_DATABASE}"
    (directory / "users.txt").write_text(f'"{POOLED_ROLE}" ""\n"{PG_SUPERUSER}" ""\n')
    (directory / "pgbouncer.ini").write_text(
        "[databases]\n"
        f"xnovu = {backend} user={POOLED_ROLE}\n"
        # The same database reached as a role without the service's settings.
        f"unset = {backend} user={PG_SUPERUSER}\n"
        "[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
        f"auth_type = trust\nauth_file = {directory / 'users.txt'}\n"
        "pool_mode = transaction\ndefault_pool_size = 2\nmax_client_conn = 100\n"
        f"logfile = {directory / 'pgbouncer.log'}\npidfile = {directory / 'pgbouncer.pid'}\n"
    )
    for path in directory.iterdir():
        path.chmod(0o666)
    command = [PGBOUNCER, str(directory / "pgbouncer.ini")]
    if os.geteuid() == 0:
        command[1:1] = ["-u", "nobody"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    pooled = Pooler(port, directory / "pgbouncer.log")
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                psycopg.connect(pooled.url("xnovu"), connect_timeout=2).close()
                break
            except psycopg.OperationalError:
                if time.monotonic() > deadline or process.poll() is not None:
                    log = pooled.log.read_text() if pooled.log.exists() else ""
                    raise RuntimeError(f"pgbouncer did not start: {log[-2000:]}") from None
                time.sleep(0.2)
        yield pooled
    finally:
        process.terminate()
        process.wait(10)
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture()
def behind(pooler: Pooler, monkeypatch: pytest.MonkeyPatch) -> Iterator[Pooler]:
    """The service's engine pointed at the pooler with DB_TRANSACTION_POOLER=true."""
    monkeypatch.setenv("DATABASE_URL", pooler.url("xnovu"))
    monkeypatch.setenv("DB_TRANSACTION_POOLER", "true")
    get_settings.cache_clear()
    reset_engine()
    try:
        yield pooler
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
        reset_engine()


def _new(count: int, keyed: bool = False) -> list[NewNotification]:
    """Triggers without idempotency keys (the recorder's one-message path) or with them (its
    statements bound by the server, which psycopg would prepare)."""
    return [
        NewNotification(
            index=i,
            workflow_key="user-signup",
            payload={"n": i},
            recipients=["u"],
            idempotency_key=f"key-{uuid.uuid4()}" if keyed else None,
            request_fingerprint="fingerprint" if keyed else None,
        )
        for i in range(count)
    ]


def test_without_the_setting_pgbouncer_refuses_the_connection(pooler: Pooler) -> None:
    # The startup options that carry statement_timeout are what PgBouncer turns away.
    with pytest.raises(psycopg.OperationalError, match="unsupported startup parameter"):
        psycopg.connect(pooler.url("xnovu"), options="-c statement_timeout=5000").close()


def test_recorders_and_claims_share_pooled_sessions(behind: Pooler, tenant: Tenant) -> None:
    # Two API processes' recorders and a worker's claims, interleaved over two server
    # sessions: a prepared statement kept in a session would be missing (or, prepared by the
    # other recorder, already there) when the next transaction lands on another session.
    recorders = [_Connection(), _Connection()]
    ids: list[int] = []
    try:
        for turn in range(12):
            triggers = _new(3, keyed=turn % 4 >= 2)
            recorded = recorders[turn % 2].record(tenant.enterprise_id, "test", triggers)
            assert len(recorded) == 3
            ids += [r.notification_id for r in recorded]
    finally:
        for recorder in recorders:
            recorder.close()
    with connection() as conn:
        for notification_id in ids:
            message = ScopedMessage(conn, tenant.enterprise_id)
            rows, _ = claim_due(
                message,
                enterprise_id=tenant.enterprise_id,
                notification_ids=[notification_id],
                lease_seconds=60,
            )
            assert [row.id for row in rows] == [notification_id]
            outcome = AttemptOutcome(notification_id, rows[0].attempts, S.SENT)
            moved = record_outcomes(message, enterprise_id=tenant.enterprise_id, outcomes=[outcome])
            assert moved == {notification_id}
        # No scope outlives its transaction in a shared session.
        user, scope = conn.exec_driver_sql(
            "SELECT current_user, current_setting('xnovu.enterprise_id', true)"
        ).one()
        conn.rollback()
    assert user == POOLED_ROLE and not scope


def test_the_sessions_settings_come_from_the_role(
    behind: Pooler, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="shared.db.session"), connection() as conn:
        timeout = conn.exec_driver_sql("SHOW statement_timeout").scalar()
        conn.rollback()
    assert timeout == f"{get_settings().db_statement_timeout_ms // 1000}s"
    assert not [r for r in caplog.records if "DB_TRANSACTION_POOLER" in r.getMessage()]


def test_a_role_without_them_is_reported(
    behind: Pooler, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("DATABASE_URL", behind.url("unset").replace(POOLED_ROLE, PG_SUPERUSER))
    get_settings.cache_clear()
    reset_engine()
    with caplog.at_level(logging.ERROR, logger="shared.db.session"), connection() as conn:
        conn.exec_driver_sql("SELECT 1")
        conn.rollback()
    [report] = [r.getMessage() for r in caplog.records if "DB_TRANSACTION_POOLER" in r.getMessage()]
    wanted = get_settings().db_statement_timeout_ms
    assert f"statement_timeout is 0, not {wanted}" in report, report
