"""kombu's Redis transport, with one change that keeps the worker alive across a Redis crash
and one that makes its publishing cheaper.

Celery 5.7.0's consumer, on a lost broker connection, calls `connection.collect()` (which drops
the transport's client) and then `connection.close()`. When the channel was waiting in BRPOP,
collect() could not close it, so close() does, and restores the worker's unacknowledged
messages (prefetched, or held for their countdown) through the dropped client: kombu 5.7.0
raises `AttributeError: 'NoneType' object has no attribute 'hostname'`, which Celery does not
catch, and the worker exits (tests/integration/test_kombu_restore.py reproduces it every time;
docs/architecture.md, "Broker outages").

Here a channel whose connection is already gone restores nothing: with Redis unreachable it
could not anyway. The messages stay in Redis's unacked set, from which kombu puts them back
after `visibility_timeout`, and their notifications are in PostgreSQL, where the reconciler
finds them sooner (docs/architecture.md, guarantee 2). Used for `redis://`, `rediss://` and
`sentinel://` brokers, by kombu's aliases of those schemes (`serve_redis_schemes`, called by
worker/celery_app.py); remove it once Celery or kombu no longer need it.

The second: for every command it sends outside its polling (each task event the worker
publishes for Flower, each message it publishes, each queue length), kombu 5.7.0 builds a new
redis-py client on the channel's connection pool, and a client's constructor copies its ~250
response callbacks. With events on, that was a sixth of the worker's main process under single
deliveries at 100/s (docs/performance.md, "The worker's main process"). A channel here keeps
one such client per pool: a redis-py client holds no connection of its own (each command
takes one from the pool and gives it back), so one serves every caller as the fresh ones did;
a channel whose pool was replaced (after a reconnect) builds a client on the new one.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from kombu.transport import TRANSPORT_ALIASES, _transport_cache
from kombu.transport import redis as kombu_redis

log = logging.getLogger(__name__)


class QoS(kombu_redis.QoS):
    """Redis QoS that skips the restore when its channel's connection was torn down."""

    def restore_unacked(self, client: Any = None) -> None:
        """Put unacknowledged messages back, unless there is no connection left to do it on."""
        transport = self.channel.connection
        if client is None and (transport is None or transport.client is None):
            log.warning(
                "broker connection gone: %d unacknowledged messages left for Redis to restore "
                "after the visibility timeout",
                len(self._delivered),
            )
            self._delivered.clear()
            return
        super().restore_unacked(client)  # type: ignore[no-untyped-call]  # kombu is untyped


class _OneClientPerPool:
    """kombu's `conn_or_acquire` with the client it would build kept (the module's docstring)."""

    _kept_client: Any = None

    @contextmanager
    def conn_or_acquire(self, client: Any = None) -> Iterator[Any]:
        if client:
            yield client
            return
        kept = self._kept_client
        pool = self.pool  # type: ignore[attr-defined]  # kombu's Channel
        if kept is None or kept.connection_pool is not pool:
            kept = self._kept_client = self._create_client()  # type: ignore[attr-defined]
        yield kept


class Channel(_OneClientPerPool, kombu_redis.Channel):
    QoS = QoS


class Transport(kombu_redis.Transport):
    Channel = Channel


class SentinelChannel(_OneClientPerPool, kombu_redis.SentinelChannel):
    QoS = QoS


class SentinelTransport(kombu_redis.SentinelTransport):
    """The same change for `sentinel://` brokers: kombu's Sentinel channel restores the same
    way (its QoS is the Redis one)."""

    Channel = SentinelChannel


# kombu's aliases of the URL schemes this module's transports stand in for.
ALIASES = {
    "redis": f"{__name__}:Transport",
    "rediss": f"{__name__}:Transport",
    "sentinel": f"{__name__}:SentinelTransport",
}


def serve_redis_schemes() -> None:
    """Make kombu's `redis`, `rediss` and `sentinel` aliases name the transports above, in this
    process, rather than setting `broker_transport`: the broker URL keeps its scheme, which
    Flower's Broker page reads to choose how to list the queues (it answers 404 for a
    `module:Class` scheme) and from which kombu takes its `rediss` handling; and every
    connection of the process, consumer or producer, gets the change."""
    for alias, transport in ALIASES.items():
        TRANSPORT_ALIASES[alias] = transport
        # A transport resolved before this (none is, at the worker's import) would stay cached.
        _transport_cache.pop(alias, None)
