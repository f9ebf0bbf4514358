"""Prometheus series of the worker and beat processes (docs/architecture.md, "Metrics").

The delivery engine, the Novu client, the reconciler and the status webhooks count into the
series below wherever they run. A worker serves them on WORKER_METRICS_PORT: its prefork
children each write theirs to files of their own (prometheus_client's multiprocess mode), and
the main process, which forks them, serves their sum (`serve_worker_metrics`). Beat serves the
backlog, read from the database at scrape time, on BEAT_METRICS_PORT (`serve_beat_metrics`).
An API process adds the same series to its own /metrics (a cancel calls Novu there).

The series are every enterprise's together, so they are the operator's: served on
METRICS_HOST, the loopback unless told otherwise, and no label names an enterprise. A workflow
label is the key of a static workflow (code-defined, so bounded) or DYNAMIC for any
enterprise's own workflow: those keys are chosen by tenants, unbounded in number.

Every series has labels, so that no value exists before a worker has chosen multiprocess mode
(values are made at the first `labels()`); the increments of the delivery path are summed per
sub-batch, one increment per distinct label set (`Outcomes`).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
import time
from bisect import bisect_left
from collections import Counter as Tally
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server, values
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector
from sqlalchemy import text

log = logging.getLogger(__name__)

# The workflow label of every enterprise's own (dynamic) workflow: no workflow key can be
# this (keys are lowercase letters, digits and `-`).
DYNAMIC = "(dynamic)"
# How long beat keeps a backlog reading: scrapes closer together than this (two Prometheus
# servers, a person's curl) cost one query.
BACKLOG_CACHE_SECONDS = 5.0
# A backlog query that takes longer is given up; the scrape answers without the backlog
# series and the error is counted (xnovu_backlog_read_errors).
BACKLOG_TIMEOUT_MS = 2000

# Registered here, so that the API and the tests can read them without multiprocess mode.
REGISTRY = CollectorRegistry(auto_describe=True)

DELIVERIES = Counter(
    "xnovu_deliveries",
    "Delivery attempts recorded, by outcome (sent, failed, retry: attempt used and retried, "
    "given_back: attempt not used, lost_race: the lease had run out) and workflow.",
    ["outcome", "workflow"],
    registry=REGISTRY,
)
CHANNEL_DELIVERIES = Counter(
    "xnovu_delivery_channels",
    "Channels of the notifications sent or failed, by outcome and channel (a notification "
    "counts once for each channel of its workflow).",
    ["outcome", "channel"],
    registry=REGISTRY,
)
RETRIES = Counter(
    "xnovu_delivery_retries",
    "Notifications put back to PENDING for another go, by reason (the error code: "
    "novu_unavailable, novu_rate_limited, novu_workflow_not_synced, render_deferred, "
    "lease_expired).",
    ["reason"],
    registry=REGISTRY,
)
TRIGGER_TO_SENT = Histogram(
    "xnovu_trigger_to_sent_seconds",
    "From a notification's trigger (its scheduled time, when later) to Novu accepting it.",
    ["workflow"],
    buckets=(0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800),
    registry=REGISTRY,
)
NOVU_REQUESTS = Counter(
    "xnovu_novu_requests",
    "Calls to Novu's API by endpoint and HTTP status (no_answer: timeout or connection error).",
    ["endpoint", "status"],
    registry=REGISTRY,
)
NOVU_LATENCY = Histogram(
    "xnovu_novu_request_duration_seconds",
    "Latency of calls to Novu's API by endpoint, answered or not.",
    ["endpoint"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)
NOVU_TOKENS = Counter(
    "xnovu_novu_tokens_spent",
    "Novu Events rate-limit tokens the deliveries' calls cost (1 a trigger, 100 a bulk "
    "trigger, none for a 429), by endpoint.",
    ["endpoint"],
    registry=REGISTRY,
)
RECONCILER = Counter(
    "xnovu_reconciler_rows",
    "Rows beat's maintenance moved, by action: lease_expired (back to PENDING), lease_failed "
    "(FAILED on its last attempt), republished (stale PENDING published again), released "
    "(due rows published).",
    ["action"],
    registry=REGISTRY,
)
STATUS_WEBHOOKS = Counter(
    "xnovu_status_webhooks",
    "Status webhook messages handled, by outcome (delivered, retrying, failed: retries used "
    "up, handed_back: not attempted, due again later).",
    ["outcome"],
    registry=REGISTRY,
)
RULE_FIRES = Counter(
    "xnovu_rule_fires",
    "Fire times of scheduled rules the rules tick handled, by outcome: fired (a notification "
    "created), failed (the fire's checks refused it: the rule's last_error says why), skipped "
    "(missed by over a minute with RULES_MISFIRE=skip).",
    ["outcome"],
    registry=REGISTRY,
)

_KNOWN_LABELS: tuple[tuple[Counter, tuple[str, ...]], ...] = (
    (RECONCILER, ("lease_expired", "lease_failed", "republished", "released")),
    (RULE_FIRES, ("fired", "failed", "skipped")),
    (STATUS_WEBHOOKS, ("delivered", "retrying", "failed", "handed_back")),
    (
        RETRIES,
        (
            "novu_unavailable",
            "novu_rate_limited",
            "novu_workflow_not_synced",
            "render_deferred",
            "lease_expired",
        ),
    ),
)


def workflow_label(key: str, static: bool) -> str:
    """The workflow label of a key: itself for a static workflow, else DYNAMIC."""
    return key if static else DYNAMIC


# -- the delivery path: one increment per label set and sub-batch ------------------------------


class Outcomes:
    """A sub-batch's recorded outcomes, summed in memory and then counted with one increment
    per label set (`record`): a prefork child's increment is a write to its file under a lock,
    a few microseconds, and a sub-batch holds up to a hundred rows."""

    def __init__(self) -> None:
        self.outcomes: Tally[tuple[str, str]] = Tally()
        self.channels: dict[str, tuple[str, ...]] = {}
        self.reasons: Tally[str] = Tally()
        self.since_due: dict[str, list[float]] = {}

    def add(
        self,
        outcome: str,
        workflow: str,
        channels: tuple[str, ...],
        reason: str | None = None,
        since_due: float | None = None,
    ) -> None:
        """One recorded outcome: sent, failed, retry (attempt used), given_back (attempt not
        used) or lost_race (the lease had run out); `reason` is a put-back's error code,
        `since_due` a SENT row's seconds from its trigger (or schedule)."""
        self.outcomes[(outcome, workflow)] += 1
        self.channels[workflow] = channels
        if reason is not None:
            self.reasons[reason] += 1
        if since_due is not None:
            self.since_due.setdefault(workflow, []).append(since_due)

    def record(self) -> None:
        """Count them."""
        channels: Tally[tuple[str, str]] = Tally()
        for (outcome, workflow), count in self.outcomes.items():
            DELIVERIES.labels(outcome, workflow).inc(count)
            if outcome in ("sent", "failed"):
                for channel in self.channels[workflow]:
                    channels[(outcome, channel)] += count
        for (outcome, channel), count in channels.items():
            CHANNEL_DELIVERIES.labels(outcome, channel).inc(count)
        record_retries(self.reasons)
        for workflow, observed in self.since_due.items():
            observe_many(TRIGGER_TO_SENT.labels(workflow), observed)


def observe_many(histogram: Histogram, observed: list[float]) -> None:
    """`histogram.observe` of each value, with one increment per bucket they fall in and one of
    the sum. prometheus_client's observe adds 1 to the first bucket whose bound is at least the
    value (collect() cumulates them) and the value to the sum: this leans on those internals,
    pinned by the lock files and compared with observe() by tests/shared/test_metrics.py."""
    bounds: list[float] = histogram._upper_bounds
    buckets: list[Any] = histogram._buckets
    for index, count in Tally(bisect_left(bounds, value) for value in observed).items():
        buckets[index].inc(count)
    histogram._sum.inc(sum(observed))


def record_retries(reasons: Tally[str]) -> None:
    """Count notifications put back to PENDING, by reason."""
    for reason, count in reasons.items():
        if count:
            RETRIES.labels(reason).inc(count)


def novu_endpoint(method: str, path: str) -> str:
    """The endpoint label of a Novu call (never its path: a cancel's names a transaction)."""
    if path.startswith("/v1/events/trigger/bulk"):
        return "trigger_bulk"
    if path.startswith("/v1/events/trigger"):
        return "cancel" if method == "DELETE" else "trigger"
    if path.startswith("/v1/bridge/sync"):
        return "bridge_sync"
    return "other"


def record_novu_call(endpoint: str, status: int | None, seconds: float) -> None:
    """Count one call to Novu and its latency."""
    NOVU_REQUESTS.labels(endpoint, "no_answer" if status is None else str(status)).inc()
    NOVU_LATENCY.labels(endpoint).observe(seconds)


# -- the worker: multiprocess mode and its endpoint ---------------------------------------------


def serve_worker_metrics(host: str, port: int) -> Path:
    """In a worker's main process, before it forks its children: switch prometheus_client to
    multiprocess mode in an emptied directory (PROMETHEUS_MULTIPROC_DIR when set, else a new
    temporary one), and serve every process's sum on `host:port`; returns the directory."""
    configured = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if configured:
        directory = Path(configured)
        directory.mkdir(parents=True, exist_ok=True)
        # Files of an earlier run would add its counts to this one's.
        for stale in directory.glob("*.db"):
            stale.unlink()
    else:
        directory = Path(tempfile.mkdtemp(prefix="xnovu-worker-metrics-"))
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
    # prometheus_client chose its value class when it was imported; the series here have made
    # no value yet (all are labelled), so from now on every value is a file of this process or
    # of the child it is made in.
    values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]
    for counter, labels in _KNOWN_LABELS:
        for label in labels:
            counter.labels(label)  # the series exist, at 0, before anything happens
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(directory))  # type: ignore[no-untyped-call]
    start_http_server(port, addr=host, registry=registry)
    return directory


def child_exited(pid: int) -> None:
    """A worker child is going away: prometheus_client drops its live gauges (there are none
    here; its counters and histograms stay in the sum, as counters must)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        mark_process_dead(pid)  # type: ignore[no-untyped-call]


def remove_directory(directory: Path) -> None:
    """At a worker's shutdown, its metrics directory (when it made one)."""
    shutil.rmtree(directory, ignore_errors=True)


# -- beat: the backlog --------------------------------------------------------------------------

# Each part reads only the rows of its status through migration 0001's partial indexes
# (ix_ent_notification_pending_enqueued, ix_ent_notification_processing_lease): its cost grows
# with the PENDING and PROCESSING rows, never with the finished ones. The oldest due PENDING
# row is the one waiting longest since it became due (triggered, scheduled or its retry's
# time): a row scheduled for later or backing off is not late.
_BACKLOG = text(
    """
    SELECT
        (SELECT count(*) FROM notify.ent_notification
         WHERE notification_status = 'PENDING') AS pending,
        (SELECT count(*) FROM notify.ent_notification
         WHERE notification_status = 'PROCESSING') AS processing,
        (SELECT extract(epoch FROM now() - min(due))
         FROM (SELECT greatest(created_at, scheduled_for, next_attempt_at) AS due
               FROM notify.ent_notification
               WHERE notification_status = 'PENDING') AS p
         WHERE due <= now()) AS oldest_due_age
    """
)


@dataclass(frozen=True, slots=True)
class Backlog:
    """The notifications waiting, at one moment."""

    pending: int
    processing: int
    oldest_due_pending_seconds: float  # 0 when none is due


def read_backlog() -> Backlog:
    """The backlog now: one statement, in a system transaction (every enterprise)."""
    from shared.db.session import transaction

    with transaction() as session:
        session.execute(text(f"SET LOCAL statement_timeout = {BACKLOG_TIMEOUT_MS}"))
        pending, processing, oldest = session.execute(_BACKLOG).one()
    return Backlog(int(pending), int(processing), max(0.0, float(oldest or 0.0)))


class BacklogCollector(Collector):
    """The backlog at scrape time, read at most every BACKLOG_CACHE_SECONDS."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._read_at = 0.0
        self._backlog: Backlog | None = None
        self._errors = 0

    def collect(self) -> Iterator[Metric]:
        backlog = self._current()
        yield CounterMetricFamily(
            "xnovu_backlog_read_errors",
            "Backlog readings that failed since beat started (the database was unreachable or "
            "slower than 2 s): the backlog series are left out of that scrape.",
            value=self._errors,
        )
        if backlog is None:
            return
        counts = GaugeMetricFamily(
            "xnovu_notifications_backlog",
            "Notifications PENDING (due or not) and PROCESSING, every enterprise's.",
            labels=["status"],
        )
        counts.add_metric(["PENDING"], backlog.pending)
        counts.add_metric(["PROCESSING"], backlog.processing)
        yield counts
        yield GaugeMetricFamily(
            "xnovu_oldest_due_pending_seconds",
            "How long the PENDING notification due the longest has waited since it became due "
            "(0 when none is due).",
            value=backlog.oldest_due_pending_seconds,
        )

    def _current(self) -> Backlog | None:
        with self._lock:
            if self._backlog is None or time.monotonic() - self._read_at >= BACKLOG_CACHE_SECONDS:
                try:
                    self._backlog = read_backlog()
                except Exception as exc:  # the scrape still answers, without the backlog
                    self._errors += 1
                    self._backlog = None
                    log.warning("could not read the backlog for metrics: %s", exc)
                self._read_at = time.monotonic()
            return self._backlog


class HeartbeatCollector(Collector):
    """How long ago the active beat ticked (its heartbeat in Redis, shared/heartbeat.py): a
    standby beat reports the active one's."""

    def collect(self) -> Iterator[Metric]:
        from shared.heartbeat import read_beat
        from shared.settings import get_settings

        state = read_beat(get_settings().require_redis_url())
        if state.age is not None:
            yield GaugeMetricFamily(
                "xnovu_beat_heartbeat_age_seconds",
                "Seconds since beat last wrote its heartbeat to Redis.",
                value=state.age,
            )


def beat_registry() -> CollectorRegistry:
    """What beat serves: the backlog and the heartbeat."""
    registry = CollectorRegistry()
    registry.register(BacklogCollector())
    registry.register(HeartbeatCollector())
    return registry


def serve_beat_metrics(host: str, port: int) -> None:
    """In beat's process: serve the backlog and the heartbeat on `host:port`."""
    start_http_server(port, addr=host, registry=beat_registry())


def metric_names(registry: CollectorRegistry) -> set[str]:
    """The sample names a registry exports (for the dashboard's and alerts' check)."""
    return {sample.name for family in registry.collect() for sample in family.samples}
