"""A worker that holds an unacknowledged message (a countdown retry) while Redis goes away must
reconnect when Redis is back, not exit.

With Celery 5.7.0 / kombu 5.7.0 it exits: on the lost connection Celery's consumer calls
`connection.collect()`, which drops the transport's client while the channel, interrupted in its
BRPOP, stays open; the `connection.close()` that follows closes that channel, which restores
its unacknowledged messages through the dropped client: `AttributeError: 'NoneType' object has
no attribute 'hostname'` (docs/architecture.md, "Broker outages"). worker/broker.py works
around it. A Redis of its own and a worker of its own: the suite's stay up."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from celery import Celery

from devtools.devstack import EmbeddedRedis, free_port
from shared.queue import QueueName, TaskName, celery_config
from shared.settings import Settings
from tests.conftest import REPO, Stack, _wait_for
from tests.sentinel_server import MASTER, sentinel_for
from tests.tls_front import tls_front
from worker import broker
from worker.broker import serve_redis_schemes

pytestmark = pytest.mark.integration


def _held(app: Celery) -> int:
    """Messages the worker holds for their countdown."""
    answer = app.control.inspect(timeout=1.0).scheduled() or {}
    return sum(len(tasks) for tasks in answer.values())


def _broker_app(broker: str) -> Celery:
    """A Celery app configured as the worker's is (shared/queue.py, worker/celery_app.py)."""
    serve_redis_schemes()
    app = Celery()
    app.conf.update(celery_config(Settings.model_validate({"REDIS_URL": broker})))
    return app


def _connects(app: Celery) -> None:
    with app.connection_for_write() as connection:
        connection.ensure_connection(max_retries=1)
        connection.default_channel.client.ping()


def test_a_rediss_broker_checks_the_certificate_of_redis(tmp_path: Path) -> None:
    own = EmbeddedRedis(tmp_path / "redis", free_port())
    own.start()
    try:
        with tls_front(own.port, tmp_path) as front:
            # kombu alone connects to a rediss:// URL without ssl_cert_reqs unverified; ours
            # checks the certificate against the system's CAs, which do not know this one.
            with pytest.raises(Exception) as refused:
                _connects(_broker_app(front.url()))
            assert "CERTIFICATE_VERIFY_FAILED" in repr(refused.value), repr(refused.value)
            # Given the CA that signed it, it connects (through the patched transport).
            app = _broker_app(front.url(f"ssl_ca_certs={front.ca_path}"))
            with app.connection_for_write() as connection:
                assert type(connection.transport) is broker.Transport
            _connects(app)
    finally:
        own.stop()


@pytest.mark.parametrize("scheme", ["redis", "rediss", "sentinel"])
def test_a_worker_holding_a_countdown_message_survives_a_redis_crash(
    stack: Stack, tmp_path: Path, scheme: str
) -> None:
    own = EmbeddedRedis(tmp_path / "redis", free_port())
    url = own.start()
    worker_env = {"REDIS_URL": url}
    with contextlib.ExitStack() as servers:
        # rediss: the worker speaks TLS to a front that closes its connections when Redis stops.
        if scheme == "rediss":
            front = servers.enter_context(tls_front(own.port, tmp_path))
            worker_env["REDIS_URL"] = front.url(f"ssl_ca_certs={front.ca_path}")
        # sentinel: the worker asks a Sentinel watching that Redis where the master is.
        elif scheme == "sentinel":
            sentinel = servers.enter_context(sentinel_for(own, tmp_path / "sentinel"))
            worker_env = {"REDIS_URL": sentinel.url(), "REDIS_SENTINEL_MASTER": MASTER}
        _survives_a_redis_crash(stack, tmp_path, own, url, worker_env)


def _survives_a_redis_crash(
    stack: Stack, tmp_path: Path, own: EmbeddedRedis, url: str, worker_env: dict[str, str]
) -> None:
    log = tmp_path / "worker.log"
    app = Celery(broker=url)
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker", "--loglevel=INFO",
         "--concurrency=1", "-Q", QueueName.DELIVER.value, "--hostname=kombu-restore@test",
         "--without-mingle", "--without-gossip"],
        env={**stack.env, **worker_env}, cwd=REPO, stdout=log.open("wb"),
        stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        _wait_for(lambda: bool(app.control.ping(timeout=0.5)), 60, f"the worker (log: {log})")
        # A delivery of nothing (no such row), held by the worker for a minute: unacknowledged.
        app.send_task(
            TaskName.DELIVER_BATCH.value,
            args=[str(uuid.uuid4()), [0]],
            queue=QueueName.DELIVER.value,
            countdown=60,
        )
        _wait_for(lambda: _held(app) == 1, 30, "the worker to hold the message")
        own.stop()  # while the worker waits in BRPOP
        time.sleep(5)  # it notices at once (its socket is closed) and starts reconnecting
        own.start()
        try:
            _wait_for(lambda: bool(app.control.ping(timeout=1.0)), 60, "the worker to reconnect")
        finally:
            assert worker.poll() is None, log.read_text()[-4000:]
        assert "has no attribute 'hostname'" not in log.read_text()
        # ... and still holds the message, or has it back from Redis: nothing was lost.
        _wait_for(lambda: _held(app) == 1, 30, "the message to be held again")
    finally:
        worker.kill()
        worker.wait(10)
        own.stop()
