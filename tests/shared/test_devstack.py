"""Embedded PostgreSQL and Redis: start, persist, restart, crash, and leave nothing behind.

Standalone: these tests start their own servers in a tmp dir on free ports.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import psutil
import psycopg
import pytest
import redis

from devtools.devstack import (
    DevStackError,
    EmbeddedPostgres,
    EmbeddedRedis,
    embedded_stack,
    free_port,
)


def _processes_in(root: Path) -> list[psutil.Process]:
    """Live processes whose working directory is under root (both servers chdir to their data)."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.status() != psutil.STATUS_ZOMBIE and Path(proc.cwd()).is_relative_to(root):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


@pytest.fixture
def root(tmp_path: Path) -> Iterator[Path]:
    """A tmp dir that must hold no running server, and leave no new child of ours, at the end."""
    children_before = set(psutil.Process().children(recursive=True))
    yield tmp_path
    leftovers = _processes_in(tmp_path)
    for proc in leftovers:
        proc.kill()
    assert leftovers == []
    assert set(psutil.Process().children(recursive=True)) <= children_before


def test_postgres_keeps_rows_across_stop_and_start(root: Path) -> None:
    pg = EmbeddedPostgres(root / "pg", free_port(), fast=True)
    with pg:
        assert pg.start() == f"postgresql://postgres@127.0.0.1:{pg.port}/xnovu"
        with psycopg.connect(pg.url) as conn:
            conn.execute("CREATE TABLE note (body text)")
            conn.execute("INSERT INTO note VALUES ('kept')")
            settings = conn.execute(
                "SELECT name, setting FROM pg_settings WHERE name IN "
                "('max_connections', 'fsync', 'listen_addresses', 'unix_socket_directories')"
            ).fetchall()
        assert dict(settings) == {
            "max_connections": "200",
            "fsync": "off",
            "listen_addresses": "127.0.0.1",
            "unix_socket_directories": str(root / "pg"),
        }
        pg.stop()
        assert not pg.is_running()
        pg.stop()
        pg.start()
        with psycopg.connect(pg.url) as conn:
            assert conn.execute("SELECT body FROM note").fetchall() == [("kept",)]
    assert not pg.is_running()
    pg.stop()


def _starter(root: Path, pg_port: int, redis_port: int, then: str) -> subprocess.Popen[str]:
    """A process, in its own process group, that starts both servers and then runs `then`."""
    script = f"""
        import os, signal, sys
        from pathlib import Path
        from devtools.devstack import embedded_stack
        signal.signal(signal.SIGINT, lambda *_: print("interrupted", flush=True))
        with embedded_stack(Path({str(root)!r}), pg_port={pg_port}, redis_port={redis_port},
                            fast=True):
            print("ready", flush=True)
            {then}
    """
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script)], stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip


def test_servers_survive_ctrl_c_to_the_starters_process_group(root: Path) -> None:
    pg_port, redis_port = free_port(), free_port()
    starter = _starter(root, pg_port, redis_port, then="sys.stdin.read()")
    assert starter.stdout is not None and starter.stdout.readline() == "ready\n"
    os.killpg(starter.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
    assert starter.stdout.readline() == "interrupted\n"
    assert EmbeddedPostgres(root / "postgres", pg_port).is_running()
    assert EmbeddedRedis(root / "redis", redis_port).is_running()
    starter.communicate("", timeout=60)  # stdin closed: the starter stops both
    assert starter.returncode == 0
    assert not EmbeddedPostgres(root / "postgres", pg_port).is_running()
    assert not EmbeddedRedis(root / "redis", redis_port).is_running()


def test_servers_left_by_a_dead_starter_are_reused(root: Path) -> None:
    pg_port, redis_port = free_port(), free_port()
    starter = _starter(root, pg_port, redis_port, then="os._exit(0)")  # no cleanup at all
    assert starter.communicate(timeout=60)[0] == "ready\n"
    pg = EmbeddedPostgres(root / "postgres", pg_port, fast=True)
    server = EmbeddedRedis(root / "redis", redis_port)
    assert pg.is_running() and server.is_running()
    with pg, server, psycopg.connect(pg.url) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
        assert redis.Redis.from_url(server.url).ping()
    assert not pg.is_running() and not server.is_running()


def test_postgres_ignores_a_stale_pid_file_whose_pid_was_reused(root: Path) -> None:
    pg = EmbeddedPostgres(root / "pg", free_port(), fast=True)
    with pg:
        pidfile = (root / "pg" / "postmaster.pid").read_text()
    (root / "pg" / "postmaster.pid").write_text(f"{os.getpid()}\n" + pidfile.split("\n", 1)[1])
    assert not pg.is_running()
    with pg:
        assert pg.is_running()


def test_postgres_recovers_after_postmaster_is_killed(root: Path) -> None:
    pg = EmbeddedPostgres(root / "pg", free_port())
    with pg:
        with psycopg.connect(pg.url) as conn:
            conn.execute("CREATE TABLE note (body text)")
            conn.execute("INSERT INTO note VALUES ('committed')")
        postmaster = int((root / "pg" / "postmaster.pid").read_text().split()[0])
        os.kill(postmaster, signal.SIGKILL)
        psutil.wait_procs([psutil.Process(postmaster)], timeout=10)
        assert not pg.is_running()
        pg.start()
        with psycopg.connect(pg.url) as conn:
            assert conn.execute("SELECT body FROM note").fetchall() == [("committed",)]


def test_postgres_on_a_port_in_use_is_a_clear_error(root: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        pg = EmbeddedPostgres(root / "pg", busy.getsockname()[1], fast=True)
        with pytest.raises(DevStackError, match="in use"):
            pg.start()


def test_redis_keeps_keys_across_stop_kill_and_restart(root: Path) -> None:
    server = EmbeddedRedis(root / "redis", free_port())
    with server:
        assert server.start() == f"redis://127.0.0.1:{server.port}/0"
        client = redis.Redis.from_url(server.url)
        assert client.config_get("appendonly") == {"appendonly": "yes"}
        assert client.config_get("appendfsync") == {"appendfsync": "everysec"}
        assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
        assert client.config_get("dir") == {"dir": str(root / "redis")}
        client.set("after-stop", "1")
        server.stop()
        assert not server.is_running()
        server.stop()
        server.start()
        client.set("after-kill", "2")
        server.kill()
        assert not server.is_running()
        server.start()
        server.restart()
        assert client.mget("after-stop", "after-kill") == [b"1", b"2"]
        client.close()
    assert not server.is_running()


def test_redis_on_a_port_in_use_is_a_clear_error(root: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        with pytest.raises(DevStackError, match="in use"):
            EmbeddedRedis(root / "redis", busy.getsockname()[1]).start()


def test_embedded_stack_starts_both_and_stops_both(root: Path) -> None:
    with embedded_stack(root, fast=True) as (pg, server):
        assert pg.is_running() and server.is_running()
        assert _processes_in(root)
    assert not pg.is_running() and not server.is_running()
