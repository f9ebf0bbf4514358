"""A Redis Sentinel (the redis-server the devstack uses, in sentinel mode) watching one Redis, for
the `sentinel://` tests: what a Redis HA setup gives XNovu to connect to."""

from __future__ import annotations

import contextlib
import subprocess
from pathlib import Path

from redis.sentinel import Sentinel

from devtools.devstack import EmbeddedRedis, free_port
from tests.conftest import _wait_for
from tests.running import running

MASTER = "xnovu-test"


class SentinelServer:
    def __init__(self, directory: Path, redis: EmbeddedRedis) -> None:
        self.directory = directory
        self.redis = redis
        self.port = free_port()
        self._proc: subprocess.Popen[bytes] | None = None

    def url(self, db: int = 0) -> str:
        """REDIS_URL in Celery's form (REDIS_SENTINEL_MASTER is MASTER)."""
        return f"sentinel://127.0.0.1:{self.port}/{db}"

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        conf = self.directory / "sentinel.conf"  # Sentinel rewrites it: its own file
        conf.write_text(
            f"bind 127.0.0.1\nport {self.port}\ndir {self.directory}\n"
            f"sentinel monitor {MASTER} 127.0.0.1 {self.redis.port} 1\n"
            f"sentinel down-after-milliseconds {MASTER} 1000\n"
        )
        log = (self.directory / "sentinel.log").open("wb")
        self._proc = subprocess.Popen(
            [str(self.redis.binary), str(conf), "--sentinel"],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        sentinel = Sentinel([("127.0.0.1", self.port)], socket_timeout=1)  # type: ignore[no-untyped-call]
        _wait_for(
            lambda: sentinel.discover_master(MASTER) == ("127.0.0.1", self.redis.port),  # type: ignore[no-untyped-call]
            30,
            f"the Sentinel to know {MASTER} (log: {self.directory / 'sentinel.log'})",
        )

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(10)


def sentinel_for(
    redis: EmbeddedRedis, directory: Path
) -> contextlib.AbstractContextManager[SentinelServer]:
    return running(SentinelServer(directory, redis))
