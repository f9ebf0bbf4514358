"""One active beat (shared/beat_lock.py, worker/beat.py): of two `celery beat` processes only
the one holding the lease in Redis sends tasks, the other stands by, and takes over when the
first is killed (its lease runs out) or stops (it gives the lease up)."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from devtools.devstack import EmbeddedRedis, free_port
from shared.beat_lock import BEAT_LOCK_KEY, BeatLock, lock_holder
from shared.heartbeat import read_beat
from shared.queue import QueueName
from tests.conftest import REPO, Stack, _wait_for
from worker.beat import StopBetweenTicks

pytestmark = pytest.mark.integration


def test_one_lease_at_a_time_taken_when_given_up_or_run_out(stack: Stack) -> None:
    client = redis.Redis.from_url(stack.redis_url)
    key = f"test:beat-lock:{uuid.uuid4().hex}"
    first = BeatLock(lambda: client, ttl=1.0, key=key)
    second = BeatLock(lambda: client, ttl=1.0, key=key)

    assert first.hold() and not second.hold()
    assert lock_holder(client, key) == first.token
    first.release()
    assert lock_holder(client, key) is None
    assert second.hold() and not first.hold()

    # The holder stops renewing (a beat frozen, or cut off from Redis): its lease runs out,
    # the other takes it, and the old holder, at its next renewal, finds it lost and stands by.
    _wait_for(lambda: lock_holder(client, key) is None, 30, "the lease to run out")
    assert first.hold() and lock_holder(client, key) == first.token
    assert not second.hold() and not second.held
    assert first.hold()


def test_a_second_beat_stands_by_and_takes_over(stack: Stack, tmp_path: Path) -> None:
    """While both run, only the first publishes; killed, it leaves the lease to run out and the
    second takes over."""
    with _two_beats(stack, tmp_path, ttl=3) as (client, beats, first, second):
        # While both run, only the first publishes: wait for several more of its ticks.
        sent = _origins(client)
        _wait_for(lambda: _origins(client)[first.pid] >= sent[first.pid] + 5, 60, "ticks")
        assert _origins(client)[second.pid] == 0, beats.log("second")

        first.send_signal(signal.SIGKILL)  # dies holding the lease
        first.wait(10)
        _wait_for(lambda: _origins(client)[second.pid] > 0, 60, "the second to take over")
        assert _holder_pid(client) == second.pid
        assert read_beat(beats.redis_url).alive  # the new active beat writes the heartbeat


def test_a_beat_that_stops_gives_the_lease_up(stack: Stack, tmp_path: Path) -> None:
    """A lease far longer than the waits below: the standby can only take over because the
    stopping beat released it."""
    with _two_beats(stack, tmp_path, ttl=300) as (client, beats, first, second):
        first.send_signal(signal.SIGTERM)
        assert first.wait(30) == 0, beats.log("first")
        _wait_for(lambda: _holder_pid(client) == second.pid, 60, "the second to take over")
        _wait_for(lambda: _origins(client)[second.pid] > 0, 30, "the second to publish")


@contextlib.contextmanager
def _two_beats(
    stack: Stack, tmp_path: Path, *, ttl: float
) -> Iterator[tuple[redis.Redis, _Beats, subprocess.Popen[bytes], subprocess.Popen[bytes]]]:
    """Two real beats against a Redis of their own (the suite's beat holds the lock of the
    suite's Redis), the first holding the lease, the second standing by. The messages each one
    publishes are told apart by their origin (the publishing process, `gen<pid>@host`)."""
    with EmbeddedRedis(tmp_path / "redis", free_port()) as own_redis:
        client = redis.Redis.from_url(own_redis.url)
        beats = _Beats(stack, own_redis.url, tmp_path)
        try:
            first = beats.start("first", ttl=ttl)
            _wait_for(lambda: _holder_pid(client) == first.pid, 60, "the first to take the lock")
            second = beats.start("second", ttl=ttl)
            _wait_for(lambda: "standing by" in beats.log("second"), 60, "the second to stand by")
            yield client, beats, first, second
        finally:
            beats.stop()


class _Beats:
    def __init__(self, stack: Stack, redis_url: str, tmp: Path) -> None:
        self.stack, self.redis_url, self.tmp = stack, redis_url, tmp
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, *, ttl: float) -> subprocess.Popen[bytes]:
        env = {
            **self.stack.env,
            "REDIS_URL": self.redis_url,
            "BEAT_LOCK_TTL_SECONDS": str(ttl),
            "LOG_LEVEL": "INFO",
            "LOG_FORMAT": "console",
        }
        proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "worker.celery_app", "beat",
             "--loglevel=INFO", f"--schedule={self.tmp / (name + '-schedule')}"],
            cwd=REPO, env=env, stdout=(self.tmp / f"{name}.log").open("wb"),
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        self.procs[name] = proc
        return proc

    def log(self, name: str) -> str:
        return (self.tmp / f"{name}.log").read_text(errors="replace")

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)


def _holder_pid(client: redis.Redis) -> int | None:
    token = lock_holder(client, BEAT_LOCK_KEY)
    return int(token.split(":")[1]) if token else None


def _origins(client: redis.Redis) -> Counter[int]:
    """Messages waiting in the maintenance queue, by the pid of the process that sent them."""
    counts: Counter[int] = Counter()
    for raw in client.lrange(QueueName.MAINTENANCE.value, 0, -1):
        envelope = json.loads(raw)
        origin = envelope["headers"]["origin"]  # gen<pid>@host
        counts[int(origin.split("@")[0].removeprefix("gen"))] += 1
        assert json.loads(base64.b64decode(envelope["body"]))  # a real task message
    return counts


def test_a_stop_signal_during_a_tick_is_handled_when_the_tick_ends() -> None:
    """Celery's handler raises SystemExit wherever beat is; inside a tick's publish that
    left beat running on a closed schedule, then dying with status 1. StopBetweenTicks
    holds the signal until the tick ends, and lets it through at once between ticks."""
    handled: list[str] = []

    def celerys_handler(signum: int, frame: object) -> None:
        handled.append(signal.Signals(signum).name)
        raise SystemExit()

    before = signal.signal(signal.SIGTERM, celerys_handler)
    try:
        guard = StopBetweenTicks((signal.SIGTERM,))
        steps: list[str] = []
        with pytest.raises(SystemExit), guard.ticking():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)  # delivered here, and held
            steps.append("the tick's publish")
            time.sleep(0.05)
            steps.append("the tick's end")
        assert steps == ["the tick's publish", "the tick's end"]
        assert handled == ["SIGTERM"]

        with pytest.raises(SystemExit):  # between ticks (beat's sleep): at once
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
        assert handled == ["SIGTERM", "SIGTERM"]
    finally:
        signal.signal(signal.SIGTERM, before)
