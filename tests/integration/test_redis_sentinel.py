"""XNovu behind Redis Sentinel (`REDIS_URL=sentinel://…`, REDIS_SENTINEL_MASTER): an API process,
a worker and beat of their own, on a Redis of their own that only a Sentinel names, deliver a
trigger, and the worker keeps delivering once the master moves to another address
(docs/scaling.md, "Redis"). Every Redis client of theirs goes through the Sentinel: the broker,
the direct publish, the rate limiter, the Novu budget, beat's lock and heartbeat."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from celery import Celery
from redis.sentinel import Sentinel

from devtools.devstack import EmbeddedRedis, free_port
from shared.queue import QueueName
from shared.redis_client import redis_from_url
from shared.settings import Settings
from tests.conftest import REPO, Stack, _stop, _wait_for, api_process, make_tenant, signup_payload
from tests.sentinel_server import MASTER, SentinelServer, sentinel_for

pytestmark = pytest.mark.integration


def _spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "worker.celery_app", *args],
        env=env,
        cwd=REPO,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


@pytest.fixture()
def behind_sentinel(
    stack: Stack, tmp_path: Path
) -> Iterator[tuple[SentinelServer, dict[str, str]]]:
    """A Redis only a Sentinel names, and the environment of processes that use it."""
    own = EmbeddedRedis(tmp_path / "redis", free_port())
    own.start()
    try:
        with sentinel_for(own, tmp_path / "sentinel") as sentinel:
            env = {**stack.env, "REDIS_URL": sentinel.url(), "REDIS_SENTINEL_MASTER": MASTER}
            env.pop("RATE_LIMIT_REDIS_URL", None)  # REDIS_URL's, as by default
            yield sentinel, env
    finally:
        own.stop()


def _trigger_and_wait_sent(api: str, tenant: object) -> None:
    headers = tenant.headers  # type: ignore[attr-defined]
    body = {"workflowId": "user-signup", "payload": signup_payload()}
    accepted = httpx.post(f"{api}/api/trigger", json=body, headers=headers, timeout=10)
    assert accepted.status_code == 202, accepted.text
    url = f"{api}/api/notifications/{accepted.json()['notificationId']}"

    def sent() -> bool:
        return httpx.get(url, headers=headers, timeout=5).json()["notification_status"] == "SENT"

    _wait_for(sent, 30, f"notification {url} to be SENT")


def _checks(api: str) -> dict[str, Any]:
    checks: dict[str, Any] = httpx.get(f"{api}/readyz", timeout=10).json()["checks"]
    return checks


def _fail_over_to(sentinel: SentinelServer, replica: EmbeddedRedis) -> None:
    """Make `replica` a replica of the Sentinel's master, then have the Sentinel fail over to
    it (SENTINEL FAILOVER, as after the master's failure), and wait until it names it."""
    address = ("127.0.0.1", replica.port)
    to_replica = redis.Redis(port=replica.port, socket_timeout=2)
    to_replica.replicaof("127.0.0.1", sentinel.redis.port)
    _wait_for(
        lambda: to_replica.info("replication")["master_link_status"] == "up",
        30,
        "the replica to catch up",
    )
    known = Sentinel([("127.0.0.1", sentinel.port)], socket_timeout=2)  # type: ignore[no-untyped-call]
    # A Sentinel learns a master's replicas from its INFO, every 10 seconds.
    _wait_for(
        lambda: address in known.discover_slaves(MASTER),  # type: ignore[no-untyped-call]
        40,
        "the Sentinel to know the replica",
    )
    to_sentinel = redis.Redis(port=sentinel.port, socket_timeout=5)

    def failover_started() -> bool:
        # NOGOODSLAVE until the Sentinel has seen the replica's link up in its INFO.
        try:
            return bool(to_sentinel.execute_command("SENTINEL", "FAILOVER", MASTER))
        except redis.ResponseError as exc:
            if "NOGOODSLAVE" in str(exc):
                return False
            raise

    _wait_for(failover_started, 40, "the Sentinel to accept the failover")
    _wait_for(
        lambda: known.discover_master(MASTER) == address,  # type: ignore[no-untyped-call]
        40,
        "the Sentinel to name the new master",
    )


def test_an_api_a_worker_and_beat_behind_sentinel_deliver(
    stack: Stack,
    tmp_path: Path,
    behind_sentinel: tuple[SentinelServer, dict[str, str]],
    worker: Any,  # the suite's: Novu knows the workflows once it has synced (its Redis is other)
) -> None:
    sentinel, env = behind_sentinel
    # What each process sees: the master's address, asked of the Sentinel.
    master = redis_from_url(sentinel.url(), sentinel_master=MASTER, socket_timeout=2)
    assert Settings.model_validate(env).redis_sentinel_master == MASTER
    queues = f"{QueueName.DELIVER.value},{QueueName.MAINTENANCE.value}"
    own_worker = _spawn(
        ["worker", "--loglevel=INFO", "--concurrency=1", "-Q", queues,
         "--hostname=sentinel@test", "--without-mingle", "--without-gossip"],
        env, tmp_path / "worker.log",
    )  # fmt: skip
    beat = _spawn(
        ["beat", "--loglevel=INFO", f"--schedule={tmp_path / 'beat-schedule'}"],
        env,
        tmp_path / "beat.log",
    )
    try:
        control = Celery(broker=f"redis://127.0.0.1:{sentinel.redis.port}/0")
        _wait_for(
            lambda: bool(control.control.ping(timeout=0.5)),
            60,
            f"the worker (log: {tmp_path / 'worker.log'})",
        )
        with api_process(stack, "sentinel-api", **env) as api:
            tenant = make_tenant()
            _trigger_and_wait_sent(api, tenant)
            # The API's checks reach Redis and beat through the Sentinel too.
            ready = httpx.get(f"{api}/readyz", timeout=10).json()
            assert ready["checks"]["broker"] == "ok", ready
            _wait_for(
                lambda: _checks(api)["beat"]["status"] == "ok",
                30,
                "beat's heartbeat through the Sentinel",
            )
            # The delivery went through that Redis: its queues and keys are there.
            assert master.dbsize() > 0

            # A failover: a replica of that Redis becomes the master, the old one a replica.
            replica = EmbeddedRedis(tmp_path / "replica", free_port())
            replica.start()
            try:
                _fail_over_to(sentinel, replica)
                # Every process finds the new master through the Sentinel and goes on.
                _trigger_and_wait_sent(api, tenant)
                _wait_for(lambda: _checks(api)["broker"] == "ok", 30, "the API's broker check")
            finally:
                replica.stop()
        assert own_worker.poll() is None and beat.poll() is None
    finally:
        _stop(own_worker)
        _stop(beat)
