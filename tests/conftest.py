"""The real stack for the test suite: embedded PostgreSQL and Redis, the Novu emulator, a real
`celery worker` process and `celery beat`, and the API app (in-process through TestClient).
The worker comes with a real API process, the bridge Novu calls: NOVU_BRIDGE_PUBLIC_URL, which
the worker syncs with the emulator as with Novu (docs/architecture.md, "Novu").

Settings come from environment variables set here before any XNovu module reads them, with
short timings so retries and the reconciler act within seconds.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from devtools.devstack import EmbeddedPostgres, EmbeddedRedis, free_port

REPO = Path(__file__).resolve().parent.parent

TEST_TIMINGS = {
    "RECONCILE_INTERVAL_SECONDS": "0.5",
    "REDELIVER_AFTER_SECONDS": "3",
    "RETRY_BASE_SECONDS": "0.2",
    "RETRY_MAX_SECONDS": "1",
    "PROCESSING_LEASE_SECONDS": "5",
    "DELIVERY_MAX_ATTEMPTS": "4",
    "NOVU_TIMEOUT_SECONDS": "3",
    "MAX_PAYLOAD_BYTES": "65536",
    "MAX_BODY_BYTES": "262144",
    # Far above what any test sends; tests/api/test_limits.py tests the limiter with small ones.
    "RATE_LIMIT_PER_SECOND": "100000",
    "RATE_LIMIT_BURST": "100000",
    # Likewise for failed authentication (tests/api/test_auth_failures.py tests it).
    "AUTH_FAILURES_PER_SECOND": "100000",
    "AUTH_FAILURE_BURST": "100000",
    # Retention off in the workers: tests/worker/test_retention.py runs its purge itself, and a
    # beat purge between its setup and its purge would take its rows.
    "RETENTION_DAYS": "0",
    # Status webhooks go to receivers on 127.0.0.1, retried within seconds.
    "WEBHOOK_ALLOW_PRIVATE_NETWORKS": "true",
    "WEBHOOK_RETRY_SCHEDULE": "0.5,0.5,1,1",
    "WEBHOOK_DISPATCH_INTERVAL_SECONDS": "0.2",
    "WEBHOOK_TIMEOUT_SECONDS": "3",
    "WEBHOOK_DISABLE_AFTER_FAILED_MESSAGES": "3",
    "LOG_LEVEL": "WARNING",
}


@dataclass
class Stack:
    tmp: Path
    postgres: EmbeddedPostgres
    redis: EmbeddedRedis
    database_url: str
    redis_url: str
    emulator_url: str
    env: dict[str, str]
    # The port of the API process the `bridge_process` fixture runs (NOVU_BRIDGE_PUBLIC_URL's).
    bridge_port: int


def _wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except Exception:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"timed out waiting for {what}")


def _spawn(
    args: list[str], env: dict[str, str], log: Path, *, append: bool = False
) -> subprocess.Popen[bytes]:
    handle = log.open("ab" if append else "wb")
    return subprocess.Popen(
        args, env=env, cwd=REPO, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
    )


def _exit_report(name: str, proc: subprocess.Popen[bytes], log: Path) -> str:
    tail = log.read_text(errors="replace").splitlines()[-15:]
    return f"{name} exited with code {proc.returncode}; its log ended:\n" + "\n".join(tail)


def _stop(proc: subprocess.Popen[bytes], timeout: float = 15) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait(5)


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("stack")
    postgres = EmbeddedPostgres(tmp / "pg", free_port(), fast=True)
    redis_server = EmbeddedRedis(tmp / "redis", free_port())
    database_url = postgres.start()
    redis_url = redis_server.start()
    emulator_port = free_port()
    bridge_port = free_port()
    from shared.settings import new_webhook_secret

    webhook_secret = new_webhook_secret()
    env = {
        **os.environ,
        **TEST_TIMINGS,
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "NOVU_API_URL": f"http://127.0.0.1:{emulator_port}",
        "NOVU_EMULATOR_PORT": str(emulator_port),
        "NOVU_BRIDGE_PUBLIC_URL": f"http://127.0.0.1:{bridge_port}/api/novu",
        # The emulator sends Novu's message webhooks to the bridge API process, signed as Novu's
        # are (docs/architecture.md, "Delivery events from Novu").
        "NOVU_WEBHOOK_SECRET": webhook_secret,
        "NOVU_EMULATOR_WEBHOOK_SECRET": webhook_secret,
        "NOVU_EMULATOR_WEBHOOK_URL": f"http://127.0.0.1:{bridge_port}/api/novu/webhooks",
        "XNOVU_DATA_DIR": str(tmp / "data"),
        "PYTHONUNBUFFERED": "1",
        # The delivery log page's cookie key, generated as `make run` generates it.
        "UI_SESSION_SECRET": secrets.token_urlsafe(32),
    }
    env.pop("NOVU_SECRET_KEY", None)
    os.environ.update(env)
    os.environ.pop("NOVU_SECRET_KEY", None)
    from shared.settings import get_settings

    get_settings.cache_clear()
    from shared.migrate import upgrade

    upgrade(database_url)
    try:
        yield Stack(
            tmp=tmp,
            postgres=postgres,
            redis=redis_server,
            database_url=database_url,
            redis_url=redis_url,
            emulator_url=f"http://127.0.0.1:{emulator_port}",
            env=env,
            bridge_port=bridge_port,
        )
    finally:
        redis_server.stop()
        postgres.stop()


@pytest.fixture(scope="session")
def novu_emulator(stack: Stack) -> Iterator[str]:
    """The emulator as its own process (`xnovu novu-emulator`), as `make run` starts it."""
    port = stack.emulator_url.rsplit(":", 1)[1]
    proc = _spawn(
        [sys.executable, "-m", "shared.cli", "novu-emulator", "--port", port],
        stack.env,
        stack.tmp / "emulator.log",
    )
    try:
        _wait_for(
            lambda: httpx.get(f"{stack.emulator_url}/_emulator/stats").status_code == 200,
            20,
            f"the Novu emulator (log: {stack.tmp / 'emulator.log'})",
        )
        yield stack.emulator_url
    finally:
        _stop(proc)


@contextlib.contextmanager
def api_process(stack: Stack, name: str, port: int | None = None, **env: str) -> Iterator[str]:
    """A real uvicorn API process on `port` (default: a free one), for what must reach the API
    over HTTP, or a second process; yields its URL and stops it afterwards."""
    port = port or free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "api.app:app",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        cwd=REPO,
        env={**stack.env, **env},
        stdout=subprocess.DEVNULL,
        stderr=(stack.tmp / f"{name}.log").open("wb"),
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_for(lambda: httpx.get(f"{url}/healthz").status_code == 200, 30, f"the {name} API")
        yield url
    finally:
        _stop(proc)


def _port(url: str) -> str:
    return str(httpx.URL(url).port)


class Worker:
    """A real `celery worker` (and `celery beat`) process against the test stack."""

    def __init__(
        self,
        stack: Stack,
        name: str = "worker",
        concurrency: int = 2,
        queues: str = "xnovu.deliver,xnovu.maintenance",
        pool: str = "prefork",
    ) -> None:
        self.stack = stack
        self.name = name
        self.concurrency = concurrency
        self.queues = queues
        self.pool = pool
        self.proc: subprocess.Popen[bytes] | None = None
        self.beat: subprocess.Popen[bytes] | None = None
        self.log = stack.tmp / f"{name}.log"
        # Where the worker and its beat serve their metrics (shared/metrics.py).
        self.metrics_url = f"http://127.0.0.1:{free_port()}/metrics"
        self.beat_metrics_url = f"http://127.0.0.1:{free_port()}/metrics"

    def start(self, *, with_beat: bool = True) -> None:
        self._start_worker(append=False)
        if with_beat:
            self._start_beat(append=False)

    def _start_worker(self, *, append: bool) -> None:
        hostname = f"{self.name}-{uuid.uuid4().hex[:6]}@test"
        self.proc = _spawn(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "worker.celery_app",
                "worker",
                "--loglevel=INFO",
                "-E",
                f"--concurrency={self.concurrency}",
                f"--pool={self.pool}",
                "-Q",
                self.queues,
                f"--hostname={hostname}",
                "--without-mingle",
                "--without-gossip",
            ],
            {**self.stack.env, "WORKER_METRICS_PORT": _port(self.metrics_url)},
            self.log,
            append=append,
        )
        from shared.queue import producer

        def pong() -> bool:
            replies = producer().control.ping(destination=[hostname], timeout=0.5)
            return bool(replies)

        _wait_for(pong, 60, f"celery worker {hostname} (log: {self.log})")

    def _start_beat(self, *, append: bool) -> None:
        self.beat = _spawn(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "worker.celery_app",
                "beat",
                "--loglevel=INFO",
                f"--schedule={self.stack.tmp / (self.name + '-beat')}",
            ],
            {**self.stack.env, "BEAT_METRICS_PORT": _port(self.beat_metrics_url)},
            self.stack.tmp / f"{self.name}-beat.log",
            append=append,
        )

    @contextlib.contextmanager
    def supervised(self, every: float = 0.5) -> Iterator[list[str]]:
        """Within the block, revive() whatever exits, every `every` seconds, as a supervisor
        would; yields the exit reports gathered so far."""
        exited: list[str] = []
        done = threading.Event()

        def watch() -> None:
            while not done.wait(every):
                # A start that times out (Redis still away) is tried again at the next round.
                with contextlib.suppress(TimeoutError):
                    exited.extend(self.revive())

        watcher = threading.Thread(target=watch, name=f"supervise-{self.name}", daemon=True)
        watcher.start()
        try:
            yield exited
        finally:
            done.set()
            watcher.join()

    def revive(self) -> list[str]:
        """Start again whichever of the worker and beat has exited, as their supervisor does in
        production (compose's `restart:`, `make run`'s respawn); returns what had exited, with
        its exit code and the last lines of its log."""
        exited = []
        if self.beat is not None and self.beat.poll() is not None:
            exited.append(_exit_report("beat", self.beat, self.stack.tmp / f"{self.name}-beat.log"))
            self._start_beat(append=True)
        if self.proc is not None and self.proc.poll() is not None:
            exited.append(_exit_report(self.name, self.proc, self.log))
            self._start_worker(append=True)
        return exited

    def stop(self) -> None:
        for proc in (self.beat, self.proc):
            if proc is not None:
                _stop(proc)


class BridgeApi:
    """The API process at NOVU_BRIDGE_PUBLIC_URL, whose bridge the emulator calls (discover at
    each sync, execute for each step); stop() and start() again to take the bridge away."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.url = f"http://127.0.0.1:{stack.bridge_port}"
        self._running: contextlib.ExitStack | None = None

    def start(self) -> None:
        running = contextlib.ExitStack()
        running.enter_context(api_process(self.stack, "bridge-api", port=self.stack.bridge_port))
        self._running = running

    def stop(self) -> None:
        if self._running is not None:
            self._running.close()
            self._running = None


@pytest.fixture(scope="session")
def bridge_process(stack: Stack) -> Iterator[BridgeApi]:
    api = BridgeApi(stack)
    api.start()
    yield api
    api.stop()


def novu_workflows(emulator_url: str) -> set[str]:
    """The workflow ids the emulator (Novu) knows."""
    known = httpx.get(f"{emulator_url}/_emulator/workflows").json()
    return {workflow["workflowId"] for workflow in known}


@pytest.fixture(scope="session")
def worker(stack: Stack, novu_emulator: str, bridge_process: BridgeApi) -> Iterator[Worker]:
    """The worker and beat, with the bridge API up: the worker syncs Novu when it starts, and
    tests begin once Novu knows the workflows (a trigger before would be Novu's 422, and wait
    for that very sync)."""
    w = Worker(stack)
    w.start()
    _wait_for(
        lambda: "user-signup" in novu_workflows(novu_emulator),
        30,
        f"the worker's first Novu sync (log: {w.log})",
    )
    yield w
    w.stop()


@pytest.fixture(autouse=True)
def _workers_outlive_the_test(request: pytest.FixtureRequest) -> Iterator[None]:
    """A worker or beat that exits during a test is started again afterwards, so that one crash
    fails one test and not every test after it; the test fails with the exit report unless it
    is marked `worker_may_exit` (it takes Redis away, see that marker)."""
    yield
    exited: list[str] = []
    for name in ("worker", "webhook_worker"):
        if name in request.fixturenames:
            exited += request.getfixturevalue(name).revive()
    if exited and request.node.get_closest_marker("worker_may_exit") is None:
        pytest.fail("\n\n".join(exited), pytrace=False)


@pytest.fixture(scope="session")
def webhook_worker(worker: Worker) -> Iterator[Worker]:
    """The status webhooks' worker (its own queue and threads, as `make run` starts it); the
    `worker` fixture's beat dispatches to it."""
    w = Worker(worker.stack, "webhooks", concurrency=8, queues="xnovu.webhooks", pool="threads")
    w.start(with_beat=False)
    yield w
    w.stop()


@pytest.fixture(scope="session")
def app(stack: Stack) -> Any:
    from api.app import create_app

    return create_app()


@pytest.fixture()
def client(app: Any) -> Iterator[Any]:
    from fastapi.testclient import TestClient

    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


@dataclass(frozen=True)
class Tenant:
    enterprise_id: uuid.UUID
    api_key: str
    key_id: int

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}


def make_tenant(*, service: bool = False) -> Tenant:
    """A new enterprise with its own API key (or a service key), committed."""
    from shared.apikeys import create_api_key
    from shared.db.enums import ApiKeyScope
    from shared.db.session import transaction

    enterprise_id = uuid.uuid4()
    scope = ApiKeyScope.SERVICE if service else ApiKeyScope.ENTERPRISE
    with transaction() as session:
        row, key = create_api_key(
            session, enterprise_id=None if service else enterprise_id, scope=scope, name="test"
        )
        key_id = row.id
    return Tenant(enterprise_id=enterprise_id, api_key=key, key_id=key_id)


@pytest.fixture()
def tenant(stack: Stack) -> Tenant:
    return make_tenant()


@pytest.fixture()
def operator(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The operator credential's headers, its token set for this test (XNOVU_OPERATOR_TOKEN)."""
    from pydantic import SecretStr

    from shared.settings import get_settings

    token = f"op-{uuid.uuid4().hex}{uuid.uuid4().hex}"
    monkeypatch.setattr(get_settings(), "operator_token", SecretStr(token))
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture()
def emulator(novu_emulator: str) -> Iterator[httpx.Client]:
    """An HTTP client for the emulator's control endpoints; faults are cleared afterwards."""
    with httpx.Client(base_url=novu_emulator, timeout=10) as http:
        http.delete("/_emulator/faults")
        yield http
        http.delete("/_emulator/faults")


def retract_leftover_rows(by: str) -> None:
    """Retract the rows earlier tests left PENDING (retries due later, some a minute later), so
    that they cannot come back during a test that paces or counts Novu calls: each would take
    tokens from the Novu budget every row shares, and a refusal drains it."""
    from sqlalchemy import func, update

    from shared.db.enums import NotificationStatus
    from shared.db.models import Notification
    from shared.db.session import transaction

    with transaction() as session:
        session.execute(
            update(Notification)
            .where(Notification.notification_status == NotificationStatus.PENDING)
            .values(
                notification_status=NotificationStatus.RETRACTED,
                retracted_at=func.now(),
                retraction_reason=f"retracted by {by}",
                locked_until=None,
            )
        )


def signup_payload(user: str | None = None) -> dict[str, Any]:
    user = user or f"u-{uuid.uuid4().hex[:8]}"
    return {"userId": user, "email": f"{user}@example.com", "name": "Ada Lovelace"}


def wait_for_status(
    client: Any, tenant: Tenant, notification_id: int, statuses: set[str], timeout: float = 15
) -> dict[str, Any]:
    """Poll the API until the notification reaches one of `statuses`; returns its body."""
    deadline = time.monotonic() + timeout
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        body = client.get(f"/api/notifications/{notification_id}", headers=tenant.headers).json()
        if body.get("notification_status") in statuses:
            return body
        time.sleep(0.1)
    raise AssertionError(
        f"notification {notification_id} stayed {body.get('notification_status')}: {body}"
    )
