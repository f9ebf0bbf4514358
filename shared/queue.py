"""Task and queue names, the Celery configuration both sides share, and publishing by name.

The API publishes `deliver_batch` by name only: it never imports worker internals. Callers
publish through `shared.notifications.publisher`, which leaves rows for beat when this fails.
"""

from __future__ import annotations

import base64
import enum
import json
import logging
import ssl
import uuid
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from typing import Any

import redis
from celery import Celery
from kombu.entity import Exchange, Queue

from shared.ids import uuid4s
from shared.redis_client import fail_fast_client, is_sentinel
from shared.settings import Settings, get_settings

log = logging.getLogger(__name__)


class TaskName(enum.StrEnum):
    # Nothing publishes it any more; the worker still consumes messages of it queued before an
    # upgrade (docs/architecture.md, "Upgrading").
    DELIVER_NOTIFICATION = "xnovu.deliver_notification"
    DELIVER_BATCH = "xnovu.deliver_batch"
    RECONCILE = "xnovu.reconcile"
    RELEASE_DUE = "xnovu.release_due_notifications"
    NOVU_SYNC = "xnovu.novu_sync"
    DISPATCH_WEBHOOKS = "xnovu.dispatch_webhooks"
    DELIVER_WEBHOOKS = "xnovu.deliver_webhooks"
    PURGE_FINISHED = "xnovu.purge_finished"
    FIRE_RULES = "xnovu.fire_rules"


class QueueName(enum.StrEnum):
    DELIVER = "xnovu.deliver"
    MAINTENANCE = "xnovu.maintenance"
    # Status webhooks to enterprises, consumed by workers of their own so that a slow endpoint
    # never holds a process that delivers notifications (docs/architecture.md, "Status
    # webhooks").
    WEBHOOKS = "xnovu.webhooks"


TASK_QUEUES: dict[TaskName, QueueName] = {
    TaskName.DELIVER_NOTIFICATION: QueueName.DELIVER,
    TaskName.DELIVER_BATCH: QueueName.DELIVER,
    TaskName.RECONCILE: QueueName.MAINTENANCE,
    TaskName.RELEASE_DUE: QueueName.MAINTENANCE,
    TaskName.NOVU_SYNC: QueueName.MAINTENANCE,
    TaskName.DISPATCH_WEBHOOKS: QueueName.MAINTENANCE,
    TaskName.DELIVER_WEBHOOKS: QueueName.WEBHOOKS,
    TaskName.PURGE_FINISHED: QueueName.MAINTENANCE,
    TaskName.FIRE_RULES: QueueName.MAINTENANCE,
}


def _declared(queue: QueueName) -> Queue:
    return Queue(queue.value, Exchange(queue.value), routing_key=queue.value)  # type: ignore[no-untyped-call]


def celery_config(settings: Settings) -> dict[str, Any]:
    """Celery settings that make a message's loss or repetition harmless
    (docs/architecture.md, guarantee 5)."""
    broker = settings.require_redis_url()
    return {
        "broker_url": broker,
        "result_backend": None,
        "task_ignore_result": True,
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_acks_on_failure_or_timeout": True,
        "worker_prefetch_multiplier": settings.worker_prefetch_multiplier,
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "task_routes": {name.value: {"queue": queue.value} for name, queue in TASK_QUEUES.items()},
        "task_default_queue": QueueName.DELIVER.value,
        # Every queue, declared as Celery declares a missing one, so that Flower's Broker page
        # lists them all even before it has heard from a worker.
        "task_queues": [_declared(queue) for queue in QueueName],
        "broker_connection_retry_on_startup": True,
        # When the broker connection drops, tasks already running finish and record their
        # outcome in PostgreSQL (Celery 6 would cancel them, leaving rows PROCESSING until their
        # lease runs out). Their ack may be lost with the connection; the message then comes
        # back and its claim finds nothing to do.
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        "broker_connection_timeout": 2,
        "broker_transport_options": {
            "visibility_timeout": settings.broker_visibility_timeout,
            "socket_connect_timeout": 2,
            "socket_timeout": 5,
            "retry_on_timeout": False,
            **_sentinel_master(settings),
        },
        # A publish that cannot reach Redis fails fast: the row in PostgreSQL is the record and
        # the reconciler publishes it later.
        "task_publish_retry": False,
        "timezone": "UTC",
        "enable_utc": True,
        **_broker_tls(broker),
    }


def _sentinel_master(settings: Settings) -> dict[str, Any]:
    """kombu's Sentinel transport asks the Sentinels for this master (REDIS_SENTINEL_MASTER)."""
    if not is_sentinel(settings.require_redis_url()):
        return {}
    return {"master_name": settings.require_sentinel_master()}


def _broker_tls(broker: str) -> dict[str, Any]:
    """A `rediss://` broker verifies Redis's certificate, as XNovu's own Redis clients (redis-py)
    do: kombu, given a `rediss://` URL without `ssl_cert_reqs`, connects without checking it.
    The URL's own `ssl_*` parameters (`?ssl_cert_reqs=none`, `ssl_ca_certs=...`) still win."""
    if not broker.startswith("rediss://"):
        return {}
    return {"broker_use_ssl": {"ssl_cert_reqs": ssl.CERT_REQUIRED}}


# How long one publish may wait for Redis (connect, or an answer) before the API gives up on it.
PUBLISH_TIMEOUT_SECONDS = 0.5


@lru_cache(maxsize=1)
def producer() -> Celery:
    """A Celery app used only to publish messages by task name."""
    app = Celery("xnovu-producer")
    config = celery_config(get_settings())
    # A publish never waits for Redis: without max_retries=0 kombu retries the connection for
    # broker_connection_timeout (2 s) on every publish while Redis is down, and a trigger's 202
    # would take that long; the short socket timeouts bound a publish to a Redis that hangs
    # (stopped, or a partition dropping packets) to 0.5 s. A publish that fails or times out
    # leaves the row for beat, and one that timed out but landed is a harmless duplicate.
    config["broker_connection_timeout"] = PUBLISH_TIMEOUT_SECONDS
    config["broker_transport_options"] = {
        **config["broker_transport_options"],
        "max_retries": 0,
        "socket_connect_timeout": PUBLISH_TIMEOUT_SECONDS,
        "socket_timeout": PUBLISH_TIMEOUT_SECONDS,
    }
    app.conf.update(config)
    return app


class RedisTaskWriter:
    """Writes Celery task messages straight onto the Redis list a worker consumes.

    `send_task` costs 0.5 to 0.8 ms of CPU per message (kombu builds a Redis client and a
    producer, and Celery a task-sent event, each time: measured in docs/performance.md), and
    the API publishes after every commit. This writes the same message with one LPUSH (about
    0.1 ms): headers, body and properties come from Celery's own `amqp.as_task_v2` (the task
    protocol, version 2), wrapped in the envelope kombu's Redis transport stores (body base64,
    a delivery tag, delivery_info naming the queue's direct exchange). A worker cannot tell
    the two apart; tests/shared/test_queue.py compares them field by field. Only `redis://`,
    `rediss://` and `sentinel://` (the master's lists) brokers qualify, and only messages with
    no priority.
    """

    def __init__(self, app: Celery, url: str) -> None:
        self._app = app
        self._redis = fail_fast_client(url, PUBLISH_TIMEOUT_SECONDS)
        # How many messages the longest list held right after this process's last answered
        # push, its own included (LPUSH answers the list's length): more than a few means the
        # workers are behind (the trigger recorder then lets messages grow, recorder.py).
        self.queue_length: int | None = None

    def envelope(
        self, task: TaskName, args: Sequence[Any], queue: str, countdown: float | None
    ) -> bytes:
        """The JSON kombu's Redis transport stores for one message of `task`."""
        task_id, delivery_tag = (str(value) for value in uuid4s(2))
        message = self._app.amqp.as_task_v2(
            task_id,
            task.value,
            args=args,
            countdown=countdown,
            reply_to=self._app.thread_oid,
            ignore_result=None,  # as send_task leaves it: the task's own setting applies
        )
        body = json.dumps(message.body).encode()
        return json.dumps(
            {
                "body": base64.b64encode(body).decode(),
                "content-encoding": "utf-8",
                "content-type": "application/json",
                "headers": message.headers,
                "properties": {
                    **message.properties,
                    "delivery_mode": 2,
                    "delivery_info": {"exchange": "", "routing_key": queue},
                    "priority": 0,
                    "body_encoding": "base64",
                    "delivery_tag": delivery_tag,
                },
            }
        ).encode()

    def publish(
        self,
        messages: Sequence[tuple[TaskName, Sequence[Any]]],
        *,
        countdown: float | None = None,
        queue: str | None = None,
    ) -> None:
        """LPUSH every message (to its task's queue, or to `queue`) in one round trip; raises
        when Redis cannot be reached."""
        self.send(messages, countdown=countdown, queue=queue)()

    def send(
        self,
        messages: Sequence[tuple[TaskName, Sequence[Any]]],
        *,
        countdown: float | None = None,
        queue: str | None = None,
    ) -> Callable[[], None]:
        """publish() in two halves: the LPUSHes (one per queue) are written now, and the
        function returned reads Redis's answers, raising as publish() does. In between, the
        caller may do other work rather than wait for the round trip (the trigger recorder
        records its next batch). Until then the connection is the caller's, out of the pool."""
        by_queue: dict[str, list[bytes]] = {}
        for task, args in messages:
            name = queue or TASK_QUEUES[task].value
            by_queue.setdefault(name, []).append(self.envelope(task, args, name, countdown))
        commands = [("LPUSH", name, *envelopes) for name, envelopes in by_queue.items()]
        pool = self._redis.connection_pool
        connection = pool.get_connection()
        # redis-py's Connection is untyped.
        packed = connection.pack_commands(commands)  # type: ignore[no-untyped-call]
        try:
            connection.send_packed_command(packed)  # type: ignore[no-untyped-call]
        except BaseException:
            connection.disconnect()  # type: ignore[no-untyped-call]
            pool.release(connection)
            raise

        def answers() -> None:
            try:
                longest = 0
                for _ in commands:
                    answer = connection.read_response()
                    if isinstance(answer, redis.ResponseError):
                        raise answer
                    longest = max(longest, int(answer))
                self.queue_length = longest
            except BaseException:
                connection.disconnect()  # type: ignore[no-untyped-call]
                raise
            finally:
                pool.release(connection)

        return answers


@lru_cache(maxsize=1)
def task_writer() -> RedisTaskWriter | None:
    """The process's writer, or None when the broker is not a plain Redis URL (then messages
    go through `send_task`)."""
    url = get_settings().require_redis_url()
    if not url.startswith(("redis://", "rediss://")) and not is_sentinel(url):
        return None
    return RedisTaskWriter(producer(), url)


def _send(messages: Sequence[tuple[TaskName, Sequence[Any]]], countdown: float | None) -> None:
    _start(messages, countdown)()


def _start(
    messages: Sequence[tuple[TaskName, Sequence[Any]]], countdown: float | None
) -> Callable[[], None]:
    """Send the messages; the function returned waits for the broker's answer (RedisTaskWriter
    .send). Through `send_task`, every message is sent and answered before this returns."""
    writer = task_writer()
    if writer is not None:
        return writer.send(messages, countdown=countdown)
    app = producer()
    for task, args in messages:
        app.send_task(
            task.value,
            args=list(args),
            queue=TASK_QUEUES[task].value,
            countdown=countdown,
            retry=False,
        )
    return _answered


def _answered() -> None:
    """The answer of messages already answered."""


def pushed_queue_length() -> int | None:
    """The longest list's length after this process's last answered publish (in the API, the
    delivery list: RedisTaskWriter.queue_length); None before one, or when messages go through
    `send_task`."""
    writer = task_writer()
    return None if writer is None else writer.queue_length


def _none_failed() -> dict[uuid.UUID, list[int]]:
    """The answer of nothing to publish."""
    return {}


def queue_depth(queue: QueueName) -> int | None:
    """Messages waiting in `queue` (not those workers already hold); None when the broker
    cannot be reached."""
    try:
        with producer().connection_or_acquire() as conn:
            try:
                declared = conn.default_channel.queue_declare(queue=queue.value, passive=True)
            except conn.channel_errors:
                return 0  # never declared, or Redis dropped the empty list: nothing waits
            return int(declared.message_count)
    except Exception as exc:
        log.warning("cannot read the length of queue %s: %s", queue.value, exc)
        return None


# -- batched delivery (bulk triggers) -----------------------------------------------------------

# Ids one deliver_batch message carries: the task sends them to Novu in bulk calls of at most
# 100 events, several calls in flight at once (see shared.notifications.delivery).
MAX_BATCH_MESSAGE_IDS = 1000


def publish_deliver_batch(
    enterprise_id: uuid.UUID,
    notification_ids: Sequence[int],
    *,
    countdown: float | None = None,
    ids_per_message: int | None = None,
) -> list[int]:
    """Publish deliver_batch(enterprise, ids) messages of at most `ids_per_message` ids
    (MAX_BATCH_MESSAGE_IDS at most), one enterprise per message; returns the ids that could not
    be published."""
    answers = send_deliver_batches(
        {enterprise_id: notification_ids}, countdown=countdown, ids_per_message=ids_per_message
    )
    return answers().get(enterprise_id, [])


def send_deliver_batches(
    batches: Mapping[uuid.UUID, Sequence[int]],
    *,
    countdown: float | None = None,
    ids_per_message: int | None = None,
) -> Callable[[], dict[uuid.UUID, list[int]]]:
    """publish_deliver_batch() for several enterprises at once, in two halves: the messages are
    sent now (one LPUSH), and the function returned waits for the broker's answer and returns,
    by enterprise, the ids that could not be published (all of them, or none)."""
    size = min(ids_per_message or MAX_BATCH_MESSAGE_IDS, MAX_BATCH_MESSAGE_IDS)
    messages = [
        (TaskName.DELIVER_BATCH, [str(enterprise_id), list(ids[start : start + size])])
        for enterprise_id, ids in batches.items()
        for start in range(0, len(ids), size)
    ]
    count = sum(len(ids) for ids in batches.values())

    def unpublished(exc: Exception) -> dict[uuid.UUID, list[int]]:
        # Broker down: the reconciler will publish these later.
        log.warning("publish failed for a batch of %d notifications: %s", count, exc)
        return {enterprise_id: list(ids) for enterprise_id, ids in batches.items() if ids}

    if not messages:
        return _none_failed
    try:
        answer = _start(messages, countdown)
    except Exception as exc:
        failed = unpublished(exc)
        return lambda: failed

    def answers() -> dict[uuid.UUID, list[int]]:
        try:
            answer()
        except Exception as exc:
            return unpublished(exc)
        return {}

    return answers


def publish_webhook_deliveries(claims: Sequence[Sequence[Any]]) -> bool:
    """Publish one deliver_webhooks(enterprise, endpoint, claim) message per claim; False when
    the broker refused them (their leases run out and the next dispatch claims them again)."""
    if not claims:
        return True
    try:
        _send([(TaskName.DELIVER_WEBHOOKS, list(args)) for args in claims], None)
    except Exception as exc:
        log.warning("publish failed for %d webhook claims: %s", len(claims), exc)
        return False
    return True
