"""worker/broker.py's channel keeps one redis-py client per connection pool for the commands it
sends outside its polling, where kombu built a client per command: the same client serves
every publish and messages still arrive, and a channel whose pool was replaced
(as after a reconnect) builds its client on the new pool. Against the suite's Redis."""

from __future__ import annotations

from kombu import Connection, Exchange, Queue

from tests.conftest import Stack
from worker import broker
from worker.broker import serve_redis_schemes


def test_a_channel_publishes_through_one_client_per_pool(stack: Stack) -> None:
    serve_redis_schemes()
    queue_name = "xnovu.test.broker-clients"
    with Connection(stack.redis_url) as connection:
        channel = connection.channel()
        try:
            assert isinstance(channel, broker.Channel)
            with channel.conn_or_acquire() as first, channel.conn_or_acquire() as second:
                assert first is second
                assert first.connection_pool is channel.pool
            given = object()
            with channel.conn_or_acquire(given) as passed:  # a caller's own client is used
                assert passed is given

            queue = Queue(queue_name, Exchange(queue_name, type="direct"), queue_name)
            producer = connection.Producer(channel)
            queue(channel).declare()
            for number in range(3):
                producer.publish({"n": number}, exchange=queue.exchange, routing_key=queue_name)
            assert [
                queue(channel).get(no_ack=True).payload["n"]
                for _ in range(3)  # type: ignore[union-attr]
            ] == [0, 1, 2]

            with channel.conn_or_acquire() as kept:
                pass
            channel._pool = None  # what kombu does when it drops its pools on a reconnect
            with channel.conn_or_acquire() as rebuilt:
                assert rebuilt is not kept
                assert rebuilt.connection_pool is channel.pool
                assert rebuilt.ping()
        finally:
            channel.close()
            with Connection(stack.redis_url) as cleanup:
                cleanup.default_channel.client.delete(queue_name)
