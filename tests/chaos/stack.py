"""A whole XNovu stack of its own for a chaos run: embedded PostgreSQL and Redis, the Novu
emulator, the API (uvicorn), a Celery worker and beat, each a process the run can kill.

Every child runs in its own session, so a worker and its pool children form one process group
that a SIGKILL takes down at once, as a crashed container would.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import psycopg

from devtools.devstack import EmbeddedPostgres, EmbeddedRedis, free_port

REPO = Path(__file__).resolve().parents[2]
# What the parent's environment must not leak into the stack's processes.
_FOREIGN = ("DATABASE_URL", "REDIS_URL", "NOVU_API_URL", "NOVU_SECRET_KEY", "NOVU_BRIDGE_URL")


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll `predicate` (exceptions count as False) until it holds; TimeoutError otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if predicate():
                return
        time.sleep(0.2)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


@dataclass
class Child:
    """One child process in its own session (process group), logging to a file."""

    name: str
    args: list[str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self, env: Mapping[str, str]) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.args,
                env=dict(env),
                cwd=REPO,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        assert self.proc is not None, f"{self.name} was never started"
        return self.proc.pid

    def exited(self) -> bool:
        return self.proc is not None and self.proc.poll() is not None

    def pids(self) -> list[int]:
        """The process and all its descendants (a worker's pool children); none once it exited."""
        if self.proc is None or self.exited():
            return []
        with contextlib.suppress(psutil.Error):
            root = psutil.Process(self.pid)
            return [root.pid, *(child.pid for child in root.children(recursive=True))]
        return []

    def kill_group(self) -> None:
        """SIGKILL the whole process group at once and reap it."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM, then SIGKILL to the group if it does not end in time."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill_group()
        # Pool children that outlived their parent would keep consuming: end them too.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)


@dataclass
class ChaosStack:
    """The processes of one stack, started piecemeal (`start_servers`, `start_emulator`,
    `start_api`, `start_beat`, `start_worker`) or all at once (`start`), all stopped by
    `stop()`. The calling process's environment and settings are left alone: the stack's own
    environment is `env`, and only its children read it."""

    workdir: Path
    timings: Mapping[str, str]
    worker_concurrency: int = 4
    postgres: EmbeddedPostgres = field(init=False)
    redis: EmbeddedRedis = field(init=False)
    env: dict[str, str] = field(init=False, default_factory=dict)
    api_url: str = field(init=False, default="")
    emulator_url: str = field(init=False, default="")
    children: dict[str, Child] = field(init=False, default_factory=dict)
    worker_generation: int = field(init=False, default=0)
    _ping_app: Any = field(init=False, default=None)

    def start(self) -> None:
        """Start everything and return once the API and the worker answer."""
        self.start_servers()
        self.start_emulator()
        self.start_api()
        self.start_beat()
        self.start_worker()

    def start_servers(self) -> None:
        """PostgreSQL (migrated) and Redis, on free ports."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.postgres = EmbeddedPostgres(self.workdir / "pg", free_port(), fast=True)
        self.redis = EmbeddedRedis(self.workdir / "redis", free_port())
        database_url = self.postgres.start()
        redis_url = self.redis.start()
        emulator_port, api_port = free_port(), free_port()
        self.emulator_url = f"http://127.0.0.1:{emulator_port}"
        self.api_url = f"http://127.0.0.1:{api_port}"
        env = {key: value for key, value in os.environ.items() if key not in _FOREIGN}
        env.update(self.timings)
        env.update(
            {
                "DATABASE_URL": database_url,
                "REDIS_URL": redis_url,
                "NOVU_API_URL": self.emulator_url,
                "NOVU_EMULATOR_PORT": str(emulator_port),
                "API_PORT": str(api_port),
                # The worker syncs Novu (the emulator) with the API's bridge when it starts.
                "NOVU_BRIDGE_PUBLIC_URL": f"{self.api_url}/api/novu",
                "XNOVU_DATA_DIR": str(self.workdir / "data"),
                "PYTHONUNBUFFERED": "1",
            }
        )
        self.env = env
        from shared.migrate import upgrade

        upgrade(database_url)

    def start_emulator(self) -> None:
        port = self.env["NOVU_EMULATOR_PORT"]
        self._start_child(
            "emulator", [sys.executable, "-m", "shared.cli", "novu-emulator", "--port", port]
        )
        wait_for(
            lambda: httpx.get(f"{self.emulator_url}/_emulator/stats").is_success,
            30,
            "the Novu emulator",
        )

    def start_api(self) -> None:
        port = self.env["API_PORT"]
        self._start_child(
            "api",
            [
                sys.executable,
                "-m",
                "uvicorn",
                "api.app:app",
                "--host",
                "127.0.0.1",
                "--port",
                port,
                "--no-access-log",
            ],
        )
        wait_for(lambda: httpx.get(f"{self.api_url}/healthz").is_success, 60, "the API")

    def start_beat(self) -> None:
        schedule = self.workdir / "beat-schedule"
        self._start_child(
            "beat",
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "worker.celery_app",
                "beat",
                "--loglevel=INFO",
                f"--schedule={schedule}",
            ],
        )

    def create_api_key(self, enterprise_id: uuid.UUID) -> str:
        """An enterprise API key, made by `xnovu keys create` against this stack."""
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "shared.cli",
                "keys",
                "create",
                "--enterprise",
                str(enterprise_id),
                "--name",
                "chaos",
            ],
            env=self.env,
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        return done.stdout.strip().splitlines()[0]

    def _start_child(self, name: str, args: list[str], log_name: str | None = None) -> Child:
        child = Child(name, args, self.workdir / f"{log_name or name}.log")
        child.start(self.env)
        self.children[name] = child
        return child

    @property
    def worker(self) -> Child:
        return self.children["worker"]

    def start_worker(self, *, wait: bool = True) -> Child:
        """A new `celery worker` process; waits until it answers a ping."""
        self.worker_generation += 1
        hostname = f"chaos-{self.worker_generation}-{uuid.uuid4().hex[:6]}@chaos"
        child = self._start_child(
            "worker",
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "worker.celery_app",
                "worker",
                "--loglevel=INFO",
                "-E",
                f"--concurrency={self.worker_concurrency}",
                "-Q",
                "xnovu.deliver,xnovu.maintenance",
                f"--hostname={hostname}",
                "--without-mingle",
                "--without-gossip",
            ],
            log_name=f"worker-{self.worker_generation}",
        )
        if wait:
            wait_for(
                lambda: bool(self._pinger().control.ping(destination=[hostname], timeout=0.5)),
                60,
                f"celery worker {hostname} (log: {child.log})",
            )
        return child

    def _pinger(self) -> Any:
        if self._ping_app is None:
            from celery import Celery

            self._ping_app = Celery("xnovu-chaos-ping", broker=self.env["REDIS_URL"])
        return self._ping_app

    def kill_worker(self) -> list[int]:
        """SIGKILL the worker's whole process group (main process and pool children)."""
        worker = self.worker
        pids = worker.pids()
        worker.kill_group()
        return pids

    def terminate_worker_connections(self, patience: float = 30.0) -> int:
        """Terminate the PostgreSQL backends of the worker's processes; how many there were.
        A worker that has not connected yet (just started) is given `patience` seconds."""
        deadline = time.monotonic() + patience
        while True:
            names = [f"xnovu-{pid}" for pid in self.worker.pids()]
            with psycopg.connect(self.postgres.url, autocommit=True, connect_timeout=5) as conn:
                rows = conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE application_name LIKE 'xnovu-%%' AND application_name = ANY(%s)"
                    " AND pid <> pg_backend_pid()",
                    (names,),
                ).fetchall()
            terminated = sum(1 for (done,) in rows if done)
            if terminated or time.monotonic() > deadline:
                return terminated
            time.sleep(0.2)

    def restart_redis(self, down_seconds: float) -> None:
        """SIGKILL Redis (what the AOF holds survives, the last second may not), then start
        it again on the same port and data directory."""
        self.redis.kill()
        time.sleep(down_seconds)
        self.redis.start()

    def stop(self) -> None:
        """Stop every process, the embedded servers last."""
        for name in ("worker", "beat", "api", "emulator"):
            child = self.children.get(name)
            if child is not None:
                with contextlib.suppress(Exception):
                    child.stop()
        if self._ping_app is not None:
            with contextlib.suppress(Exception):
                self._ping_app.close()
        for server in ("redis", "postgres"):
            if hasattr(self, server):
                with contextlib.suppress(Exception):
                    getattr(self, server).stop()
