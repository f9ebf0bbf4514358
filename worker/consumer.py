"""The worker's Celery consumer: task events for Flower sent in batches, at most
EVENT_FLUSH_SECONDS after they happen (docs/architecture.md, "Flower").

Celery buffers a worker's task events (received, started, succeeded, failed) and publishes the
buffer on the next turn of the worker's event loop, or when it holds `buffer_limit` (24)
events. With single notifications arriving one at a time every turn holds one event, so each
task cost three Redis PUBLISHes of the worker's main process: two fifths of its CPU at 100
deliveries a second (docs/performance.md). Flushing on a timer instead sends the events of a
tenth of a second together, in one message Flower reads as it reads any buffered batch.
"""

from __future__ import annotations

import logging
from typing import Any

from celery.worker.consumer import Consumer as CeleryConsumer
from kombu.asynchronous.timer import Entry

log = logging.getLogger(__name__)

# How long a task event may wait before it is published. Flower shows a task this much later;
# a full buffer (Celery's buffer_limit) is still published at once.
EVENT_FLUSH_SECONDS = 0.1


class Consumer(CeleryConsumer):  # type: ignore[misc]
    """Celery's consumer, its buffered task events flushed by a timer (see the module)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._event_flush: Entry | None = None

    def on_send_event_buffered(self) -> None:
        if self.hub is None:
            super().on_send_event_buffered()
            return
        # A flush already waits, unless the loop's restart after a broker error cancelled it.
        if self._event_flush is None or self._event_flush.canceled:
            self._event_flush = self.hub.call_later(EVENT_FLUSH_SECONDS, self._flush_timed)

    def _flush_timed(self) -> None:
        self._event_flush = None
        self._flush_events()

    def shutdown(self) -> None:
        # Events still waiting for the timer go out before the connection closes: a task that
        # finished just before a warm shutdown shows as finished in Flower. Monitoring never
        # stops a shutdown.
        try:
            self._flush_events()
        except Exception as exc:
            log.warning("task events not sent at shutdown: %s", exc)
        super().shutdown()
