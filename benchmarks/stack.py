"""The stack a benchmark runs against: embedded PostgreSQL and Redis, the Novu emulator, API
processes (uvicorn) and Celery workers, each process started and stopped by this module.

Everything lives in one temporary directory. Every process runs in its own session and is
stopped by its own pid, so nothing outlives the run.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

from devtools.devstack import EmbeddedPostgres, EmbeddedRedis, free_port

REPO = Path(__file__).resolve().parent.parent
PY = sys.executable

# What the benchmark processes run with: production defaults, logging included (a JSON line per
# accepted trigger and per delivered notification, to each process's log file; BENCH_LOG_LEVEL
# changes the level), except the per-key rate limit, raised far above what the load generator
# sends so that it is exercised (one Redis call per request) but never refuses.
BENCH_ENV = {
    "LOG_LEVEL": os.environ.get("BENCH_LOG_LEVEL", "INFO"),
    "LOG_FORMAT": "json",
    # Novu's Enterprise tier (6,000 Events tokens/s) at the emulator and in the workers' budget:
    # the benchmark measures XNovu, and at the Free tier's 60 (b) alone would take minutes.
    # Tokens per notification do not depend on the tier.
    "NOVU_EMULATOR_EVENTS_RPS": "6000",
    "NOVU_EVENTS_RPS": "6000",
    "RATE_LIMIT_PER_SECOND": "1000000",
    "RATE_LIMIT_BURST": "1000000",
    "PYTHONUNBUFFERED": "1",
}
LOG_LEVEL = BENCH_ENV["LOG_LEVEL"]


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll `predicate` until it holds; TimeoutError naming `what` otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if predicate():
                return
        time.sleep(0.1)
    raise TimeoutError(f"timed out waiting for {what}")


def _listeners(port: int) -> int:
    """How many sockets listen on 127.0.0.1:port (one per API process)."""
    return sum(
        1
        for conn in psutil.net_connections(kind="tcp")
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port
    )


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM to the process group it leads, SIGKILL if it does not exit in time."""
        if self.popen.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGTERM)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(5)


@dataclass
class BenchStack:
    """Servers and processes of one benchmark run, under `root`."""

    root: Path
    durable: bool = True
    postgres: EmbeddedPostgres | None = None
    redis: EmbeddedRedis | None = None
    env: dict[str, str] = field(default_factory=dict)
    processes: list[Process] = field(default_factory=list)
    emulator_url: str = ""

    def start(self) -> None:
        """PostgreSQL, Redis, migrations and the demo seed, and the Novu emulator."""
        self.root.mkdir(parents=True, exist_ok=True)
        # fast=False is what `make run` uses: fsync and synchronous commit on.
        self.postgres = EmbeddedPostgres(self.root / "pg", free_port(), fast=not self.durable)
        self.redis = EmbeddedRedis(self.root / "redis", free_port())
        database_url = self.postgres.start()
        redis_url = self.redis.start()
        emulator_port = free_port()
        self.emulator_url = f"http://127.0.0.1:{emulator_port}"
        self.env = {
            **os.environ,
            **BENCH_ENV,
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "NOVU_API_URL": self.emulator_url,
            "NOVU_EMULATOR_PORT": str(emulator_port),
            "XNOVU_DATA_DIR": str(self.root / "data"),
        }
        self.env.pop("NOVU_SECRET_KEY", None)
        os.environ.update(self.env)
        os.environ.pop("NOVU_SECRET_KEY", None)
        from shared.settings import get_settings

        get_settings.cache_clear()
        from devtools.seed import seed_demo
        from shared.db.session import reset_engine, transaction
        from shared.migrate import upgrade

        upgrade(database_url)
        reset_engine()
        with transaction() as session:
            seed_demo(session, get_settings())
        self.spawn(
            "emulator", [PY, "-m", "shared.cli", "novu-emulator", "--port", str(emulator_port)]
        )
        wait_for(
            lambda: httpx.get(f"{self.emulator_url}/_emulator/stats").status_code == 200,
            30,
            "the Novu emulator",
        )

    def spawn(
        self,
        name: str,
        args: list[str],
        env: dict[str, str] | None = None,
        cwd: Path = REPO,
    ) -> Process:
        """Start a process of this run (own session, output to `<root>/<name>.log`), in this
        checkout unless `cwd` names another."""
        log = self.root / f"{name}.log"
        handle = log.open("ab")
        popen = subprocess.Popen(
            args,
            env={**self.env, **(env or {})},
            cwd=cwd,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        handle.close()
        process = Process(name, popen, log)
        self.processes.append(process)
        return process

    def start_api(
        self, app: str = "api.app:app", *, workers: int = 2, name: str = "api"
    ) -> tuple[Process, str]:
        """APP on `workers` uvicorn processes (uvloop, httptools, no access log), one
        SO_REUSEPORT socket each (benchmarks/serve.py); returns it and its URL."""
        port = free_port()
        process = self.spawn(
            name,
            [PY, "-m", "benchmarks.serve", app, "--port", str(port), "--workers", str(workers)],
        )
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: httpx.get(f"{url}/healthz").status_code == 200, 60, f"{name} at {url}")
        wait_for(lambda: _listeners(port) >= workers, 30, f"{workers} processes of {name}")
        return process, url

    def start_worker(
        self,
        *,
        app: str = "worker.celery_app",
        queues: str = "xnovu.deliver,xnovu.maintenance",
        concurrency: int = 2,
        name: str = "worker",
        extra_env: dict[str, str] | None = None,
    ) -> Process:
        """A `celery worker` as `make run` starts it (prefork, events on, its metrics served:
        shared/metrics.py), ready when it pongs."""
        hostname = f"{name}-{os.getpid()}-{free_port()}@bench"
        process = self.spawn(
            name,
            [
                PY, "-m", "celery", "-A", app, "worker", f"--loglevel={LOG_LEVEL}", "-E",
                f"--concurrency={concurrency}", "-Q", queues, f"--hostname={hostname}",
                "--without-mingle", "--without-gossip",
            ],
            env={"WORKER_METRICS_PORT": str(free_port()), **(extra_env or {})},
        )  # fmt: skip
        from shared.queue import producer

        wait_for(
            lambda: bool(producer().control.ping(destination=[hostname], timeout=0.5)),
            60,
            f"celery worker {hostname} (log: {process.log})",
        )
        return process

    def start_beat(self) -> Process:
        """`celery beat`: the reconciler and the release of scheduled rows; ready when it has
        ticked (its heartbeat), so that its start-up, about a second of CPU, is over before
        a stage measures anything."""
        from shared.heartbeat import read_beat

        spawned = time.time()
        process = self.spawn(
            "beat",
            [
                PY, "-m", "celery", "-A", "worker.celery_app", "beat", f"--loglevel={LOG_LEVEL}",
                f"--schedule={self.root / 'celerybeat-schedule'}",
            ],
            env={"BEAT_METRICS_PORT": str(free_port())},
        )  # fmt: skip

        def ticked() -> bool:
            age = read_beat(self.env["REDIS_URL"]).age
            return age is not None and age < time.time() - spawned

        wait_for(ticked, 60, f"celery beat's first tick (log: {process.log})")
        return process

    def stop_process(self, process: Process) -> None:
        process.stop()
        if process in self.processes:
            self.processes.remove(process)

    def stop(self) -> None:
        """Every process this run started, then Redis and PostgreSQL."""
        for process in reversed(self.processes):
            process.stop()
        self.processes.clear()
        if self.redis is not None:
            self.redis.stop()
        if self.postgres is not None:
            self.postgres.stop()


@contextlib.contextmanager
def bench_stack(root: Path, *, durable: bool = True) -> Iterator[BenchStack]:
    """A started BenchStack, stopped on exit whatever happens."""
    stack = BenchStack(root, durable=durable)
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()
