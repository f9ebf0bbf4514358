"""Beat's heartbeat (worker/beat.py, shared/heartbeat.py): the running beat writes it, /readyz
reports it, and `xnovu health beat` (the compose health check) fails once it is missing or
stale."""

from __future__ import annotations

import time

import pytest
import redis
from click.testing import CliRunner

from shared.cli import main
from shared.heartbeat import BEAT_KEY, BEAT_STALE_SECONDS, read_beat, write_beat

pytestmark = pytest.mark.integration


def _beat(client):
    return client.get("/readyz").json()["checks"]["beat"]


def _wait_for_tick(client, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        beat = _beat(client)
        if beat["status"] == "ok":
            return beat
        time.sleep(0.25)
    raise AssertionError(f"beat did not tick: {beat}")


def test_the_heartbeat_of_the_running_beat(client, worker, stack):
    beat = _wait_for_tick(client)
    assert 0 <= beat["lastTickSecondsAgo"] < BEAT_STALE_SECONDS
    ok = CliRunner().invoke(main, ["health", "beat"])
    assert ok.exit_code == 0 and "beat ticked" in ok.output

    store = redis.Redis.from_url(stack.redis_url)
    store.delete(BEAT_KEY)
    assert read_beat(stack.redis_url).as_json() == {"status": "never"}
    missing = CliRunner().invoke(main, ["health", "beat"])
    assert missing.exit_code == 1 and "has not ticked" in missing.output
    _wait_for_tick(client)  # beat writes it again within BEAT_EVERY_SECONDS

    write_beat(store, time.time() - BEAT_STALE_SECONDS - 10)
    stale = read_beat(stack.redis_url)
    assert not stale.alive and stale.as_json()["status"] == "stale"
    assert client.get("/readyz").status_code == 200  # beat is reported, not required
    _wait_for_tick(client)


def test_an_unreachable_redis_is_unknown_not_dead():
    state = read_beat("redis://127.0.0.1:1/0", timeout=0.2)
    assert state.error is not None and not state.alive
    assert state.as_json()["status"] == "unknown"
