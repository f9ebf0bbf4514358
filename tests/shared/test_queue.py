"""Publishing: the messages RedisTaskWriter writes are the ones Celery's send_task writes."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from shared.queue import (
    RedisTaskWriter,
    TaskName,
    producer,
    publish_deliver_batch,
    send_deliver_batches,
    task_writer,
)
from tests.conftest import Stack

# Fields that differ between any two messages (ids, and the publisher's host and pid).
PER_MESSAGE = {"id", "root_id", "correlation_id", "delivery_tag", "origin"}


def _pop_all(client: redis.Redis, queue: str) -> list[dict[str, Any]]:
    raw = client.lrange(queue, 0, -1)
    client.delete(queue)
    return [json.loads(item) for item in reversed(raw)]  # LPUSH: the newest first


def _shape(message: dict[str, Any]) -> dict[str, Any]:
    """The message with per-message values blanked and the body decoded."""
    headers = {k: (None if k in PER_MESSAGE else v) for k, v in message["headers"].items()}
    properties = {k: (None if k in PER_MESSAGE else v) for k, v in message["properties"].items()}
    body = json.loads(base64.b64decode(message["body"]))
    return {**message, "headers": headers, "properties": properties, "body": body}


@pytest.fixture()
def broker(stack: Stack) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(stack.redis_url)
    yield client
    client.close()


@pytest.fixture()
def scratch(broker: redis.Redis) -> Iterator[str]:
    """A queue no worker consumes (a worker may be running for other tests)."""
    name = f"xnovu.test.{uuid.uuid4().hex}"
    yield name
    broker.delete(name)


@pytest.mark.parametrize("countdown", [None, 30])
def test_the_writer_writes_what_send_task_writes(
    broker: redis.Redis, scratch: str, countdown: Any
) -> None:
    enterprise = str(uuid.uuid4())
    args = [enterprise, [1, 2, 3]]
    producer().send_task(
        TaskName.DELIVER_BATCH.value, args=args, queue=scratch, countdown=countdown, retry=False
    )
    writer = task_writer()
    assert isinstance(writer, RedisTaskWriter)
    writer.publish([(TaskName.DELIVER_BATCH, args)], countdown=countdown, queue=scratch)

    from_celery, from_writer = _pop_all(broker, scratch)
    celery_shape, writer_shape = _shape(from_celery), _shape(from_writer)
    if countdown is not None:
        # Each message's ETA is its own publish time plus the countdown.
        assert celery_shape["headers"].pop("eta") and writer_shape["headers"].pop("eta")
    assert writer_shape == celery_shape
    assert writer_shape["body"][0] == args
    assert from_writer["headers"]["id"] == from_writer["properties"]["correlation_id"]


def test_publish_writes_one_message_per_batch_or_per_notification_when_asked(
    broker: redis.Redis, scratch: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = task_writer()
    assert writer is not None
    send = writer.send
    monkeypatch.setattr(
        writer, "send", lambda messages, countdown=None: send(messages, queue=scratch)
    )
    enterprise = uuid.uuid4()
    assert publish_deliver_batch(enterprise, list(range(1, 2502))) == []
    assert publish_deliver_batch(enterprise, [7, 8], ids_per_message=1) == []
    messages = [_shape(m) for m in _pop_all(broker, scratch)]
    tasks = [(m["headers"]["task"], m["body"][0]) for m in messages]
    assert tasks == [
        (TaskName.DELIVER_BATCH.value, [str(enterprise), list(range(1, 1001))]),
        (TaskName.DELIVER_BATCH.value, [str(enterprise), list(range(1001, 2001))]),
        (TaskName.DELIVER_BATCH.value, [str(enterprise), list(range(2001, 2502))]),
        (TaskName.DELIVER_BATCH.value, [str(enterprise), [7]]),
        (TaskName.DELIVER_BATCH.value, [str(enterprise), [8]]),
    ]


def test_an_unreachable_broker_returns_every_id_as_unpublished(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Nothing listens on port 1: the connection is refused at once.
    unreachable = RedisTaskWriter(producer(), "redis://127.0.0.1:1/0")
    monkeypatch.setattr("shared.queue.task_writer", lambda: unreachable)
    enterprise = uuid.uuid4()
    assert publish_deliver_batch(enterprise, [1, 2], ids_per_message=1) == [1, 2]
    assert publish_deliver_batch(enterprise, [3, 4, 5]) == [3, 4, 5]


def _writer(stack: Stack) -> RedisTaskWriter:
    """A writer of its own, so that its pool's connections are this test's alone."""
    return RedisTaskWriter(producer(), stack.redis_url)


def test_a_send_is_written_before_its_answer_is_read_and_the_connection_comes_back(
    stack: Stack, broker: redis.Redis, scratch: str
) -> None:
    writer = _writer(stack)
    pool = writer._redis.connection_pool
    enterprise = str(uuid.uuid4())
    answers = writer.send([(TaskName.DELIVER_BATCH, [enterprise, [1, 2]])], queue=scratch)
    assert len(pool._in_use_connections) == 1  # the caller's until the answer is read
    deadline = time.monotonic() + 5
    while broker.llen(scratch) == 0 and time.monotonic() < deadline:
        time.sleep(0.01)  # Redis ran the LPUSH without anyone reading its answer yet
    assert broker.llen(scratch) == 1
    assert answers() is None
    assert len(pool._in_use_connections) == 0
    [message] = _pop_all(broker, scratch)
    assert _shape(message)["body"][0] == [enterprise, [1, 2]]


def test_a_connection_lost_before_the_answer_raises_and_the_next_send_reconnects(
    stack: Stack, broker: redis.Redis, scratch: str
) -> None:
    writer = _writer(stack)
    broker.client_pause(5000, all=False)  # writes wait: the LPUSH is not answered yet
    try:
        answers = writer.send([(TaskName.DELIVER_BATCH, ["e", [1]])], queue=scratch)
        [connection] = writer._redis.connection_pool._in_use_connections
        host, port = connection._sock.getsockname()[:2]
        assert broker.client_kill_filter(_id=None, addr=f"{host}:{port}") == 1
    finally:
        broker.client_unpause()
    with pytest.raises(redis.ConnectionError):
        answers()
    assert len(writer._redis.connection_pool._in_use_connections) == 0
    assert broker.llen(scratch) == 0  # the killed client's LPUSH never ran
    writer.publish([(TaskName.DELIVER_BATCH, ["e", [2]])], queue=scratch)
    assert [_shape(m)["body"][0] for m in _pop_all(broker, scratch)] == [["e", [2]]]


def test_several_enterprises_are_one_send_and_refused_together(
    stack: Stack, broker: redis.Redis, scratch: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = uuid.uuid4(), uuid.uuid4()
    writer = _writer(stack)
    sends: list[int] = []
    send = writer.send

    def counted(messages: Any, countdown: Any = None) -> Any:
        sends.append(len(messages))
        return send(messages, queue=scratch)

    monkeypatch.setattr(writer, "send", counted)
    monkeypatch.setattr("shared.queue.task_writer", lambda: writer)
    answers = send_deliver_batches({first: [1, 2], second: [3]}, ids_per_message=1)
    assert answers() == {}
    assert sends == [3]
    bodies = [_shape(m)["body"][0] for m in _pop_all(broker, scratch)]
    assert bodies == [[str(first), [1]], [str(first), [2]], [str(second), [3]]]

    unreachable = RedisTaskWriter(producer(), "redis://127.0.0.1:1/0")
    monkeypatch.setattr("shared.queue.task_writer", lambda: unreachable)
    refused = send_deliver_batches({first: [1, 2], second: [3]})
    assert refused() == {first: [1, 2], second: [3]}
