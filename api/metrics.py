"""Prometheus metrics of an API process at GET /metrics (one series set per process).

The series count every enterprise's traffic together, so they are the operator's: /metrics
needs the operator credential (api/operator.py), which Prometheus sends as a bearer token
(`authorization: {credentials: ...}` in its scrape config). No label names an enterprise.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from fastapi import APIRouter, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.operator import OperatorDep
from shared import metrics as shared_metrics
from shared.notifications.recorder import trigger_recorder
from shared.novu.budget import novu_usage

REGISTRY = CollectorRegistry(auto_describe=True)
REQUESTS = Counter(
    "xnovu_http_requests_total",
    "HTTP requests by route template, method and status.",
    ["method", "route", "status"],
    registry=REGISTRY,
)
LATENCY = Histogram(
    "xnovu_http_request_duration_seconds",
    "HTTP request latency by route template.",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
    registry=REGISTRY,
)


class RecorderCollector(Collector):
    """The process's trigger recorder (shared/notifications/recorder.py): rows per transaction
    and per message tell how well triggers are being grouped."""

    def collect(self) -> Iterator[Metric]:
        recorder = trigger_recorder()
        for name, help_text, value in (
            (
                "xnovu_trigger_batches",
                "Transactions in which the trigger recorder committed triggers.",
                recorder.batches,
            ),
            ("xnovu_trigger_rows", "Triggers the trigger recorder committed.", recorder.rows),
            (
                "xnovu_trigger_messages",
                "deliver_batch messages the trigger recorder published.",
                recorder.messages,
            ),
        ):
            yield CounterMetricFamily(name, help_text, value=value)


REGISTRY.register(RecorderCollector())


class NovuUsageCollector(Collector):
    """What every worker's deliveries cost in Novu's Events rate limit, all enterprises
    together (counted in Redis by the workers, read at each scrape): the tokens Novu charged
    and the notifications it accepted, and their ratio."""

    def collect(self) -> Iterator[Metric]:
        usage = novu_usage()
        if usage is None:
            return
        yield CounterMetricFamily(
            "xnovu_novu_tokens",
            "Novu Events rate-limit tokens charged for deliveries (1 a trigger, 100 a bulk).",
            value=usage.tokens,
        )
        yield CounterMetricFamily(
            "xnovu_novu_notifications_sent",
            "Notifications Novu accepted (SENT).",
            value=usage.sent,
        )
        if usage.tokens_per_notification is not None:
            yield GaugeMetricFamily(
                "xnovu_novu_tokens_per_notification",
                "Novu Events tokens per notification sent, since the counters began.",
                value=usage.tokens_per_notification,
            )


REGISTRY.register(NovuUsageCollector())

router = APIRouter(tags=["health"])


@router.get("/metrics", include_in_schema=False)
def metrics(_operator: OperatorDep) -> Response:
    """Request counts and latencies of this process, and the domain's series it counted (its
    Novu calls: shared/metrics.py), in Prometheus' text format (operator credential only)."""
    body = generate_latest(REGISTRY) + generate_latest(shared_metrics.REGISTRY)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


class MetricsMiddleware:
    """Counts every request under its route template (never the raw path: ids would explode
    the number of series)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            route = _route_template(scope)
            method = scope.get("method", "")
            REQUESTS.labels(method, route, str(status)).inc()
            LATENCY.labels(method, route).observe(time.perf_counter() - started)


def _route_template(scope: Scope) -> str:
    # The router records the matched route in the scope it was given.
    return str(getattr(scope.get("route"), "path", "unmatched"))
